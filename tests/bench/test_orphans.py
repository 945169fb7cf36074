"""`polchain bench orphans`: the seeded topology (fast) and a smoke run of real mining nodes (slow:
the JSON's structure and consistency are checked, not its timings)."""
from __future__ import annotations

import pytest

from bench.orphans import interval_spec, random_graph


@pytest.mark.parametrize("n", [3, 12, 20])
def test_random_graph_is_seeded_connected_degree_2_to_3(n):
    edges = random_graph(n, seed=4)
    assert edges == random_graph(n, seed=4)
    deg = [sum(i in e for e in edges) for i in range(n)]
    assert all(2 <= d <= 3 for d in deg)
    assert all(a > b for a, b in edges) and len(set(edges)) == len(edges)
    seen, todo = {0}, [0]
    while todo:
        x = todo.pop()
        for a, b in edges:
            for y in ((b,) if a == x else (a,) if b == x else ()):
                if y not in seen:
                    seen.add(y)
                    todo.append(y)
    assert len(seen) == n


def test_interval_spec_is_another_chain():
    from consensus.spec import preset
    s = interval_spec("tiny", 5)
    assert s.name == "tiny-5000ms" and s.difficulty.target_interval_ms == 5000
    assert s.chain_id != preset("tiny").chain_id
    assert interval_spec("tiny", None) == preset("tiny")
    k8 = interval_spec("tiny", 1, 8)
    assert k8.name == "tiny-1000ms-k8" and k8.difficulty.initial == 8 and k8.chain_id != s.chain_id


@pytest.mark.slow      # 3 node processes, 2 mining, for about a minute
def test_orphans_smoke(bench_json):
    res = bench_json("orphans", "--nodes", "3", "--miners", "2", "--interval", "1", "--k", "8", "--seconds", "15",
                     "--settle", "5", "--sample", "1")
    assert res["benchmark"] == "orphans" and res["nodes"] == 3 and len(res["miners"]) == 2
    assert res["spec"] == "tiny-1000ms-k8" and res["target_interval_s"] == 1.0
    assert len(res["edges"]) == 3 and res["degrees"] == [2, 2, 2]          # three nodes: a triangle
    assert res["mined"] > 0, "two miners at k=8 found no block in 15 s"
    assert 0 <= res["orphans"] <= res["mined"] <= res["mined_total"]
    assert res["orphan_share"] == pytest.approx(res["orphans"] / res["mined"], abs=1e-4)
    p = res["propagation_s"]
    assert p["blocks"] + p["not_at_every_node"] == res["mined"] - res["orphans"]
    if p["blocks"]:
        assert 0 <= p["p50"] <= p["p90"] <= p["max"]
    s = res["samples"]
    assert s["total"] > 0 and 0 <= s["one_tip"] + s["unanswered"] <= s["total"]
    assert res["final_height"] >= res["best_chain_blocks"]
