"""Every reason code consensus.validation raises, each from a block that breaks exactly that rule.

The blocks are real: a block mined with the reference miner (real training
steps), real safetensors bodies, real Ed25519 signatures. A header edited for
a test is signed again, so the signature rule passes and the rule under test is
the first to fail. Each test asserts the exact exception class, its ``.code``
and its outcome family (Ignored / BadBody / InvalidBlock).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from consensus import errors
from consensus.block import BlockHeader, genesis_header, parse_records, records_root
from consensus.certificates import make_certificate
from consensus.hashing import ZERO_HASH, sha256_hex
from consensus.requirements import derive_requirements, requirements_hold
from consensus.training import Accuracy, genesis_state
from consensus.validation import (check_accuracy_claims, miner_accuracy_ok, validate_header,
                                  validate_records, ProofResult)
from consensus.weights import clone_state, encode_state, weights_hash

from ..conftest import BLOCK_GAP_MS, MemoryView
from .util import find_trial, resign, validate_block

IGNORED, BAD_BODY, INVALID = errors.Ignored, errors.BadBody, errors.InvalidBlock
TESTED: set[str] = set()      # reason codes exercised below (checked by test_every_code_is_tested)


def expect(cls: type[errors.BlockError], family: type[errors.BlockError], fn, *args):
    """``fn(*args)`` raises exactly ``cls``, whose code and family are as wanted."""
    TESTED.add(cls.code)
    with pytest.raises(errors.BlockError) as info:
        fn(*args)
    exc = info.value
    assert type(exc) is cls, f"wanted {cls.__name__}, got {type(exc).__name__}: {exc}"
    assert exc.code == cls.code
    assert isinstance(exc, family)
    for other in {IGNORED, BAD_BODY, INVALID} - {family}:
        assert not isinstance(exc, other)
    return exc


class Ctx:
    """The tiny chain at height 1: genesis, one valid mined block, and how to validate."""

    def __init__(self, spec, dataset, genesis, block, replayer, key, other_key):
        self.spec, self.dataset, self.genesis, self.block = spec, dataset, genesis, block
        self.header, self.body = block.header, block.body
        self.view = MemoryView([genesis])
        self.now = genesis.timestamp_ms + 10_000
        self.template = genesis_state(spec)
        self.r = replayer(spec)
        self.key, self.other_key = key, other_key

    def validate(self, header=None, body=None, records=None, view=None, now=None, spec=None):
        return validate_block(spec or self.spec, header or self.header, self.body if body is None else body,
                              [] if records is None else records, view or self.view, self.r,
                              self.now if now is None else now, self.template)

    def resign(self, **changes) -> BlockHeader:
        return resign(self.header, self.key, **changes)


@pytest.fixture(scope="module")
def ctx(tiny_spec, tiny_dataset, tiny_genesis, tiny_block, replayer, miner_key, other_key) -> Ctx:
    return Ctx(tiny_spec, tiny_dataset, tiny_genesis, tiny_block, replayer, miner_key, other_key)


def certificate(key, n: int = 0, **meta):
    return make_certificate(key, sha256_hex(f"model {n}".encode()), sha256_hex(f"proof {n}".encode()),
                            dict(meta), 1_790_000_000_000 + n)


# == the valid block ==============================================================
def test_valid_block_is_accepted(ctx):
    h = ctx.header
    assert h.height == 1 and h.parent == ctx.genesis.hash and h.difficulty == ctx.spec.difficulty.initial == 8
    assert h.signature_valid()
    result = ctx.validate()
    tol = ctx.spec.evaluation.claim_tolerance
    assert abs(result.before.correct - h.acc_before) <= tol and abs(result.after.correct - h.acc_after) <= tol
    assert result.after.correct > result.before.correct
    # replaying the step gives the miner's W' bit for bit
    assert weights_hash(ctx.r.update(ctx.block.w, h.batch)) == weights_hash(ctx.block.w_after)


def test_valid_block_with_records_is_accepted(ctx):
    recs = (certificate(ctx.other_key, 1), certificate(ctx.other_key, 2, note="x"))
    header = ctx.resign(records_root=records_root(list(recs)))
    ctx.validate(header, records=[r.body for r in recs])


def test_boundaries_that_still_pass(ctx):
    """The edges of the time and claim rules are inclusive where the spec says so."""
    tol, d = ctx.spec.evaluation.claim_tolerance, ctx.spec.time
    # exactly max_future ahead of the local clock: accepted
    h = ctx.resign(timestamp_ms=ctx.now + d.max_future_ms)
    validate_header(h, ctx.spec, ctx.view, ctx.now)
    # one ms after the median time past: accepted
    h = ctx.resign(timestamp_ms=ctx.genesis.timestamp_ms + 1)
    validate_header(h, ctx.spec, ctx.view, ctx.now)
    # claims off by exactly the tolerance: accepted
    ctx.validate(ctx.resign(acc_after=ctx.header.acc_after + tol, acc_before=max(0, ctx.header.acc_before - tol)))


# == header syntax and limits =========================================================
def test_bad_version(ctx):
    expect(errors.BadVersion, INVALID, ctx.validate, ctx.resign(version=ctx.spec.header_version + 1))


def test_bad_chain_id(ctx):
    other = sha256_hex(b"another chain")
    expect(errors.BadChainId, INVALID, ctx.validate, ctx.resign(chain_id=other))


def test_malformed_oversized_header(ctx):
    big = tuple(range(1 << 62, (1 << 62) + 1000))
    expect(errors.Malformed, INVALID, ctx.validate, ctx.resign(batch=big))


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("acc_after"),
    lambda d: d.update(extra=1),
    lambda d: d.update(height=1.0),
    lambda d: d.update(height=True),
    lambda d: d.update(height=-1),
    lambda d: d.update(timestamp_ms=1 << 63),
    lambda d: d.update(parent=d["parent"].upper()),
    lambda d: d.update(weights_hash=d["weights_hash"][:-2]),
    lambda d: d.update(batch="0,1,2,3"),
    lambda d: d.update(batch=[0, 1, 2, "3"]),
    lambda d: d.update(miner=None),
], ids=["missing", "unknown-field", "float", "bool", "negative", "too-big", "upper-hex", "short-hash",
        "batch-str", "batch-item-str", "miner-none"])
def test_malformed_header_json(ctx, mutate):
    d = ctx.header.to_dict()
    mutate(d)
    expect(errors.Malformed, INVALID, BlockHeader.from_dict, d)


def test_malformed_not_json(ctx):
    expect(errors.Malformed, INVALID, BlockHeader.from_json, b"{not json")
    expect(errors.Malformed, INVALID, BlockHeader.from_json, b"[1, 2]")


def test_malformed_weights_layout(ctx):
    """A header that commits (by hash) to weights that do not fit the architecture is invalid."""
    w = clone_state(ctx.block.w)
    w["extra.weight"] = torch.zeros(3)
    header = ctx.resign(weights_hash=weights_hash(w))
    expect(errors.Malformed, INVALID, ctx.validate, header, encode_state(w))
    w = clone_state(ctx.block.w)
    w["linear.bias"] = torch.zeros(11)
    expect(errors.Malformed, INVALID, ctx.validate, ctx.resign(weights_hash=weights_hash(w)), encode_state(w))


@pytest.mark.parametrize("height", [0, 2, 5])
def test_bad_height(ctx, height):
    expect(errors.BadHeight, INVALID, ctx.validate, ctx.resign(height=height))


@pytest.mark.parametrize("k", [0, 41])
def test_bad_difficulty_out_of_range(ctx, k):
    expect(errors.BadDifficulty, INVALID, ctx.validate, ctx.resign(difficulty=k))


@pytest.mark.parametrize("k", [7, 9])
def test_bad_difficulty_not_retarget_value(ctx, k):
    expect(errors.BadDifficulty, INVALID, ctx.validate, ctx.resign(difficulty=k))


def test_bad_accuracy_claim_out_of_range(ctx):
    m = ctx.spec.evaluation.size
    expect(errors.BadAccuracyClaim, INVALID, ctx.validate, ctx.resign(acc_after=m + 1))
    expect(errors.BadAccuracyClaim, INVALID, ctx.validate, ctx.resign(acc_before=m + 1))


@pytest.mark.parametrize("batch", [(1, 2, 3), (1, 2, 3, 4, 5), (1, 1, 2, 3), (0, 1, 2, 10_000), ()],
                         ids=["short", "long", "repeat", "out-of-range", "empty"])
def test_bad_batch_indices(ctx, batch):
    expect(errors.BadBatchIndices, INVALID, ctx.validate, ctx.resign(batch=batch))


# == signature ===================================================================
def test_bad_signature_flipped_bit(ctx):
    sig = bytearray(bytes.fromhex(ctx.header.signature))
    sig[5] ^= 1
    expect(errors.BadSignature, INVALID, ctx.validate, replace(ctx.header, signature=sig.hex()))


def test_bad_signature_other_key(ctx):
    """Signed by another key while the miner field names the original one."""
    forged = replace(ctx.header, signature=ctx.other_key.sign(ctx.header.signing_bytes()).hex())
    expect(errors.BadSignature, INVALID, ctx.validate, forged)


def test_bad_signature_edited_field(ctx):
    """Any edit after signing (here the claims, which no earlier rule checks) breaks the signature."""
    expect(errors.BadSignature, INVALID, ctx.validate, replace(ctx.header, acc_after=ctx.header.acc_after - 1))


@pytest.mark.parametrize("field,value", [("miner", "ab" * 31), ("signature", "cd" * 63), ("miner", "")])
def test_bad_signature_lengths(ctx, field, value):
    expect(errors.BadSignature, INVALID, ctx.validate, replace(ctx.header, **{field: value}))


def test_signature_hex_is_not_malleable(ctx):
    """Upper-case hex decodes to the same signature bytes; accepting it would let anyone relaying
    a block give it a second valid hash (the block hash covers the signature field's text)."""
    upper = replace(ctx.header, signature=ctx.header.signature.upper())
    assert upper.hash != ctx.header.hash
    expect(errors.BadSignature, INVALID, ctx.validate, upper)
    d = ctx.header.to_dict()
    d["miner"] = d["miner"].upper()
    with pytest.raises(errors.InvalidBlock):
        ctx.validate(BlockHeader.from_dict(d))


# == time ========================================================================
def test_time_too_new_is_ignored(ctx):
    h = ctx.resign(timestamp_ms=ctx.now + ctx.spec.time.max_future_ms + 1)
    expect(errors.TimeTooNew, IGNORED, ctx.validate, h)
    # the same block is fine once the local clock has caught up
    validate_header(h, ctx.spec, ctx.view, ctx.now + 1)


@pytest.mark.parametrize("delta", [0, -1, -10_000])
def test_time_too_old(ctx, delta):
    h = ctx.resign(timestamp_ms=ctx.genesis.timestamp_ms + delta)
    expect(errors.TimeTooOld, INVALID, ctx.validate, h)


# == context ======================================================================
def test_unknown_parent_is_ignored(ctx):
    h = ctx.resign(parent=sha256_hex(b"a block nobody has seen"))
    expect(errors.UnknownParent, IGNORED, ctx.validate, h)


def test_bad_parent(ctx):
    """A child of a block known to be invalid is invalid (before any other context rule)."""
    bad = ctx.resign(acc_after=ctx.spec.evaluation.size)      # some block, marked invalid below
    view = MemoryView([ctx.genesis, bad], invalid=[bad.hash])
    child = ctx.resign(parent=bad.hash, height=2, timestamp_ms=bad.timestamp_ms + BLOCK_GAP_MS)
    expect(errors.BadParent, INVALID, ctx.validate, child, None, None, view)
    # and the same parent, not marked, gives the child a chance (it fails later, on its proof)
    with pytest.raises(errors.InvalidBlock) as info:
        ctx.validate(child, view=MemoryView([ctx.genesis, bad]))
    assert info.value.code != "bad-parent"


# == body: weights ==================================================================
def test_weights_mismatch_is_bad_body(ctx, tiny_genesis_state):
    other = encode_state(tiny_genesis_state)     # valid safetensors, another hash
    expect(errors.WeightsMismatch, BAD_BODY, ctx.validate, None, other)


@pytest.mark.parametrize("make", [
    lambda body, spec: b"",
    lambda body, spec: b"garbage!" * 10,
    lambda body, spec: body[:-7],
    lambda body, spec: b"\x00" * (spec.limits.max_weights_bytes + 1),
], ids=["empty", "garbage", "truncated", "oversized"])
def test_malformed_weights_is_bad_body(ctx, make):
    expect(errors.MalformedWeights, BAD_BODY, ctx.validate, None, make(ctx.body, ctx.spec))


def test_non_finite_weights(ctx):
    for bad in (float("nan"), float("inf"), float("-inf")):
        w = clone_state(ctx.block.w)
        w["conv2.weight"].view(-1)[17] = bad
        header = ctx.resign(weights_hash=weights_hash(w))
        expect(errors.NonFiniteWeights, INVALID, ctx.validate, header, encode_state(w))


def test_body_errors_leave_header_valid(ctx, tiny_genesis_state):
    """After a bad body, the genuine body still validates: the header was never judged."""
    with pytest.raises(errors.BadBody):
        ctx.validate(body=encode_state(tiny_genesis_state))
    ctx.validate()


# == body: records =================================================================
def test_records_mismatch_is_bad_body(ctx):
    recs = [certificate(ctx.other_key, 1)]
    header = ctx.resign(records_root=records_root(recs))
    expect(errors.RecordsMismatch, BAD_BODY, ctx.validate, header, None, [])
    expect(errors.RecordsMismatch, BAD_BODY, ctx.validate, header, None, [certificate(ctx.other_key, 2).body])
    expect(errors.RecordsMismatch, BAD_BODY, ctx.validate, None, None, [recs[0].body])


def test_bad_record_duplicate(ctx):
    rec = certificate(ctx.other_key, 1)
    header = ctx.resign(records_root=records_root([rec, rec]))
    expect(errors.BadRecord, INVALID, ctx.validate, header, None, [rec.body, rec.body])


def test_bad_record_too_many(ctx):
    n = ctx.spec.limits.max_records + 1
    recs = [certificate(ctx.other_key, i) for i in range(n)]
    header = ctx.resign(records_root=records_root(recs))
    expect(errors.BadRecord, INVALID, ctx.validate, header, None, [r.body for r in recs])


def test_bad_record_too_large(ctx):
    rec = certificate(ctx.other_key, 1, **{f"k{i:02d}" + "x" * 60: "v" * 256 for i in range(16)})
    assert len(rec.encode()) > ctx.spec.limits.max_record_bytes
    header = ctx.resign(records_root=records_root([rec]))
    expect(errors.BadRecord, INVALID, ctx.validate, header, None, [rec.body])


def test_bad_record_type_not_enabled(ctx):
    spec = dataclasses.replace(ctx.spec, record_types=())
    rec = certificate(ctx.other_key, 1)
    header = ctx.resign(records_root=records_root([rec]))
    expect(errors.BadRecord, INVALID, validate_records, header, [rec], spec)


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(type="no-such-type"),
    lambda d: d.pop("type"),
    lambda d: d.update(model_hash="00" * 31),
    lambda d: d.update(signature="00" * 64),
    lambda d: d.update(metadata={"a": 1}),
    lambda d: d.update(score=0.5),
], ids=["unknown-type", "no-type", "short-hash", "bad-signature", "metadata-int", "float"])
def test_bad_record_content(ctx, mutate):
    body = dict(certificate(ctx.other_key, 1).body)
    mutate(body)
    expect(errors.BadRecord, INVALID, parse_records, [body])


