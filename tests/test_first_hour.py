"""Issue 31, "the first hour": what a new operator ran into, each with the real `polchain` CLI in a
subprocess. Bad input is one line on stderr and exit status 2, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_operator_cli import one_line_error, polchain


# -- 31.4: a --key that does not exist is an error, not a new key -----------------------------------
@pytest.mark.parametrize("command", [
    ("mine", "--preset", "tiny", "--blocks", "1", "--datadir", "{d}"),
    ("node", "--preset", "tiny", "--datadir", "{d}"),
    ("pol", "register", "{d}/no-proof"),
])
def test_a_missing_key_file_is_an_error_not_a_new_key(tmp_path, command):
    typo = tmp_path / "typo.key"
    args = [a.format(d=tmp_path / "d") for a in command]
    line = one_line_error(polchain(*args, "--key", str(typo), timeout=30))   # a node that starts would run on
    assert f"--key {typo}: no such key file" in line and "--create-key" in line, line
    assert not typo.exists() and not (tmp_path / "d").exists()


def test_a_missing_key_file_from_the_environment_is_named(tmp_path):
    line = one_line_error(polchain("node", "--datadir", str(tmp_path / "d"),
                                   env={"POLCHAIN_KEY": str(tmp_path / "k.key")}, timeout=30))
    assert line.startswith(f"error: POLCHAIN_KEY {tmp_path / 'k.key'}: no such key file"), line
    assert not (tmp_path / "k.key").exists()


def test_an_unreadable_key_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    for args in (("mine", "--preset", "tiny", "--datadir", str(tmp_path / "d")),
                 ("pol", "register", str(tmp_path / "no-proof"))):
        line = one_line_error(polchain(*args, "--key", str(bad)))
        assert "is not an unencrypted PEM private key" in line, line


# -- 31.5: the datadir remembers its dataset directory ------------------------------------------------
@pytest.mark.slow
def test_the_datadir_remembers_its_dataset_dir(tmp_path):
    d, data = tmp_path / "d", tmp_path / "elsewhere"
    key = tmp_path / "new.key"
    r = polchain("mine", "--preset", "tiny", "--blocks", "1", "--datadir", str(d), "--dataset-dir", str(data),
                 "--key", str(key), "--create-key")
    assert r.returncode == 0, r.stderr
    assert key.exists()                                         # --create-key made it (31.4)
    assert f"dataset directory {data} remembered in {d / 'polchain.toml'}" in r.stderr
    # every later command on the datadir finds it without --dataset-dir
    shown = polchain("node", "--datadir", str(d), "--show-config")
    assert f'dataset_dir = "{data}"  # from {d / "polchain.toml"}' in shown.stdout, shown.stdout
    r = polchain("verify", "--datadir", str(d))
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr
    assert f"dataset directory {data} (from {d / 'polchain.toml'})" in r.stderr
    # an explicit flag still wins, and the remembered value is left as it was
    other = tmp_path / "other"
    shown = polchain("node", "--datadir", str(d), "--dataset-dir", str(other), "--show-config")
    assert f'dataset_dir = "{other}"  # from --dataset-dir' in shown.stdout, shown.stdout
    r = polchain("verify", "--datadir", str(d), "--dataset-dir", str(other))
    assert r.returncode == 0 and "dataset directory" not in r.stderr, r.stderr
    assert (d / "polchain.toml").read_text().count("dataset_dir") == 1
    assert f'dataset_dir = "{data}"' in (d / "polchain.toml").read_text()


@pytest.mark.slow
def test_the_default_dataset_dir_is_not_written(tmp_path):
    d = tmp_path / "d"
    r = polchain("mine", "--preset", "tiny", "--blocks", "1", "--datadir", str(d), "--dataset-dir", str(d / "data"))
    assert r.returncode == 0, r.stderr
    assert not (d / "polchain.toml").exists()


def test_remembering_keeps_what_the_config_file_holds(tmp_path):
    from node.settings import remember_dataset_dir, stored_dataset_dir
    d = tmp_path / "d"
    d.mkdir()
    (d / "polchain.toml").write_text("# mine\nport = 8001")          # no newline at the end
    assert remember_dataset_dir(d, tmp_path / "x")
    assert not remember_dataset_dir(d, tmp_path / "y")                # one already there: left alone
    text = (d / "polchain.toml").read_text()
    assert text.startswith("# mine\nport = 8001\n") and stored_dataset_dir(d) == (tmp_path / "x").resolve()


# -- a stand-in node API for `polchain status` --------------------------------------------------------
STATUS = {"chain_id": "ab" * 32, "preset": "tiny", "height": 3, "tip": "cd" * 32, "difficulty": 8, "peers": 0,
          "peers_known": 0, "syncing": False, "tip_accuracy": {"correct": 60, "of": 500}, "mining": {"enabled": False},
          "version": "0.1.0", "last_block_age_s": 5.0, "sync": {"best_peer_height": None}}
BANNED = [{"url": "http://127.0.0.1:8001", "state": "banned", "height": None, "failures": 0,
           "banned_until": 4e9, "ban_reason": "other-chain", "source": "configured"}]


@pytest.fixture
def fake_node():
    """A real HTTP server on 127.0.0.1 standing in for a node's API (GET /status, GET /peers)."""
    from tests.p2p.util import FakePeer
    with FakePeer() as node:
        node.serve_json("/status", STATUS)
        node.serve_json("/peers", BANNED)
        yield node


