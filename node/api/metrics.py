"""Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from .deps import Service

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(service: Service):
    """Prometheus text format: height, peers, blocks accepted and rejected, validation time, mining rate,
    the tip's accuracy on E, the next difficulty, sync state and the age of the last block."""
    st = service.status()
    m = service.miner
    acc = st["tip_accuracy"]
    sync = st["sync"]
    gauges = {
        "polchain_tip_accuracy": ("Share of the evaluation set E the tip model classifies correctly.",
                                  acc["correct"] / acc["of"] if acc["of"] else 0.0),
        "polchain_tip_correct": ("Correct answers of the tip model on E.", acc["correct"]),
        "polchain_difficulty": ("Difficulty k of the next block (about 2^k attempts).", st["difficulty"]),
        "polchain_cumulative_work": ("Cumulative work of the best chain.", st["cumulative_work"]),
        "polchain_syncing": ("1 while the node syncs from a peer.", 1 if st["syncing"] else 0),
        "polchain_sync_target_height": ("Height the running sync aims at (the tip height when not syncing).",
                                        sync["target"] if sync["target"] is not None else st["height"]),
        "polchain_best_peer_height": ("Highest tip a peer reported (the own height with no peers).",
                                      sync["best_peer_height"] if sync["best_peer_height"] is not None
                                      else st["height"]),
        "polchain_last_block_age_seconds": ("Seconds since the tip's timestamp (0 at genesis).",
                                            st["last_block_age_s"] or 0.0),
    }
    return service.metrics.render(height=st["height"], peers=st["peers"],
                                  attempts_per_second=m.attempts_per_second() if m else 0.0,
                                  blocks_found=m.blocks_found if m else 0, gauges=gauges)
