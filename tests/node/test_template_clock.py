"""The node tests' template chain does not depend on the wall clock (issue 31.3).

``test_child_of_a_pruned_parent_waits_until_its_branch_is_heavier`` once failed with "no block in
20000 attempts" mining a fork on the template's block 2 (k = 8, seed 4). The template was stamped
from the wall clock, so block 1's redraw epoch (hence R) and every block hash (hence every batch)
changed from run to run: block 2 and its post-state were a new random draw each time. The fork is
mined at a fixed timestamp (block 2 + 2 s, redraw epoch 0): its accuracy floor never relaxes and R is
never redrawn, so on some draws of block 2 the reference miner sat on a trajectory just below the
floor for more than 20000 attempts. Reproduced with a controlled clock (blocks 1 and 2 mined as the
template was, stamped 1795001380506 and 1.5 s later): no block in 20000 attempts, 62 R hits of which
58 below the floor and 4 borderline, no restart (one W_J just above the restart line); the same
search with the clock one redraw epoch later (floor 3 lower, R redrawn) finds one in 1252. The
template is now stamped from its parents (parent + 2 s): the same chain, and so the same fork (found
in 430 attempts), on every run.
"""
from __future__ import annotations

import itertools
import time

from consensus.spec import GENESIS_TIME_MS
from tests.blocks import BlockSmith


def fake_wall_clock(start_ms: int):
    """A wall clock that starts at ``start_ms`` and moves 1 ms per reading."""
    ticks = itertools.count()
    return lambda: (start_ms + next(ticks)) / 1000


def test_the_template_chain_is_the_same_whatever_the_wall_clock(smith, tmp_path, monkeypatch):
    """Two smiths opened as the ``smith`` fixture opens its template, one with the wall clock a few ms
    before a redraw-epoch boundary of block 1 (the search crosses it), one a day later: both mine the
    template's blocks 1 and 2, hash for hash."""
    interval = smith.spec.proof.redraw_interval_ms
    boundary = GENESIS_TIME_MS + 1000 * interval
    made = []
    for i, start in enumerate((boundary - 5, boundary + 86_400_000)):
        monkeypatch.setattr(time, "time", fake_wall_clock(start))
        s = BlockSmith.open(tmp_path / f"chain{i}", dataset=smith.dataset)
        try:
            made.append([b.header.hash for b in s.mine(2)])
        finally:
            s.chain.store.close()
    monkeypatch.undo()
    assert made[0] == made[1] == [smith.chain.store.hash_at(h) for h in (1, 2)]


def test_a_smiths_fixed_stamp_moves_an_epoch_when_the_search_runs_long(tiny_spec, tiny_dataset):
    """The fixed stamp is parent + 2 s for an ordinary search, and one redraw interval later after every
    8 x 2^k readings (the reference miner reads it once per attempt), as the wall clock would move: a
    search stuck below the floor sees it relax (the preset tiny's seed 6 found no block 3 in 20,000
    attempts on a fixed stamp; 8,868 with this one)."""
    from consensus.block import genesis_header
    from tests.blocks import SMITH_KEY
    smith = BlockSmith(tiny_spec, tiny_dataset, SMITH_KEY)
    g = genesis_header(tiny_spec)
    clock = smith.patient_stamp(g, 2)                          # 8 x 2^2 = 32 readings per epoch
    reads = [clock() for _ in range(70)]
    redraw = tiny_spec.proof.redraw_interval_ms
    assert reads[:32] == [g.timestamp_ms + 2000] * 32
    assert reads[32:64] == [g.timestamp_ms + 2000 + redraw] * 32 and reads[64] == g.timestamp_ms + 2000 + 2 * redraw
    assert BlockSmith(tiny_spec, tiny_dataset, SMITH_KEY, gap_ms=None).patient_stamp(g, 2) is None   # wall clock
