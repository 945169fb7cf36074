"""Cheating on the proof itself: requirements R and the accuracy rule.

Each test builds (W, P) the way a cheater would, signs a well-formed header with
its own key (so every header rule passes) and checks the exact rule that stops
it. Rules run in the order of consensus.validation.validate_proof:
requirements -> accuracy claims -> improvement -> no regression.
"""
from __future__ import annotations

import torch

from consensus import errors
from consensus.model import genesis_model
from consensus.requirements import derive_requirements
from consensus.training import genesis_state
from consensus.weights import clone_state

from .conftest import snapshot
from .forge import HONEST_KEY, THIEF_KEY, encode, signed


def _tip(chain):
    return chain.tip().header


# -- requirements R ----------------------------------------------------------------
def test_zero_gradient_step_changes_no_weight(chain, honest, forge, attack):
    """A dead network (BN gamma 0, beta < 0: every ReLU off) with saturated biases: the step
    changes no learnable weight at all, so every requirement sees a zero change. The paper's
    >=/<= comparison would accept it for any R; here zero is a failure."""
    tip = _tip(chain)
    w = clone_state(honest.tip_model)
    for name in w:
        if name.startswith("bn") and name.endswith(".weight"):
            w[name].zero_()
        elif name.startswith("bn") and name.endswith(".bias"):
            w[name].fill_(-1.0)
    w["linear.bias"].fill_(1e8)      # |lr * g| <= 0.01 is far below ulp(1e8) = 8
    batch = forge.random_batch()
    w_after = forge.step(w, batch)
    for name, _ in forge.replayer.model.named_parameters():
        assert torch.equal(w_after[name], w[name]), f"{name} changed"
    attack(forge.header(tip, w, batch), encode(w), "requirements-not-met", errors.InvalidBlock)


def test_dead_channels_under_every_required_weight(chain, honest, forge, attack):
    """Targeted version: kill exactly the channels that feed the k required weights of the
    tip's R (a cheater who wants R "for free" from zero gradients)."""
    tip = _tip(chain)
    w = clone_state(honest.tip_model)
    reqs = derive_requirements(tip.hash, tip.difficulty, forge.replayer.index.total)
    for r in reqs:
        name, off = forge.param_of_index(r.index)
        shape = w[name].shape
        coord = [int(c) for c in torch.unravel_index(torch.tensor(off), shape)]
        if name == "linear.bias":
            w[name][coord[0]] = 1e8                  # saturated: the update rounds away
            continue
        if name == "linear.weight":
            layer, channel = "3", coord[1]          # its input feature = channel of stage 3
        else:                                       # convN.weight / bnN.weight / bnN.bias
            layer, channel = name.split(".")[0][-1], coord[0]
        w[f"bn{layer}.weight"][channel] = 0.0
        w[f"bn{layer}.bias"][channel] = -1.0
    batch = forge.random_batch()
    forge.replayer.load(w)
    before = forge.replayer.index.gather(reqs)
    forge.replayer.step(batch)
    assert torch.equal(forge.replayer.index.gather(reqs), before), "a required weight still moved"
    attack(forge.header(tip, w, batch), encode(w), "requirements-not-met", errors.InvalidBlock)


def test_old_proof_replayed_onto_new_parent(chain, honest, forge, attack):
    """Each honest block's (W, P) met R of *its* parent. Re-parented onto the tip (re-signed,
    new height and time), R comes from the tip's hash and the step no longer meets it."""
    tip = _tip(chain)
    tried = 0
    for old in honest.blocks[:-1]:
        w, batch = old.w, old.header.batch
        if forge.requirements_hold(tip.hash, tip.difficulty, w, batch):
            continue  # chance 2^-k per proof: that would be a legitimate lucky find, not a replay
        attack(forge.header(tip, w, batch), old.body, "requirements-not-met", errors.InvalidBlock)
        tried += 1
    assert tried >= len(honest.blocks) - 3


def test_fresh_proof_moved_to_sibling_parent(chain, honest, forge, attack):
    """The next block's proof (valid on the tip) claimed as a child of the tip's parent: a fork
    that reuses work done for another parent's R."""
    tip = _tip(chain)
    parent = honest.blocks[-2].header
    nxt = honest.next
    assert not forge.requirements_hold(parent.hash, parent.difficulty, nxt.w, nxt.header.batch)
    h = forge.header(parent, nxt.w, nxt.header.batch, timestamp_ms=tip.timestamp_ms + 1)
    attack(h, nxt.body, "requirements-not-met", errors.InvalidBlock)


# -- accuracy rule -------------------------------------------------------------------
def test_unrelated_weights_meeting_r_regress(chain, honest, forge, attack):
    """A model unrelated to the chain (fresh init under another seed, trained by the cheater only
    until R holds and its own step improves) is far below the learned chain: accuracy-regressed."""
    tip = _tip(chain)
    floor = tip.acc_after - chain.spec.evaluation.regression_tolerance
    w0 = clone_state(genesis_model("tiny-cnn", 12345).state_dict())
    proof = forge.search(tip.hash, tip.difficulty, w0,
                         lambda b, a: b.correct < a.correct < floor, seed=4)
    h = forge.header(tip, proof.w, proof.batch, acc=(proof.before.correct, proof.after.correct))
    attack(h, encode(proof.w), "accuracy-regressed", errors.InvalidBlock)