# -- 31.6: no tracebacks: a closed pipe, a spec field out of range ------------------------------------
def _into_a_closed_pipe(*args: str):
    import os
    import subprocess
    import sys

    from tests.nodeproc import REPO, node_env
    r, w = os.pipe()
    os.close(r)                                        # `| head` that has already exited
    try:
        return subprocess.run([sys.executable, "-m", "node.cli", *args], stdout=w, stderr=subprocess.PIPE,
                              text=True, cwd=REPO, env=node_env(), timeout=120)
    finally:
        os.close(w)


def test_output_into_a_closed_pipe_ends_quietly(fake_node):
    for args in (("spec",), ("status", "--node", f"127.0.0.1:{fake_node.port}")):
        r = _into_a_closed_pipe(*args)
        assert r.stderr == "" and r.returncode == 141, (args, r.returncode, r.stderr[-2000:])   # as SIGPIPE would
    r = _into_a_closed_pipe("node", "--help")                       # argparse's own output: quiet too
    assert r.stderr == "" and r.returncode in (0, 141), (r.returncode, r.stderr[-2000:])


def _spec_with(tmp_path, section: str, name: str, value) -> str:
    from consensus.spec import preset
    d = preset("tiny").to_dict()
    d[section][name] = value
    p = tmp_path / f"{section}-{name}.json"
    p.write_text(json.dumps(d))
    return str(p)


@pytest.mark.parametrize("section, name, value", [
    ("dataset", "train_size", -5), ("training", "batch_size", 0), ("evaluation", "size", 0),
    ("evaluation", "size", 2001), ("difficulty", "initial", 0), ("training", "lr", "-0.01"),
    ("training", "std", ["0.25", "0", "0.25"]), ("time", "mtp_window", 0), ("limits", "max_header_bytes", 0),
])
def test_a_spec_field_out_of_range_is_one_line_naming_it(tmp_path, section, name, value):
    spec = _spec_with(tmp_path, section, name, value)
    line = one_line_error(polchain("node", "--spec", spec, "--datadir", str(tmp_path / "d"), timeout=30))
    assert line.startswith(f"error: --spec {spec}: malformed chain spec: {section}.{name} = "), line
    assert "out of range" in line and not (tmp_path / "d" / "chain.sqlite").exists()


def test_mine_names_the_field_too(tmp_path):
    spec = _spec_with(tmp_path, "dataset", "train_size", -5)
    line = one_line_error(polchain("mine", "--spec", spec, "--datadir", str(tmp_path / "d")))
    assert "dataset.train_size = -5 is out of range: at least 1" in line, line


def test_every_numeric_spec_field_has_a_range():
    import dataclasses

    from consensus.spec import DECIMAL_FIELDS, DECIMAL_RANGES, INT_RANGES, ChainSpec, preset

    def fields(obj, path=""):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            yield from fields(v, f"{path}{f.name}.") if dataclasses.is_dataclass(v) else [(path + f.name, f.type)]

    ints = {name for name, kind in fields(preset("tiny")) if kind == "int"}
    assert ints == set(INT_RANGES) and DECIMAL_FIELDS == set(DECIMAL_RANGES)
    for name in ("tiny", "cifar10-resnet18", "dgg-paper"):          # the presets are in range
        assert ChainSpec.from_json(preset(name).to_json()) == preset(name)


# -- 31.9: why a node has no peers; --node HOST:PORT ----------------------------------------------------
def test_status_says_a_peer_is_banned_and_takes_host_port(fake_node):
    r = polchain("status", "--node", f"localhost:{fake_node.port}")
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(None, 1) for line in r.stdout.splitlines() if line.strip())
    assert fields["node"].startswith(f"http://localhost:{fake_node.port}")
    assert fields["sync"] == "alone: no peers; 1 peer banned: other chain (http://127.0.0.1:8001)", r.stdout
    assert fields["peers"] == "0  (1 peer banned: other chain (http://127.0.0.1:8001))", r.stdout


