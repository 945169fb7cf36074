from __future__ import annotations

import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")


@pytest.mark.slow
def test_memory_tiny_node(bench_json):
    """A real tiny node starts, its peak RSS is read from /proc; no block needed at this size."""
    res = bench_json("memory", "--preset", "tiny", "--seconds", "1", "--min-blocks", "0", "--timeout", "120",
                     "--no-figure")
    assert res["benchmark"] == "memory"
    assert 50 < res["startup_peak_rss_mib"] <= res["peak_rss_mib"] < 3 * 1024
    assert res["mining_peak_rss_mib"] > 0 and res["under_3gb"] is True
    assert res["rss_samples"] and "VmHWM" in res["measured"]
    assert res["allocator"] == "tuned"


@pytest.mark.slow
def test_memory_tiny_node_fed_a_peers_block(bench_json):
    """--feed: this process mines a block on the node's spec and POSTs it; the node takes it (HTTP 2xx)."""
    res = bench_json("memory", "--preset", "tiny", "--seconds", "1", "--min-blocks", "1", "--timeout", "240",
                     "--feed", "--system-malloc", "--no-figure")
    fed = res["fed_block"]
    assert "error" not in fed, fed
    assert 200 <= fed["post_status"] < 300 and len(fed["hash"]) == 64
    assert res["allocator"] == "system"


def test_generated_cifar_archive_loads(tmp_path):
    """The memory benchmark's archive goes through the real CIFAR-10 decoder (here with 20 records a batch)."""
    from bench.memory import write_cifar_archive
    from consensus import cifar10
    path = tmp_path / cifar10.ARCHIVE_NAME
    md5 = write_cifar_archive(path, records_per_batch=20)
    c = cifar10.load_cifar10(tmp_path, md5=md5, train_records=20, test_records=20)
    assert tuple(c.train_x.shape) == (100, 3, 32, 32) and tuple(c.test_x.shape) == (20, 3, 32, 32)
    assert int(c.train_y.max()) < 10


def test_memory_figure(tmp_path):
    pytest.importorskip("matplotlib")
    from bench.memory import draw
    res = {"rss_samples": [[0.0, 50.0], [1.0, 900.0], [2.0, 700.0]], "startup_seconds": 1.5, "peak_rss_mib": 900.0,
           "mining_peak_rss_mib": 720.0, "preset": "tiny", "arch": "tiny-cnn", "threads": 1, "blocks_mined": 1,
           "own_blocks_found": 1,
           "machine": {"cpu": "x", "cores": 2, "torch": "2"}, "started": "now", "load_average_after": [1.0, 1.0, 1.0]}
    assert {p.suffix for p in draw(res, tmp_path)} == {".png", ".svg"}