def test_bad_record_not_a_list(ctx):
    expect(errors.BadRecord, INVALID, parse_records, {"type": "model-certificate"})


@pytest.mark.parametrize("junk", [{"type": "model-certificate"}, [{"type": "no-such-type"}], [{"x": 0.5}], [[]]],
                         ids=["not-a-list", "unknown-type", "float", "not-an-object"])
def test_uncommitted_junk_records_are_a_bad_body(ctx, junk):
    """Records the header does not commit to say nothing about the header (a relay may have swapped them)."""
    expect(errors.RecordsMismatch, BAD_BODY, ctx.validate, None, None, junk)
    ctx.validate()                                       # the genuine (empty) records still validate


@pytest.mark.parametrize("item", [{"type": "no-such-type"}, {"type": "model-certificate"}, ["not", "an", "object"]],
                         ids=["unknown-type", "incomplete", "not-an-object"])
def test_committed_junk_records_make_the_block_invalid(ctx, item):
    from consensus.hashing import canonical_json, merkle_root
    header = ctx.resign(records_root=merkle_root([canonical_json(item)]))
    expect(errors.BadRecord, INVALID, ctx.validate, header, None, [item])


# == proof =======================================================================
def test_requirements_not_met(ctx, tiny_spec, tiny_genesis):
    """The same W with another batch: a real step whose changes miss R."""
    t = find_trial(tiny_spec, ctx.r, ctx.block.w, tiny_genesis.hash, ctx.header.difficulty,
                   lambda t: not t.r_holds, count=50, r_holds=False)
    header = ctx.resign(batch=t.batch, acc_before=t.before.correct, acc_after=t.after.correct)
    exc = expect(errors.RequirementsNotMet, INVALID, ctx.validate, header)
    assert re.search(r"requirement \d+ \(weight \d+, [+-]\) not met", str(exc))