def test_node_addresses_without_a_scheme():
    from node.cli import build_parser
    from node.cli_ops import node_url
    assert node_url("localhost:8000") == "http://localhost:8000" and node_url("10.0.0.2") == "http://10.0.0.2:8000"
    assert node_url("[::1]:9000") == "http://[::1]:9000" and node_url("https://h.example/") == "https://h.example"
    args = build_parser().parse_args(["pol", "register", "p", "--node", "127.0.0.1:8001"])
    assert args.node == "http://127.0.0.1:8001"
    for bad in ("", "a b", "host:99999", "ftp://host", "http://"):
        line = one_line_error(polchain("status", "--node", bad))
        assert "argument --node: " in line and "is not a node address" in line, line


@pytest.mark.slow
def test_a_peer_on_another_chain_shows_as_banned(tmp_path):
    """The real thing: node a peers with b, which runs another chain; a bans b ("other-chain") and
    `polchain status` says so, where it said only "alone: no peers"."""
    import dataclasses

    from consensus.spec import preset
    from tests.nodeproc import NodeProc
    other = tmp_path / "other.json"
    other.write_text(dataclasses.replace(preset("tiny"), name="tiny-other").to_json())
    b = NodeProc(tmp_path / "b", "--spec", str(other)).start()
    a = NodeProc(tmp_path / "a", "--preset", "tiny", "--peer", b.url, "--poll-interval", "0.5").start()
    try:
        a.wait_for(lambda: any(p["state"] == "banned" for p in a.peers()), timeout=60, what="b banned")
        r = polchain("status", "--node", f"127.0.0.1:{a.port}")
        assert r.returncode == 0, r.stderr
        assert f"1 peer banned: other chain ({b.url}" in r.stdout, r.stdout
    finally:
        a.stop()
        b.stop()


# -- 31.7: numeric flags out of range; a testnet stopped before it ran ---------------------------------
@pytest.mark.parametrize("args, flag", [
    (("mine", "--preset", "tiny", "--blocks", "-1", "--datadir", "{d}"), "--blocks"),
    (("mine", "--preset", "tiny", "--seed", "-3", "--datadir", "{d}"), "--seed"),
    (("testnet", "--nodes", "0", "--datadir", "{d}"), "--nodes"),
    (("testnet", "--until-height", "-1", "--duration", "5", "--datadir", "{d}"), "--until-height"),
    (("testnet", "--duration", "0", "--datadir", "{d}"), "--duration"),
    (("testnet", "--threads", "0", "--duration", "5", "--datadir", "{d}"), "--threads"),
    (("testnet", "--base-port", "70000", "--duration", "5", "--datadir", "{d}"), "--base-port"),
    (("spec", "--k", "0"), "--k"),
    (("bench", "mine", "--k", "-2"), "--k"),
    (("bench", "mine", "--runs", "0"), "--runs"),
    (("bench", "mine", "--seconds", "-1"), "--seconds"),
    (("node", "--keep-weights", "0", "--datadir", "{d}"), "--keep-weights"),
])
def test_numeric_flags_out_of_range_are_one_line(tmp_path, args, flag):
    args = [a.format(d=tmp_path / "d") for a in args]
    line = one_line_error(polchain(*args, timeout=60))
    assert flag in line and "Traceback" not in line, line
    assert not (tmp_path / "d" / "chain.sqlite").exists() and not (tmp_path / "d" / "node0").exists()