def test_reset_to_genesis_weights_regress(chain, honest, forge, attack):
    """Restarting from the genesis weights (throwing the chain's training away) is cheaper for
    nobody and worse for everyone: accuracy-regressed once the chain has learned."""
    tip = _tip(chain)
    assert tip.acc_after - honest.blocks[0].header.acc_before > 2 * chain.spec.evaluation.regression_tolerance
    floor = tip.acc_after - chain.spec.evaluation.regression_tolerance
    proof = forge.search(tip.hash, tip.difficulty, genesis_state(chain.spec),
                         lambda b, a: b.correct < a.correct < floor, seed=5)
    h = forge.header(tip, proof.w, proof.batch, acc=(proof.before.correct, proof.after.correct))
    attack(h, encode(proof.w), "accuracy-regressed", errors.InvalidBlock)


def test_step_that_lowers_accuracy(chain, honest, forge, attack):
    """R holds but the step makes the model worse on E: accuracy-not-improved."""
    tip = _tip(chain)
    proof = forge.search(tip.hash, tip.difficulty, honest.tip_model, lambda b, a: a.correct < b.correct, seed=3)
    h = forge.header(tip, proof.w, proof.batch, acc=(proof.before.correct, proof.after.correct))
    attack(h, encode(proof.w), "accuracy-not-improved", errors.InvalidBlock)


def test_perturbation_search_keeping_accuracy_equal(chain, honest, forge, attack):
    """No training: random small perturbations of the chain's model until one step meets R.
    The step found leaves accuracy unchanged: accuracy-not-improved."""
    tip = _tip(chain)
    proof = forge.search(tip.hash, tip.difficulty, honest.tip_model, lambda b, a: a.correct == b.correct,
                         perturb=3e-3, seed=1, max_attempts=8000)
    h = forge.header(tip, proof.w, proof.batch, acc=(proof.before.correct, proof.after.correct))
    attack(h, encode(proof.w), "accuracy-not-improved", errors.InvalidBlock)


def test_inflated_accuracy_claim(chain, honest, attack):
    """The miner's own valid proof with acc_after inflated beyond the claim tolerance (to raise
    the regression floor for competitors): bad-accuracy-claim."""
    nxt = honest.next.header
    tol = chain.spec.evaluation.claim_tolerance
    attack(signed(nxt, HONEST_KEY, acc_after=nxt.acc_after + tol + 1), honest.next.body,
           "bad-accuracy-claim", errors.InvalidBlock)
    attack(signed(nxt, HONEST_KEY, acc_before=max(0, nxt.acc_before - tol - 1)), honest.next.body,
           "bad-accuracy-claim", errors.InvalidBlock)


def test_honest_next_block_still_accepted_after_attacks(chain, honest, forge):
    """Sanity: after a rejected cheat the honest block on the same parent is accepted."""
    tip = _tip(chain)
    w = clone_state(honest.tip_model)
    chain.submit(forge.header(tip, w, forge.random_batch(), key=THIEF_KEY), [], encode(w), None)
    before = snapshot(chain)
    out = chain.submit(honest.next.header, [], honest.next.body, None)
    assert out.status == "accepted" and out.new_tip
    assert chain.tip().hash == honest.next.header.hash != before.tip


# -- a documented limit of DGG (docs/security.md, "Cheaper than training") -----------------------------
def test_limit_label_aware_batches_meet_last_layer_requirements(honest, forge, dataset):
    """LIMITATION, not a rejection: R fixes signs, and a miner who reads labels can choose P so
    some signs are certain. For a "decrease" requirement on linear.weight[j, c], a batch with no
    sample of class j has gradient mean(p_j * feat_c) >= 0 (softmax > 0, ReLU features >= 0), so
    the weight goes down: the requirement holds almost surely instead of by chance. Each such
    requirement costs the cheater no search at all."""
    from consensus.requirements import DECREASE, Requirement, requirements_hold
    r = forge.replayer
    names = forge.learnable_names()
    start = r.index.starts[names.index("linear.weight")]
    rows, cols = honest.tip_model["linear.weight"].shape
    labels = dataset.train_y.tolist()
    rng = forge.rng.__class__(5)
    by_chance = chosen = 0
    trials = 40
    for _ in range(trials):
        j, c = rng.randrange(rows), rng.randrange(cols)
        req = (Requirement(start + j * cols + c, DECREASE),)
        for batch, is_chosen in ((tuple(rng.sample(range(len(labels)), 4)), False),
                                 (tuple(rng.sample([i for i, y in enumerate(labels) if y != j], 4)), True)):
            r.load(honest.tip_model)
            before = r.index.gather(req)
            r.step(batch)
            ok = requirements_hold(before, r.index.gather(req), req)
            chosen += ok and is_chosen
            by_chance += ok and not is_chosen
    assert chosen >= 0.9 * trials and chosen >= by_chance + 0.15 * trials, (chosen, by_chance)