def test_requirements_depend_on_the_parent(ctx, tiny_spec):
    """The valid (W, P) moved onto another parent faces other requirements and (almost surely) fails."""
    other_parent = resign(ctx.header, ctx.other_key)     # a distinct header at height 1 (another hash)
    view = MemoryView([ctx.genesis, other_parent])
    child = ctx.resign(parent=other_parent.hash, height=2, timestamp_ms=other_parent.timestamp_ms + BLOCK_GAP_MS)
    expect(errors.RequirementsNotMet, INVALID, ctx.validate, child, None, None, view)


def test_bad_accuracy_claim(ctx):
    tol = ctx.spec.evaluation.claim_tolerance
    h = ctx.header
    expect(errors.BadAccuracyClaim, INVALID, ctx.validate, ctx.resign(acc_after=h.acc_after + tol + 1))
    expect(errors.BadAccuracyClaim, INVALID, ctx.validate, ctx.resign(acc_before=h.acc_before + tol + 1))
    expect(errors.BadAccuracyClaim, INVALID, ctx.validate, ctx.resign(acc_after=0))


# -- the accuracy rule, on the k = 1 chain (R holds for about half of all steps) --------------
class LowK:
    def __init__(self, spec, dataset, replayer, key):
        self.spec = spec
        self.genesis = genesis_header(spec)
        self.w = genesis_state(spec)
        self.r = replayer(spec)
        self.key = key
        self.template = self.w
        self.now = self.genesis.timestamp_ms + 60_000

    def child(self, parent: BlockHeader, trial, **changes) -> BlockHeader:
        return BlockHeader(
            version=self.spec.header_version, chain_id=self.spec.chain_id, height=parent.height + 1,
            parent=parent.hash, timestamp_ms=parent.timestamp_ms + BLOCK_GAP_MS, difficulty=1, miner="",
            batch=trial.batch, weights_hash=weights_hash(self.w), acc_before=trial.before.correct,
            acc_after=trial.after.correct, records_root=ZERO_HASH, **changes).signed(self.key)

    def validate(self, header, view):
        return validate_block(self.spec, header, encode_state(self.w), [], view, self.r, self.now, self.template)


