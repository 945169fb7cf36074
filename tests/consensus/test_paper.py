"""The dgg-paper research preset (consensus/paper.py): the DGG paper's v1 rules, each reason code
that only they raise, from a real v1 block (free W carried in the body, batch indices named by the
miner, R from the parent's block hash).

These rules are forgeable (tests/adversarial shows how) and no node runs them; they stay so the
attacks can be demonstrated, so what they check must still be checked.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest
import torch

from consensus import errors, paper
from consensus.block import PaperHeader, genesis_header, parse_records
from consensus.hashing import ZERO_HASH
from consensus.requirements import derive_requirements, requirements_hold
from consensus.training import Accuracy, Replayer, genesis_state
from consensus.validation import check_records_commitment, validate_header, validate_records
from consensus.weights import clone_state, encode_state, weights_hash

from ..conftest import BLOCK_GAP_MS, MemoryView
from .util import BAD_BODY, INVALID, expect, resign


@dataclass
class PaperBlock:
    header: PaperHeader
    body: bytes
    w: dict


def paper_block(spec, r: Replayer, parent: PaperHeader, w, key, *, r_holds: bool = True, seed: int = 0) -> PaperBlock:
    """A signed v1 block on ``parent`` from the free W ``w``: the first random batch whose step has the
    wanted R verdict (and, for a valid block, raises acc(W')), with honest claims."""
    rng = random.Random(seed)
    reqs = derive_requirements(parent.hash, parent.difficulty, r.index.total)
    before_acc = r.accuracy(w)
    for _ in range(5000):
        batch = tuple(rng.sample(range(spec.dataset.train_size), spec.training.batch_size))
        r.load(w)
        before = r.index.gather(reqs)
        r.step(batch)
        if requirements_hold(before, r.index.gather(reqs), reqs) != r_holds:
            continue
        after_acc = r.accuracy()
        if r_holds and after_acc.correct <= before_acc.correct:
            continue
        header = PaperHeader(version=spec.header_version, chain_id=spec.chain_id, height=parent.height + 1,
                             parent=parent.hash, timestamp_ms=parent.timestamp_ms + BLOCK_GAP_MS,
                             difficulty=parent.difficulty, miner="", batch=batch, weights_hash=weights_hash(w),
                             acc_before=before_acc.correct, acc_after=after_acc.correct,
                             records_root=ZERO_HASH).signed(key)
        return PaperBlock(header, encode_state(w), w)
    raise AssertionError("no batch with the wanted verdict in 5000 steps")


class PaperCtx:
    def __init__(self, spec, dataset, key):
        self.spec, self.key = spec, key
        self.genesis = genesis_header(spec)
        self.template = genesis_state(spec)
        self.r = Replayer(spec, dataset)
        self.block = paper_block(spec, self.r, self.genesis, self.template, key)
        self.header, self.body = self.block.header, self.block.body
        self.view = MemoryView([self.genesis])
        self.now = self.genesis.timestamp_ms + 10_000

    def validate(self, header=None, body=None, records=None):
        """The v1 pipeline: header, records commitment, weights body, records, the paper's proof."""
        header = header or self.header
        parent = validate_header(header, self.spec, self.view, self.now)
        records = [] if records is None else records
        check_records_commitment(header, records)
        w = paper.decode_weights(header, self.body if body is None else body, self.spec, self.template)
        validate_records(header, parse_records(records), self.spec)
        return paper.validate_proof(header, parent, w, self.r, self.spec)

    def resign(self, **changes) -> PaperHeader:
        return resign(self.header, self.key, **changes)


@pytest.fixture(scope="module")
def pctx(paper_spec, tiny_dataset, miner_key) -> PaperCtx:
    return PaperCtx(paper_spec, tiny_dataset, miner_key)


def test_valid_paper_block_is_accepted(pctx):
    h = pctx.header
    assert isinstance(h, PaperHeader) and h.version == 1 and pctx.spec.is_paper
    result = pctx.validate()
    assert result.after.correct > result.before.correct
    assert result.before.correct == h.acc_before and result.after.correct == h.acc_after


# == body: the weights W ================================================================
def test_weights_mismatch_is_bad_body(pctx):
    other = encode_state(pctx.r.update(pctx.template, (0, 1, 2, 3)))     # valid safetensors, another hash
    expect(errors.WeightsMismatch, BAD_BODY, pctx.validate, body=other)


@pytest.mark.parametrize("make", [
    lambda body, spec: b"",
    lambda body, spec: b"garbage!" * 10,
    lambda body, spec: body[:-7],
    lambda body, spec: b"\x00" * (spec.limits.max_weights_bytes + 1),
], ids=["empty", "garbage", "truncated", "oversized"])
def test_malformed_weights_is_bad_body(pctx, make):
    expect(errors.MalformedWeights, BAD_BODY, pctx.validate, body=make(pctx.body, pctx.spec))


def test_body_errors_leave_header_valid(pctx):
    with pytest.raises(errors.BadBody):
        pctx.validate(body=b"garbage!" * 10)
    pctx.validate()


def test_malformed_weights_layout(pctx):
    """A header that commits (by hash) to weights that do not fit the architecture is invalid."""
    w = clone_state(pctx.block.w)
    w["extra.weight"] = torch.zeros(3)
    expect(errors.Malformed, INVALID, pctx.validate, pctx.resign(weights_hash=weights_hash(w)), encode_state(w))
    w = clone_state(pctx.block.w)
    w["linear.bias"] = torch.zeros(11)
    expect(errors.Malformed, INVALID, pctx.validate, pctx.resign(weights_hash=weights_hash(w)), encode_state(w))


def test_non_finite_weights(pctx):
    for bad in (float("nan"), float("inf"), float("-inf")):
        w = clone_state(pctx.block.w)
        w["conv2.weight"].view(-1)[17] = bad
        expect(errors.NonFiniteWeights, INVALID, pctx.validate, pctx.resign(weights_hash=weights_hash(w)),
               encode_state(w))


# == header: the batch indices =============================================================
@pytest.mark.parametrize("batch", [(1, 2, 3), (1, 2, 3, 4, 5), (1, 1, 2, 3), (0, 1, 2, 10_000), ()],
                         ids=["short", "long", "repeat", "out-of-range", "empty"])
def test_bad_batch_indices(pctx, batch):
    expect(errors.BadBatchIndices, INVALID, pctx.validate, pctx.resign(batch=batch))


# == proof ==================================================================================
def test_requirements_not_met(pctx):
    miss = paper_block(pctx.spec, pctx.r, pctx.genesis, pctx.template, pctx.key, r_holds=False)
    expect(errors.RequirementsNotMet, INVALID, pctx.validate, miss.header)


def test_requirements_come_from_the_parent_hash(pctx):
    """v1: R is drawn from the parent's block hash, so the same (W, P) moved onto another parent
    (here: genesis re-stamped) faces other requirements."""
    reqs = derive_requirements(pctx.genesis.hash, 8, pctx.r.index.total)
    other = replace(pctx.genesis, timestamp_ms=pctx.genesis.timestamp_ms - 1)
    assert derive_requirements(other.hash, 8, pctx.r.index.total) != reqs


def _result(before: int, after: int) -> paper.PaperResult:
    return paper.PaperResult(Accuracy(before, 0), Accuracy(after, 0))


def test_bad_accuracy_claim(pctx):
    tol, h = pctx.spec.evaluation.claim_tolerance, pctx.header
    res = _result(h.acc_before, h.acc_after)
    paper.check_accuracy(replace(h, acc_after=h.acc_after + tol), pctx.genesis, res, pctx.spec)
    for changes in ({"acc_after": h.acc_after + tol + 1}, {"acc_before": h.acc_before + tol + 1}):
        expect(errors.BadAccuracyClaim, INVALID, paper.check_accuracy, replace(h, **changes), pctx.genesis, res,
               pctx.spec)
    expect(errors.BadAccuracyClaim, INVALID, pctx.validate, pctx.resign(acc_after=h.acc_after + tol + 1))


def test_accuracy_not_improved(pctx):
    """v1: acc(W') must exceed acc(W), both measured by the validator."""
    h = pctx.header
    for before, after in ((60, 60), (60, 59)):
        expect(errors.AccuracyNotImproved, INVALID, paper.check_accuracy,
               replace(h, acc_before=before, acc_after=after), pctx.genesis, _result(before, after), pctx.spec)


def test_accuracy_regressed_bound_is_inclusive(pctx):
    """v1: acc(W') may fall below the parent's claim by the regression tolerance, not one more."""
    tol = pctx.spec.evaluation.regression_tolerance
    h = replace(pctx.header, acc_before=40, acc_after=50)
    paper.check_accuracy(h, replace(pctx.genesis, acc_after=50 + tol), _result(40, 50), pctx.spec)
    expect(errors.AccuracyRegressed, INVALID, paper.check_accuracy, h, replace(pctx.genesis, acc_after=51 + tol),
           _result(40, 50), pctx.spec)
