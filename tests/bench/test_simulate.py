"""The discrete-event model of `polchain bench simulate` (bench/simulate.py): deterministic for a seed,
exact on a line, and the directions it must get right (shorter intervals -> more orphans, more nodes
-> slower propagation). No processes, no timing: the model's own clock only."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bench.simulate import PROFILES, Network, Profile, calibrate, graph, simulate

QUIET = Profile("test", work_check_s=0.1, eval_s=0.5, store_s=0.05, interval_s=10.0, block_bytes=1000, source="test")


def net(n: int, **kw) -> Network:
    return Network(n, max(1, n // 4), **kw)


def test_same_seed_same_run_other_seed_other_run():
    a = simulate(PROFILES["tiny"], net(40), interval_s=1.0, blocks=80, seed=3)
    b = simulate(PROFILES["tiny"], net(40), interval_s=1.0, blocks=80, seed=3)
    c = simulate(PROFILES["tiny"], net(40), interval_s=1.0, blocks=80, seed=4)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert json.dumps(a, sort_keys=True) != json.dumps(c, sort_keys=True)


@pytest.mark.parametrize("n", [5, 9])
def test_line_costs_hops_times_the_hop_plus_one_validation(n):
    # one miner at the end of a line, blocks far apart: a block reaches node n-1 after n-1 hops, each the
    # link (overhead + 3 latencies + transfer) and the receiver's work check, then the last node's
    # accuracy evaluation and store
    line = Network(n, 1, latency_median_s=0.02, latency_sigma=1e-9, bandwidth_bps=8000.0, hop_overhead_s=0.03,
                   topology="line")
    out = simulate(QUIET, line, interval_s=1000.0, blocks=5, tail=1, seed=1, miner_ids=[0])
    link = 0.03 + 3 * 0.02 + 1000 * 8 / 8000.0
    want = (n - 1) * (link + QUIET.work_check_s) + QUIET.eval_s + QUIET.store_s
    assert out["orphans"] == 0 and out["propagation_s"]["blocks"] == 5
    assert out["propagation_s"]["p50"] == pytest.approx(want, rel=1e-6)
    assert out["propagation_s"]["p90"] == pytest.approx(want, rel=1e-6)
    assert out["hops_diameter_from_node0"] == n - 1


def test_one_miner_never_orphans_itself():
    out = simulate(PROFILES["resnet18-cpu"], Network(30, 1), interval_s=5.0, blocks=60, seed=2)
    assert out["orphans"] == 0


def test_shorter_interval_more_orphans():
    shares = [simulate(PROFILES["tiny"], net(30), interval_s=iv, blocks=300, seed=5)["orphan_share"]
              for iv in (20.0, 2.0, 0.3)]
    assert shares[0] < shares[1] < shares[2]
    assert shares[0] < 0.1 and shares[2] > 0.3


def test_more_nodes_slower_propagation():
    p = [simulate(PROFILES["tiny"], net(n), interval_s=30.0, blocks=30, seed=6)["propagation_s"]["p50"]
         for n in (10, 100, 1000)]
    assert p[0] < p[1] < p[2]


def test_faster_validators_fewer_orphans():
    cpu = simulate(PROFILES["resnet18-cpu"], net(100), interval_s=60.0, blocks=200, seed=7)
    gpu = simulate(PROFILES["resnet18-gpu"], net(100), interval_s=60.0, blocks=200, seed=7)
    assert gpu["propagation_s"]["p50"] < cpu["propagation_s"]["p50"]
    assert gpu["orphan_share"] < cpu["orphan_share"]


def test_random_graph_connected_and_degrees_bounded():
    import random
    adj = graph(500, random.Random(1), 2, 3)
    assert all(2 <= len(a) <= 3 for a in adj)
    assert all(i in adj[j] for i, a in enumerate(adj) for j in a)        # undirected
    seen, todo = {0}, [0]
    while todo:
        for b in adj[todo.pop()]:
            if b not in seen:
                seen.add(b)
                todo.append(b)
    assert len(seen) == 500


def test_calibration_recovers_a_known_contention():
    # a "real" run made by the model itself with contention 0.5 at load 8 on a loopback net: the fit finds it
    from bench.simulate import loopback_model
    run = {"name": "model", "nodes": 12, "miners": [0, 4, 8], "edges": None, "mined_interval_s": 5.0,
           "propagation_s": {}, "orphan_share": None, "mined": 0, "load_mean": 8.0}
    made = loopback_model(run, PROFILES["tiny"], 0.5, blocks=100, seed=1)
    assert made["cost_scale"] == 2.0
    run["propagation_s"] = made["propagation_s"]
    assert calibrate([run], PROFILES["tiny"], blocks=100, seed=1) == pytest.approx(0.5, rel=0.05)


def test_cli_table_json_and_figure(bench_json, tmp_path):
    res = bench_json("simulate", "--profiles", "tiny,resnet18-gpu", "--nodes", "20,60", "--blocks", "30",
                     "--figures", str(tmp_path))
    assert [(r["profile"], r["nodes"]) for r in res["results"]] == [
        ("tiny", 20), ("tiny", 60), ("resnet18-gpu", 20), ("resnet18-gpu", 60)]
    assert all(r["blocks"] == 30 and 0 <= r["orphan_share"] <= 1 for r in res["results"])
    assert res["results"][0]["miners"] == 5                         # a quarter of 20
    assert "ESTIMATE" in res["profiles"]["resnet18-gpu"]["source"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["simulate.png", "simulate.svg"]


def test_cli_refuses_unknown_profile(capsys):
    from node.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["bench", "simulate", "--profiles", "tiny,vax"])
    assert "unknown profile 'vax'" in str(exc.value)


def test_building_on_work_checked_blocks_orphans_less_when_evaluation_dominates():
    slow_eval = Profile("slow-eval", work_check_s=0.5, eval_s=15.0, store_s=0.3, interval_s=30.0, block_bytes=750,
                        source="test")
    now = simulate(slow_eval, net(30), blocks=300, seed=8)
    early = simulate(slow_eval, replace(net(30), adopt="work-checked"), blocks=300, seed=8)
    assert early["orphan_share"] < now["orphan_share"]
    # propagation (acceptance by every node) still includes the last node's evaluation
    assert early["propagation_s"]["p50"] > slow_eval.eval_s


# -- a fresh chain from genesis (issue 33.5) ------------------------------------------------------------
def _start(preset_name: str, k0: int, attempts: float, hit_share: float = 1.0):
    import dataclasses

    from bench.simulate import Start
    from consensus.spec import preset
    spec = preset(preset_name)
    return Start(dataclasses.replace(spec, difficulty=dataclasses.replace(spec.difficulty, initial=k0)),
                 attempts, hit_share)


def test_from_genesis_k_follows_the_retarget_rule():
    """tiny's rule on the model's chain: k stays k0 for blocks 1..11, then moves at height 12, 22, ...
    by log2(target / span) within max_step; a network 4x too fast at k0 climbs 2 steps at once."""
    from consensus.difficulty import retarget_step
    start = _start("tiny", 10, attempts=1000.0)            # 3 miners: 2^10 / 3000 = 0.34 s, ~30x too fast
    out = simulate(PROFILES["tiny"], Network(8, 3, latency_median_s=0.0), blocks=60, seed=2, start=start)
    s = out["start"]
    assert [w["heights"] for w in s["windows"][:3]] == [[1, 11], [12, 21], [22, 31]]
    assert s["windows"][0]["k"] == [10] and s["windows"][1]["k"] == [12]       # max_step 2
    span = round(1000 * s["windows"][0]["mean_interval_s"] * 10)
    assert retarget_step(span, 10 * 10_000, 2) == 2
    assert s["one_miner_interval_at_k0_s"] == round(2 ** 10 / 1000, 2)
    assert out["interval_s"] == 10.0        # the spec's target, as simulate() itself reports it (not the profile's)
    again = simulate(PROFILES["tiny"], Network(8, 3, latency_median_s=0.0), blocks=60, seed=2, start=start)
    assert again["start"] == s                              # deterministic for a seed


def test_from_genesis_a_too_easy_start_orphans_on_cpu_validators():
    """The model's case for ResNet-18's k0 (docs/benchmarks.md 9.4): GPU miners at 1,000 candidates/s,
    validators on CPUs. At k0 = 10 blocks come every few seconds while a CPU work check takes 4.4 s: the
    miners mine on their own branches and most blocks are orphaned; at 16 the start is near the target."""
    net8 = Network(8, 3)
    easy = simulate(PROFILES["resnet18-cpu2"], net8, blocks=60, seed=1, start=_start("cifar10-resnet18", 10, 1000, 0.31))
    near = simulate(PROFILES["resnet18-cpu2"], net8, blocks=60, seed=1, start=_start("cifar10-resnet18", 16, 1000, 0.31))
    assert easy["orphan_share"] > 0.3 and near["orphan_share"] < 0.1, (easy["orphan_share"], near["orphan_share"])
    assert easy["start"]["windows"][0]["mean_interval_s"] < 10 < 60 < near["start"]["windows"][0]["mean_interval_s"]


def test_cli_from_genesis(bench_json):
    res = bench_json("simulate", "--profiles", "tiny", "--nodes", "8", "--miner-share", "0.375", "--blocks", "30",
                     "--from-genesis", "--attempts-per-s", "300", "--hit-share", "0.9", "--k0", "9",
                     "--max-step", "1", "--no-figure")
    r = res["results"][0]
    assert r["miners"] == 3 and r["interval_s"] == 10.0
    assert r["start"]["k0"] == 9 and r["start"]["max_step"] == 1 and r["start"]["hit_share"] == 0.9
    assert r["start"]["windows"][0]["heights"] == [1, 11]


@pytest.mark.parametrize("argv,message", [
    (["--from-genesis"], "--from-genesis needs --attempts-per-s"),
    (["--k0", "12"], "belong to --from-genesis"),
    (["--from-genesis", "--attempts-per-s", "10", "--interval", "5"], "no --interval options"),
    (["--from-genesis", "--attempts-per-s", "10", "--k0", "99"], "--k0 must be within [1, 40]"),
])
def test_cli_from_genesis_refuses(argv, message):
    from node.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["bench", "simulate", "--profiles", "tiny", "--nodes", "8", "--no-figure", *argv])
    assert message in str(exc.value)
