"""Typed outcomes of block validation, each with a stable reason code.

Three families, kept apart because the node treats them differently:

* ``Ignored``      -- not judged yet (future timestamp, unknown parent, duplicate).
                      No penalty for the sender; the block may become valid later.
* ``BadBody``      -- the body does not match the header (records that are not the
                      committed ones; dgg-paper: wrong weights, bad safetensors). The
                      *header* stays unjudged: the real body may still arrive from
                      another peer.
* ``InvalidBlock`` -- provably bad. The block hash is marked invalid and the
                      invalidity passes to every descendant.

Reason codes are part of the wire protocol (REST errors, metrics labels), and so are the
``Verdict`` a node gives a submitted block and the ``BlockStatus`` it stores and serves. Each
stage of validation (consensus.validation) sets ``exc.stage`` (a ``Stage``) on the error it
raises; who is punished for it is decided in one place (p2p/punishment.py).
"""
from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    """A node's answer to a submitted block or header (its value is the wire string)."""
    ACCEPTED = "accepted"          # valid, stored
    HEADER_OK = "header-ok"        # a header alone passed the header rules (headers-first)
    ORPHAN = "orphan"              # parent unknown or not validated yet: held, no penalty
    DUPLICATE = "duplicate"        # already judged
    IGNORED = "ignored"            # not judged now (time-too-new, state-unavailable...)
    INVALID = "invalid"            # provably bad: marked, with its descendants
    BAD_BODY = "bad-body"          # the records are not the committed ones: the header stays unjudged


class BlockStatus(StrEnum):
    """What a node knows of a block (stored, served by the API, asked by peers)."""
    VALID = "valid"                # every rule checked here (or assumed valid up to a checkpoint)
    INVALID = "invalid"            # a rule failed: the block and its descendants are marked
    HEADER_ONLY = "header-only"    # the header rules passed; the body is not judged yet (headers-first)
    VALIDATING = "validating"      # its work is checked, its accuracy not yet (served during fast relay)


class Stage(StrEnum):
    """The validation stage that judged a block (consensus.validation, cheapest first)."""
    HEADER = "header"
    RECORDS = "records"
    REPLAY = "replay"              # loading the parent's post-state, the steps, R, the state commitment
    ACCURACY = "accuracy"


class BlockError(Exception):
    code = "block-error"
    stage: Stage | None = None     # set by the validation stage that raised it

    def __init__(self, detail: str = ""):
        super().__init__(f"{self.code}: {detail}" if detail else self.code)
        self.detail = detail


# -- ignore for now ---------------------------------------------------------
class Ignored(BlockError):
    code = "ignored"


class TimeTooNew(Ignored):
    code = "time-too-new"


class UnknownParent(Ignored):
    code = "unknown-parent"


class Duplicate(Ignored):
    """Already judged (valid or invalid): nothing to do."""
    code = "duplicate"


class ParentNotValidated(Ignored):
    """The parent passed the header rules only (headers-first): a block can be valid only on a
    validated parent, so it waits like an orphan."""
    code = "parent-not-validated"


class StateUnavailable(Ignored):
    """The parent is valid but this node no longer keeps its post-state (pruned side branch)."""
    code = "state-unavailable"


class RebuildDeferred(ParentNotValidated):
    """The parent is valid but its post-state is not kept here, and no known branch through this block
    claims more work than the active tip: rebuilding the state (a replay from the nearest kept ancestor)
    would be work done for a lighter fork. The block waits like an orphan (its header stored header-only)
    and is judged as soon as headers or blocks on top of it claim more work than the tip."""
    code = "rebuild-deferred"


class ReplayStopped(Ignored):
    """The replay stopped between two steps because the caller's ``should_stop()`` said so (a
    stranger's block gives way to a known sender's): the block was not judged; send it again."""
    code = "busy"

    def __init__(self, steps_done: int):
        super().__init__(f"gave way to a block from a known sender after {steps_done} step(s); send it again")
        self.steps_done = steps_done


class StoreUnavailable(Ignored):
    """This node cannot write its store (disk full, read-only, I/O error): the block was not judged
    and nothing of it was stored; send it again later."""
    code = "store-unavailable"


# -- bad body (header unjudged) ---------------------------------------------
class BadBody(BlockError):
    code = "bad-body"


class WeightsMismatch(BadBody):
    code = "weights-mismatch"


class MalformedWeights(BadBody):
    code = "malformed-weights"


class RecordsMismatch(BadBody):
    code = "records-mismatch"


# -- invalid ----------------------------------------------------------------
class InvalidBlock(BlockError):
    code = "invalid"
    recorded = True         # the block's hash is stored as invalid (so its descendants are known bad)


class Malformed(InvalidBlock):
    code = "malformed"


class BadVersion(InvalidBlock):
    code = "bad-version"


class BadChainId(InvalidBlock):
    code = "bad-chain-id"


class BadSignature(InvalidBlock):
    """Not signed by the key it names: anyone can make one, so nothing of it is kept (``recorded``)."""
    code = "bad-signature"
    recorded = False


class BadTicket(InvalidBlock):
    """No admission ticket (protocol v4): the header did not pay for being looked at, so nothing of it is
    kept -- not even its hash as invalid (``recorded``): a ticketless header costs one scrypt evaluation."""
    code = "bad-ticket"
    recorded = False


class BadParent(InvalidBlock):
    """The parent is known and invalid."""
    code = "bad-parent"


class BadHeight(InvalidBlock):
    code = "bad-height"


class BadDifficulty(InvalidBlock):
    code = "bad-difficulty"


class TimeTooOld(InvalidBlock):
    code = "time-too-old"


class BadBatchIndices(InvalidBlock):
    code = "bad-batch-indices"


class BadNonces(InvalidBlock):
    code = "bad-nonces"


class StateMismatch(InvalidBlock):
    """The replayed post-state does not hash to the header's state_hash."""
    code = "state-mismatch"


class BadRecord(InvalidBlock):
    code = "bad-record"


class NonFiniteWeights(InvalidBlock):
    code = "non-finite-weights"


class RequirementsNotMet(InvalidBlock):
    code = "requirements-not-met"


class BadAccuracyClaim(InvalidBlock):
    code = "bad-accuracy-claim"


class AccuracyNotImproved(InvalidBlock):
    code = "accuracy-not-improved"


class AccuracyRegressed(InvalidBlock):
    code = "accuracy-regressed"


def all_reason_codes() -> dict[str, type[BlockError]]:
    """Every concrete reason code -> its exception class."""
    out: dict[str, type[BlockError]] = {}
    stack = [BlockError]
    while stack:
        cls = stack.pop()
        out[cls.code] = cls
        stack.extend(cls.__subclasses__())
    return out
