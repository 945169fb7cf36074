"""Smoke test of `polchain bench hostile` at a toy budget: a real node, the attacker in a child process;
the JSON fields checked (present, numbers), not the goals (a loaded machine stretches every figure)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow      # a node process and an attacker process: about a minute


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def test_hostile_quick_json(bench_json, shared_data, tmp_path):
    res = bench_json("hostile", "--quick", "--quiet-seconds", "5", "--attack-seconds", "8", "--interval", "2",
                     "--idle-sockets", "20", "--junk-rate", "5", "--fake-peers", "2", "--orphan-rate", "2",
                     "--out", str(tmp_path))
    assert res["benchmark"] == "hostile" and res["preset"] == "tiny" and res["quick"] is True
    assert res["budget"]["attack_seconds"] == 8 and res["budget"]["idle_sockets"] == 20
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