@pytest.fixture(scope="module")
def lowk(k1_spec, tiny_dataset, replayer, miner_key) -> LowK:
    return LowK(k1_spec, tiny_dataset, replayer, miner_key)


def test_accuracy_not_improved(lowk):
    """A step that meets R (validator rule) but does not raise acc(W') above acc(W)."""
    t = find_trial(lowk.spec, lowk.r, lowk.w, lowk.genesis.hash, 1,
                   lambda t: t.after.correct <= t.before.correct, r_holds=True)
    header = lowk.child(lowk.genesis, t)
    expect(errors.AccuracyNotImproved, INVALID, lowk.validate, header, MemoryView([lowk.genesis]))
    # an honest miner would not have published it
    assert not miner_accuracy_ok(t.before, t.after, lowk.genesis, lowk.spec)


def test_accuracy_improved_is_accepted(lowk):
    t = find_trial(lowk.spec, lowk.r, lowk.w, lowk.genesis.hash, 1,
                   lambda t: t.after.correct > t.before.correct, r_holds=True)
    lowk.validate(lowk.child(lowk.genesis, t), MemoryView([lowk.genesis]))


def _claiming_parent(lowk, acc_after: int, key) -> BlockHeader:
    """A height-1 header that claims ``acc_after`` for its model (known to the view, never replayed)."""
    return BlockHeader(
        version=lowk.spec.header_version, chain_id=lowk.spec.chain_id, height=1, parent=lowk.genesis.hash,
        timestamp_ms=lowk.genesis.timestamp_ms + BLOCK_GAP_MS, difficulty=1, miner="", batch=(0, 1, 2, 3),
        weights_hash=weights_hash(lowk.w), acc_before=0, acc_after=acc_after, records_root=ZERO_HASH,
    ).signed(key)


