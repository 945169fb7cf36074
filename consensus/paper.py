"""The DGG paper's proof rules (v1), kept as the ``dgg-paper`` research preset.

RESEARCH ONLY. W is free: the block carries the weights before the winning step, the miner
names the batch, and R comes from the parent's block hash. docs/protocol.md ("v1 attacks and
how v2 closes them") lists what this lets an attacker do; tests/adversarial demonstrates each
attack against these rules and shows it rejected under v3. Nodes do not run this preset.

The header rules are shared with v3 (consensus.validation.validate_header checks the batch
indices instead of the nonces for this preset); the rules here replace the v3 proof.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import errors
from .block import PaperHeader
from .requirements import derive_requirements, first_failed
from .spec import ChainSpec
from .training import Accuracy, CanonicalStep
from .weights import State, all_finite, decode_state, layout_problem, weights_hash


def decode_weights(header: PaperHeader, data: bytes, spec: ChainSpec, template: State) -> State:
    """Weights bytes -> W, checked against the header. Mismatch is a bad body."""
    if len(data) > spec.limits.max_weights_bytes:
        raise errors.MalformedWeights(f"weights file larger than {spec.limits.max_weights_bytes} bytes")
    state = decode_state(data)
    got = weights_hash(state)
    if got != header.weights_hash:
        raise errors.WeightsMismatch(f"weights hash {got[:16]} != header {header.weights_hash[:16]}")
    problem = layout_problem(state, template)
    if problem:  # the header itself commits to weights that do not fit the model
        raise errors.Malformed(f"committed weights do not fit {spec.model.arch}: {problem}")
    if not all_finite(state):
        raise errors.NonFiniteWeights("committed weights contain NaN or Inf")
    return state


def check_requirements(header: PaperHeader, parent: PaperHeader, replayer: CanonicalStep, w: State) -> None:
    """R from the parent's block hash, over every parameter; W' = update(W, P); sign and non-zero."""
    reqs = derive_requirements(parent.hash, header.difficulty, replayer.n_params)
    replayer.load(w)           # on the node's own thread count: the paper fixes none (a v1 split)
    before = replayer.values(reqs)
    replayer.step(header.batch)
    after = replayer.values(reqs)
    i = first_failed(before, after, reqs)
    if i is not None:
        r = reqs[i]
        raise errors.RequirementsNotMet(
            f"requirement {i} (weight {r.index}, {'+' if r.direction > 0 else '-'}) not met: "
            f"change {float(after[i] - before[i]):.3e}")


@dataclass(frozen=True)
class PaperResult:
    before: Accuracy
    after: Accuracy


def check_accuracy(header: PaperHeader, parent: PaperHeader, result: PaperResult, spec: ChainSpec) -> None:
    """Claims within tolerance; acc(W') > acc(W); not below the parent's claim by more than the tolerance."""
    tol = spec.evaluation.claim_tolerance
    if abs(result.before.correct - header.acc_before) > tol or abs(result.after.correct - header.acc_after) > tol:
        raise errors.BadAccuracyClaim(
            f"claimed {header.acc_before}->{header.acc_after}, measured "
            f"{result.before.correct}->{result.after.correct} (tolerance {tol})")
    if result.after.correct <= result.before.correct:
        raise errors.AccuracyNotImproved(f"acc(W')={result.after.correct} <= acc(W)={result.before.correct}")
    if result.after.correct < parent.acc_after - spec.evaluation.regression_tolerance:
        raise errors.AccuracyRegressed(
            f"acc(W')={result.after.correct} below the parent's {parent.acc_after} minus tolerance")


def validate_proof(header: PaperHeader, parent: PaperHeader, w: State, replayer: CanonicalStep,
                   spec: ChainSpec) -> PaperResult:
    """Replay the winning step from the published W and apply the paper's accuracy rule."""
    check_requirements(header, parent, replayer, w)
    after = replayer.accuracy()          # the model now holds W'
    result = PaperResult(replayer.accuracy(w), after)
    check_accuracy(header, parent, result, spec)
    return result
