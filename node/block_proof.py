"""A block's proof, laid out for people (GET /blocks/{hash}/proof and the explorer's block page).

Everything comes from the consensus functions that validation uses: R from ``requirements_for``,
the batches from ``validation.batches``, the band from ``validation.validator_band``, the achieved
changes from ``validation.replay_steps`` (the canonical step, replayed from the parent's post-state)
and ``requirements.requirement_margins``, the floor from ``validation.accuracy_floor``.

The replay costs the block's j+1 canonical steps, so: one replay at a time on this node's own
replayer (a request waits at most ``wait_s`` for it, else the answer says ``busy``), results cached
per block hash. Where the parent's post-state is not kept here (pruned), the answer says so and
gives everything that needs no replay.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict

from consensus.proof import r_seed, redraw_epoch, requirements_for
from consensus.requirements import INCREASE, requirement_margins, requirements_met
from consensus.validation import accuracy_floor, batches, replay_steps, validator_band
from consensus.weights import weights_hash

log = logging.getLogger("polchain.node")
CACHE = 128        # proofs kept (replayed ones; a busy or unavailable answer is not kept)
WAIT_S = 20.0      # how long a request waits for the replay slot


class BlockProofs:
    def __init__(self, chain, *, cache: int = CACHE, wait_s: float = WAIT_S):
        self.chain = chain
        self.spec = chain.spec
        self.wait_s = wait_s
        self._size = cache
        self._cache: OrderedDict[str, dict] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._slot = threading.Lock()          # one replay at a time (it holds the replayer)
        self._replayer = None
        self.replays = 0                       # replays run (tests read it: a cached answer costs none)

    def _get_replayer(self):
        with self._cache_lock:          # built once (the first proof asked for), not by two requests at once
            if self._replayer is None:
                from consensus.training import canonical_step
                self._replayer = canonical_step(self.spec, self.chain.dataset)
            return self._replayer

    def labels(self, indices) -> list[int]:
        return [int(self.chain.dataset.train_y[i]) for i in indices]

    def describe(self, block) -> dict | None:
        """The proof of ``block`` (a StoredBlock), or None for genesis (it has none)."""
        if block.height == 0:
            return None
        with self._cache_lock:
            hit = self._cache.get(block.hash)
            if hit is not None:
                self._cache.move_to_end(block.hash)
                return {**hit, "status": block.status, "replay": {**hit["replay"], "cached": True}}
        parent_row = self.chain.store.get(block.header.parent)
        out = self._static(block, parent_row)
        if parent_row is None:
            out["replay"] = {"status": "parent-unknown", "detail": "the parent block is not known here",
                             "seconds": None, "state_matches": None}
            return out
        if not self._slot.acquire(timeout=self.wait_s):
            out["replay"] = {"status": "busy", "detail": f"another proof is being replayed; none free in "
                             f"{self.wait_s:.0f} s, try again", "seconds": None, "state_matches": None}
            return out
        try:
            self._replay(block, parent_row.header, out)
        except Exception as exc:    # an invalid block's proof need not replay (e.g. a diverging step)
            log.warning("proof of block %s could not be replayed: %s: %s", block.hash[:16], type(exc).__name__, exc)
            out["replay"] = {"status": "failed", "seconds": None, "state_matches": None,
                             "detail": f"the replay failed: {type(exc).__name__}: {str(exc)[:200]}"}
        finally:
            self._slot.release()
        if out["replay"]["status"] == "done":
            with self._cache_lock:
                self._cache[block.hash] = out
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        return out

    def _static(self, block, parent_row) -> dict:
        """What needs no replay: R (with the parent's header), the steps and their batches, the accuracies."""
        spec, hd = self.spec, block.header
        band_ulps, band_abs = validator_band(spec)
        # the batches are the block's redraw epoch's: known with the parent's header only
        steps = batches(hd, parent_row.header, spec) if parent_row is not None else []
        out = {
            "hash": block.hash, "height": block.height, "status": block.status, "parent": hd.parent,
            "miner": hd.miner, "difficulty": hd.difficulty,
            "band": {"ulps": band_ulps, "abs": band_abs},
            "redraw_epoch": None, "r_seed": None, "requirements": [],
            "steps": [{"step": i, "nonce": n, "winning": i == len(steps) - 1, "batch": list(b),
                       "labels": self.labels(b)} for i, (n, b) in enumerate(zip(hd.nonces, steps))],
            "accuracy": {"of": spec.evaluation.size, "claimed": hd.acc_after, "measured": block.acc_after,
                         "claim_tolerance": spec.evaluation.claim_tolerance, "floor": None,
                         "parent_claim": None, "min_improvement": spec.proof.min_improvement,
                         "floor_relax": spec.proof.floor_relax},
        }
        if parent_row is None:
            return out
        parent = parent_row.header
        epoch = redraw_epoch(spec, parent.timestamp_ms, hd.timestamp_ms)
        out["redraw_epoch"] = epoch
        out["r_seed"] = r_seed(spec, parent.state_hash, parent.height, epoch)
        out["accuracy"]["floor"] = accuracy_floor(spec, parent, hd.timestamp_ms)
        out["accuracy"]["parent_claim"] = parent.acc_after
        r = self._get_replayer()
        try:
            reqs = requirements_for(spec, parent, hd.timestamp_ms, hd.difficulty, r.r_space)
        except ValueError:          # an invalid block's k outside the index space: no R to show
            reqs = ()
        for i, req in enumerate(reqs):
            name, offset = r.locate(req.index)
            out["requirements"].append({
                "i": i, "index": req.index, "parameter": name, "offset": offset,
                "direction": "increase" if req.direction == INCREASE else "decrease",
                "before": None, "after": None, "change": None, "least": None, "met": None})
        return out

    def _replay(self, block, parent, out: dict) -> None:
        state = self.chain.states.load(parent.state_hash)
        if state is None:
            out["replay"] = {"status": "state-unavailable", "seconds": None, "state_matches": None,
                             "detail": f"this node does not keep the post-state of the parent (height "
                                       f"{parent.height}): it was pruned (run with --archival to keep every "
                                       "state); R, the steps and the accuracies are shown without the changes"}
            return
        t0 = time.perf_counter()
        r = self._get_replayer()
        reqs, before, after = replay_steps(block.header, parent, state, r, self.spec)
        _, least = requirement_margins(before, after, reqs, *validator_band(self.spec))
        met = requirements_met(before, after, reqs, *validator_band(self.spec))
        matches = weights_hash(r.state()) == block.header.state_hash
        self.replays += 1
        for row, b, a, n, ok in zip(out["requirements"], before.tolist(), after.tolist(), least.tolist(),
                                    met.tolist()):
            row.update(before=_finite(b), after=_finite(a), change=_finite(a - b), least=_finite(n), met=bool(ok))
        seconds = round(time.perf_counter() - t0, 4)
        out["replay"] = {"status": "done", "seconds": seconds, "state_matches": matches, "cached": False,
                         "detail": f"replayed {len(block.header.nonces)} step(s) from the parent's post-state "
                                   f"in {seconds:.3f} s" + ("" if matches else "; the post-state does NOT hash "
                                                            "to the header's state_hash")}
        log.debug("proof of block %s replayed in %.3f s", block.hash[:16], seconds)


def _finite(x: float) -> float | None:
    """JSON has no NaN or infinity (a block whose replay diverges is shown without the value)."""
    return x if math.isfinite(x) else None