def test_accuracy_regressed(lowk, other_key):
    """An improving step whose model is far below the parent's claimed accuracy."""
    parent = _claiming_parent(lowk, lowk.spec.evaluation.size, other_key)
    t = find_trial(lowk.spec, lowk.r, lowk.w, parent.hash, 1,
                   lambda t: t.after.correct > t.before.correct, r_holds=True)
    header = lowk.child(parent, t)
    expect(errors.AccuracyRegressed, INVALID, lowk.validate, header, MemoryView([lowk.genesis, parent]))
    assert not miner_accuracy_ok(t.before, t.after, parent, lowk.spec)


def test_regression_bound_is_inclusive(lowk, other_key):
    """acc(W') == parent's claim - tolerance passes; one less fails."""
    tol = lowk.spec.evaluation.regression_tolerance
    t = find_trial(lowk.spec, lowk.r, lowk.w, lowk.genesis.hash, 1, lambda t: t.after.correct > t.before.correct)
    lowk.r.load(lowk.w)
    before = torch.cat([p.detach().reshape(-1) for p in lowk.r.params])   # a copy
    lowk.r.step(t.batch)
    after = torch.cat([p.detach().reshape(-1) for p in lowk.r.params])

    def moved(reqs):
        idx = [q.index for q in reqs]
        return requirements_hold(before[idx], after[idx], reqs)

    for claim, ok in ((t.after.correct + tol, True), (t.after.correct + tol + 1, False)):
        # R comes from the parent's hash: vary the parent (its batch) until this step meets its R
        for nonce in range(64):
            parent = replace(_claiming_parent(lowk, claim, other_key), batch=(0, 1, 2, 4 + nonce)).signed(other_key)
            if moved(derive_requirements(parent.hash, 1, lowk.r.index.total)):
                break
        else:
            raise AssertionError("no parent found")
        view = MemoryView([lowk.genesis, parent])
        if ok:
            lowk.validate(lowk.child(parent, t), view)
        else:
            expect(errors.AccuracyRegressed, INVALID, lowk.validate, lowk.child(parent, t), view)


