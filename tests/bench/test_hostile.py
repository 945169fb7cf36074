"""Smoke test of `polchain bench hostile` at a toy budget: a real node, the attacker in a child process;
the JSON fields checked (present, numbers), not the goals (a loaded machine stretches every figure)."""
from __future__ import annotations

import pytest


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@pytest.mark.slow      # a node process and an attacker process: about a minute
def test_hostile_quick_json(bench_json, shared_data, tmp_path):
    res = bench_json("hostile", "--quick", "--quiet-seconds", "4", "--attack-seconds", "6", "--interval", "2",
                     "--idle-sockets", "20", "--junk-rate", "3", "--fake-peers", "1", "--orphan-rate", "1",
                     "--junk-made", "ahead", "--out", str(tmp_path))
    assert res["budget"]["junk_made"] == "ahead"
    assert 0 < res["attack"]["junk_made_ahead"] <= res["attack"]["junk_made"] and res["attack"]["made_ahead_s"] > 0
    assert res["benchmark"] == "hostile" and res["preset"] == "tiny" and res["quick"] is True
    assert res["budget"]["attack_seconds"] == 6 and res["budget"]["idle_sockets"] == 20
    for phase in ("quiet", "attack"):
        p = res["phases"][phase]
        assert _number(p["seconds"]) and _number(p["node_cpu_s"]) and _number(p["judged_invalid"])
        assert p["bystander"]["requests"] > 0 and _number(p["bystander"]["p99_s"])
        for role in ("known", "new"):
            assert p[role]["blocks"] + p[role]["given_up"] >= 1, (phase, role, p[role])
            assert _number(p[role]["latency_s"]["median"]) and _number(p[role]["tries"]["median"])
    assert res["phases"]["quiet"]["judged_invalid"] == 0
    for k in ("bystander_p99", "known_latency", "new_latency", "node_over_attacker_cpu"):
        assert _number(res["ratios"][k]), (k, res["ratios"])
        assert _number(res["goals"][k]) and isinstance(res["goals_met"][k], bool)
    cpu = res["cpu"]
    assert cpu["junk_judged"] > 0 and _number(cpu["node_cpu_s_per_junk"])
    # v4: the attacker pays each junk block's admission ticket, about what the node pays to reject it (v3: the
    # node paid 624x the attacker's signature)
    assert 0 < cpu["attacker_making_cpu_s_per_junk"] and cpu["node_cpu_s_per_junk"] < 10 * cpu["attacker_making_cpu_s_per_junk"]
    bans = res["bans"]
    assert bans["identities"] > 0 and _number(bans["held"]) and _number(bans["refused_on_probe"])
    assert isinstance(bans["all_held"], bool) and isinstance(res["goals_met"]["bans"], bool)
    assert res["attack"]["sockets"]["opened"] >= 20 and res["attack"]["branches"] and not res["attack"]["errors"]
    assert (tmp_path / "hostile-tiny.json").exists()


def test_junk_made_ahead_is_the_junk_sent_on_that_tip(tiny_spec):
    """--junk-made ahead: a worker makes ticketed junk on a future tip (or orphans on ghosts of it), and the
    attacker sends those while that block is the tip, then makes more live."""
    import random

    from bench.give_way import junk_block
    from bench.hostile import Attacker, _make_junk
    from consensus.block import genesis_header
    from consensus.spec import preset
    from consensus.ticket import ticket_holds
    spec = preset("tiny")
    tip = junk_block(spec, genesis_header(spec), random.Random(1)).header     # any header can be a tip here
    tip_dict = tip.to_dict() | {"hash": tip.hash}
    made = _make_junk((tip_dict, "tip", 3, 5))
    assert len(made) == 3 and all(b.header.parent == tip.hash and ticket_holds(spec, b.header) for b in made)
    assert len({b.header.hash for b in made}) == 3
    orphans = _make_junk((tip_dict, "orphan", 2, 6))
    assert all(b.header.parent != tip.hash and b.header.height == tip.height + 1 for b in orphans)
    a = Attacker({"url": "http://127.0.0.1:9", "seed": 0})
    a.tip, a.pool = tip, {(tip.hash, "tip"): list(made), (tip.hash, "orphan"): list(orphans)}
    rng = random.Random(2)
    sent = [a.junk(rng) for _ in range(4)] + [a.orphan(rng) for _ in range(3)]
    assert {b.header.hash for b in sent[:3]} == {b.header.hash for b in made}
    assert sent[3].header.hash not in {b.header.hash for b in made} and sent[3].header.parent == tip.hash   # live
    assert (a.made, a.from_pool) == (7, 5)