def _testnet_stopped_at_once(tmp_path, *extra: str):
    """`polchain testnet` with one node, Ctrl-C as soon as it has spawned the node (long before the node
    has imported torch and answers)."""
    import signal
    import subprocess
    import sys

    from tests.nodeproc import REPO, free_port, node_env
    proc = subprocess.Popen([sys.executable, "-m", "node.cli", "testnet", "--nodes", "1", "--datadir",
                             str(tmp_path / "tn"), "--base-port", str(free_port()), *extra], cwd=REPO, env=node_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if " pid " in line:
                proc.send_signal(signal.SIGINT)
                break
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(out) + rest, err


def test_a_testnet_stopped_before_its_nodes_came_up_says_so(tmp_path):
    rc, out, err = _testnet_stopped_at_once(tmp_path)
    assert rc == 1, (rc, out, err)
    last = out.strip().splitlines()[-1]
    assert last.startswith("stopped 1 node after ") and "by SIGINT before it came up (0 of 1 answered)" in last, out
    assert '"ok": true' not in out and "{" not in out                    # words, no JSON claim of success


def test_a_testnet_stopped_before_its_nodes_came_up_json(tmp_path):
    rc, out, err = _testnet_stopped_at_once(tmp_path, "--json")
    summary = json.loads(out.strip().splitlines()[-1])
    assert rc == 1 and summary["ok"] is False and summary["came_up"] == 0 and summary["heights"] == [None], out


def test_testnet_summary_in_words():
    from node.cli_testnet import summary_line
    up = {"nodes": ["a", "b", "c"], "came_up": 3, "heights": [10, 10, 10], "tips": ["ab" * 32] * 3,
          "seconds": 65.2, "reached_after": 33.9}
    line = summary_line(up, Path("/tn"))
    assert line == f"stopped 3 nodes after 1m05s: heights 10/10/10, one tip {'ab' * 8} (shared after 33.9s); " \
                   "logs in /tn/node*.log", line
    forked = dict(up, heights=[10, 9, None], tips=["ab" * 32, "cd" * 32, None], reached_after=None)
    assert "heights 10/9/-, tips differ;" in summary_line(forked, Path("/tn"))


# -- 31.11: bench mine says its data is generated, and how far it is ------------------------------------
def test_bench_mine_says_up_front_that_its_data_is_generated(tmp_path):
    from consensus.spec import preset
    d = preset("tiny").to_dict()
    d["dataset"] = preset("cifar10-resnet18").to_dict()["dataset"]      # CIFAR-10, which is not here
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(d))
    (tmp_path / "empty").mkdir()
    r = polchain("bench", "mine", "--spec", str(spec), "--device", "cpu", "--k", "2", "--runs", "1", "--seconds", "60",
                 "--threads", "1", "--json", "--dataset-dir", str(tmp_path / "empty"))
    assert r.returncode == 0, r.stderr
    err = r.stderr.splitlines()
    note = next(i for i, line in enumerate(err) if line.startswith("data: generated (CIFAR-10 unavailable)"))
    plan = next(i for i, line in enumerate(err) if line.startswith("bench mine: tiny-cnn on cpu at k=2"))
    first_round = next(i for i, line in enumerate(err) if line.startswith("warm-up"))
    assert note < plan < first_round and "speeds only" in err[note], err
    assert json.loads(r.stdout)["data"] == "generated (CIFAR-10 unavailable)"


def test_bench_mine_round_prints_progress_while_it_runs(capsys, monkeypatch):
    from bench import mine
    from consensus.data import load_dataset
    from consensus.spec import preset
    from consensus.training import genesis_state
    from miner.search import make_miner
    spec = preset("tiny")
    miner = make_miner("fast", spec, load_dataset(spec.dataset, None), device="cpu", seed=0)
    monkeypatch.setattr(mine, "HEARTBEAT_S", 0.2)
    r = mine.mine_round(miner, mine.stand_in_job(0, 40, 0), genesis_state(spec), 1.5, "cpu", label="round 1/1 fast")
    assert not r["block"]
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("  round 1/1 fast: ")]
    assert lines and "candidates so far" in lines[-1] and "of the 1.5 s cap" in lines[-1], lines


def test_readme_bench_mine_example_is_cpu_sized():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("polchain bench mine"))
    assert "--preset cifar10-resnet18" in line and "--k 4" in line, line


# -- 31.14: --log-file; verify's rate on slow blocks -----------------------------------------------------
@pytest.mark.slow
def test_node_log_file(tmp_path):
    from tests.nodeproc import NodeProc
    log = tmp_path / "logs" / "node.log"
    node = NodeProc(tmp_path / "d", "--preset", "tiny", "--log-file", str(log)).start()
    try:
        node.wait_for(lambda: "node up" in log.read_text(), timeout=30, what="node up in the log file")
    finally:
        assert node.stop() == 0
    text = log.read_text()
    up = next(line for line in text.splitlines() if "node up" in line)
    assert " INFO polchain.node: node up: chain " in up and up in node.log_text()   # the stderr line, the same
    assert "node stopped cleanly" in text
    line = one_line_error(polchain("node", "--datadir", str(tmp_path / "e"), "--log-file", str(tmp_path)))
    assert line.startswith(f"error: --log-file {tmp_path}: cannot open it"), line


def test_progress_shows_seconds_per_block_under_one_a_second():
    import io

    from node.progress import Progress
    now = [0.0]
    bar = Progress(None, "verify", stream=io.StringIO(), enabled=False, clock=lambda: now[0])
    now[0] = 17.0
    bar.done = 2
    assert bar.line(now[0]) == "verify 2  8.5 s/block"
    now[0] = 2.0
    bar.done = 10
    assert bar.line(now[0]) == "verify 10  5.0/s"
    bar = Progress(20, "verify", stream=io.StringIO(), enabled=False, clock=lambda: 0.0)
    bar.done = 1
    assert "0.0/s" not in bar.line(40.0) and "40.0 s/block  eta 760s" in bar.line(40.0)