# == the miner's accuracy policy (stricter than the validator's) ==========================
@pytest.mark.parametrize("before,after,parent_claim,ok", [
    ((50, 0), (53, 0), 0, True),        # clear improvement
    ((50, 0), (50, 0), 0, False),       # no improvement
    ((50, 0), (51, 0), 0, True),        # +1 with no borderline predictions is safe
    ((50, 1), (52, 0), 0, True),        # worst case 52 > 50 + 1
    ((50, 1), (51, 0), 0, False),       # one flip could make it a tie
    ((50, 0), (52, 1), 0, True),        # worst case 51 > 50
    ((50, 1), (52, 1), 0, False),       # 51 > 51 fails
    ((50, 2), (60, 1), 0, False),       # slack 3 > claim tolerance 2: the claim itself could fail
    ((50, 0), (60, 0), 85, True),       # 60 >= 85 - 25
    ((50, 0), (60, 0), 86, False),      # 60 < 86 - 25
    ((50, 0), (61, 1), 86, False),      # worst case 60 < 86 - 25
    ((50, 0), (62, 1), 86, True),       # worst case 61 >= 86 - 25
])
def test_miner_accuracy_policy(tiny_spec, tiny_genesis, before, after, parent_claim, ok):
    parent = replace(tiny_genesis, acc_after=parent_claim)
    b, a = Accuracy(*before), Accuracy(*after)
    assert miner_accuracy_ok(b, a, parent, tiny_spec) is ok
    if ok:   # whatever the borderline predictions do, the validator agrees
        for db in range(-b.borderline, b.borderline + 1):
            for da in range(-a.borderline, a.borderline + 1):
                res = ProofResult(Accuracy(b.correct + db, 0), Accuracy(a.correct + da, 0))
                hdr = replace(tiny_genesis, acc_before=b.correct, acc_after=a.correct)
                check_accuracy_claims(hdr, res, tiny_spec)
                assert res.after.correct > res.before.correct
                assert res.after.correct >= parent_claim - tiny_spec.evaluation.regression_tolerance


# == coverage of the reason codes ===================================================
def test_every_code_is_tested():
    """Every concrete reason code raised in consensus/ has a test above (``duplicate`` is the node's)."""
    root = Path(__file__).resolve().parents[2] / "consensus"
    raised = set()
    for path in root.glob("*.py"):
        raised |= set(re.findall(r"errors\.(\w+)\(", path.read_text()))
    codes = {getattr(errors, name).code for name in raised}
    expected = {"bad-signature", "bad-parent", "bad-height", "bad-difficulty", "time-too-new", "time-too-old",
                "bad-batch-indices", "weights-mismatch", "malformed-weights", "requirements-not-met",
                "accuracy-not-improved", "accuracy-regressed", "bad-accuracy-claim", "bad-chain-id",
                "bad-version", "malformed", "non-finite-weights", "records-mismatch", "bad-record",
                "unknown-parent"}
    assert codes == expected, codes ^ expected
    concrete = set(errors.all_reason_codes()) - {"block-error", "ignored", "bad-body", "invalid", "duplicate"}
    assert concrete == expected
    assert expected <= TESTED, f"untested: {expected - TESTED}"
