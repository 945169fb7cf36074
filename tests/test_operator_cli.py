"""The operator's first hour, with real `polchain` processes: one-line errors (exit 2) for bad flags
and variables, a taken port refused at once, one process per datadir, the config file, `polchain
status`, `polchain keys`, `--version`, `node --help`, and progress bars only on a terminal."""
from __future__ import annotations

import io
import os
import select
import socket
import stat
import subprocess
import sys
import time

import pytest

from node.progress import Progress
from tests.nodeproc import REPO, NodeProc, free_port, node_env, patient
from tests.chain_spec import TINY_TEST_ARGS


def polchain(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=REPO, env={**node_env(), **(env or {})},
                          capture_output=True, text=True, timeout=patient(timeout))


def one_line_error(r: subprocess.CompletedProcess, rc: int = 2) -> str:
    assert r.returncode == rc, (r.returncode, r.stdout, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def miner(tmp_path_factory):
    root = tmp_path_factory.mktemp("operator")
    key = root / "miner.key"
    r = polchain("keys", "new", "--key", str(key))
    assert r.returncode == 0, r.stderr
    node = NodeProc(root / "data", *TINY_TEST_ARGS, "--mine", "--key", str(key)).start()
    node.key_file = key
    node.key_public = r.stdout.split()[2]
    yield node
    node.stop()


@pytest.mark.parametrize("args,env,message", [
    (("node", "--preset", "nonexistent"), {}, "unknown preset 'nonexistent'"),
    (("node",), {"POLCHAIN_PORT": "abc"}, "POLCHAIN_PORT='abc': expected an integer"),
    (("node",), {"POLCHAIN_MINE": "maybe"}, "POLCHAIN_MINE='maybe': expected true or false"),
    (("node", "--no-such-flag"), {}, "unrecognized arguments: --no-such-flag"),
])
def test_bad_flags_and_variables_are_one_line_errors(tmp_path, args, env, message):
    r = polchain(*args, "--datadir", str(tmp_path / "d"), env=env)
    assert message in one_line_error(r)
    assert not (tmp_path / "d" / "chain.sqlite").exists()       # nothing was started


def test_taken_port_is_refused_before_anything_starts(tmp_path):
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        t0 = time.monotonic()
        r = polchain("node", "--datadir", str(tmp_path / "d"), "--port", str(port))
        took = time.monotonic() - t0
    assert f"port {port} on 127.0.0.1 is already in use" in one_line_error(r)
    # refused before anything started: no datadir, no chain opened (a time bound would say nothing more
    # and fails on a loaded machine)
    assert "node up" not in r.stdout + r.stderr and not (tmp_path / "d").exists()
    print(f"FIGURES taken port refused in {took:.1f} s")


def test_one_process_per_datadir(miner):
    for args in (("node", "--port", str(free_port())), ("verify",), ("mine", "--blocks", "1")):
        r = polchain(*args, "--datadir", str(miner.datadir))
        assert "is in use by another polchain process (pid" in one_line_error(r), args
    assert miner.alive()


def test_status_command(miner):
    miner.wait_height(1, timeout=120)
    before = miner.status()["height"]
    r = polchain("status", "--node", miner.url)
    assert r.returncode == 0, r.stderr
    st = miner.status()
    fields = dict(line.split(None, 1) for line in r.stdout.splitlines() if line.strip() and "key" not in line)
    height_shown = int(fields["height"].split()[0])
    assert before <= height_shown <= st["height"]       # the height at the moment of the call (the miner goes on)
    assert fields["mining"].startswith("on cpu") and "last block" in fields["height"]
    assert miner.key_public in r.stdout and "k=" in fields["difficulty"] and "on E" in fields["accuracy"]
    assert r.stderr == ""
    down = polchain("status", "--node", f"http://127.0.0.1:{free_port()}")
    assert "cannot reach a node at" in one_line_error(down, rc=1)


def test_mining_node_reports_its_search(miner):
    st = miner.status()
    cur = st["mining"]["current"]
    assert st["miner_key"] == miner.key_public
    assert cur is None or (cur["height"] >= st["height"] and cur["expected_attempts"] == 2 ** cur["difficulty"]
                           and cur["r_hits"] >= cur["acc_floor_failed"] + cur["acc_borderline_failed"])
    assert st["last_block_age_s"] is None or st["last_block_age_s"] >= 0


def test_keys_new_and_show(tmp_path, miner):
    key = tmp_path / "k" / "owner.key"
    r = polchain("keys", "new", "--key", str(key), "--json")
    assert r.returncode == 0, r.stderr
    import json
    info = json.loads(r.stdout)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and info["mode"] == "0600" and info["created"]
    shown = json.loads(polchain("keys", "show", "--key", str(key), "--json").stdout)
    assert shown["public_key"] == info["public_key"] and len(info["public_key"]) == 64
    before = key.read_bytes()
    assert "already exists" in one_line_error(polchain("keys", "new", "--key", str(key)))
    assert key.read_bytes() == before
    # the default is the node's own key, DATADIR/node.key; the node mines with --key's
    assert miner.key_public in polchain("keys", "show", "--key", str(miner.key_file)).stdout
    polchain("keys", "new", "--datadir", str(tmp_path / "dd"))
    assert stat.S_IMODE(os.stat(tmp_path / "dd" / "node.key").st_mode) == 0o600
    assert "no key at" in one_line_error(polchain("keys", "show", "--datadir", str(tmp_path / "empty")))
    os.chmod(key, 0o644)
    assert "readable by others" in polchain("keys", "show", "--key", str(key)).stdout


@pytest.mark.slow
def test_config_file_in_the_datadir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    port = free_port()
    (d / "polchain.toml").write_text(f"port = {port}\nmax_peers = 5\npoll_interval = 0.5\n")
    shown = polchain("node", "--datadir", str(d), "--show-config", env={"POLCHAIN_POLL_INTERVAL": "0.25"})
    assert shown.returncode == 0, shown.stderr
    assert f"port = {port}  # from {d / 'polchain.toml'}" in shown.stdout
    assert "poll_interval = 0.25  # from POLCHAIN_POLL_INTERVAL" in shown.stdout
    assert "max_peers = 5" in shown.stdout and "mine = false  # from default" in shown.stdout
    # a real node takes its port from the file (NodeProc passes --port: give it the same one)
    node = NodeProc(d, port=port)
    node.command = lambda: [sys.executable, "-m", "node.cli", "node", "--datadir", str(d), "--threads", "1"]
    node.start()
    try:
        assert node.status()["height"] == 0
    finally:
        assert node.stop() == 0


def test_version_help_and_verify_on_an_empty_dir(tmp_path):
    from node import __version__
    r = polchain("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"polchain {__version__}"
    text = polchain("node", "--help").stdout
    for flag in ("--datadir", "--data-dir", "--port", "--peer", "--mine", "--max-peers", "--max-body-bytes",
                 "--keep-weights", "--poll-interval", "--config", "--show-config"):
        assert flag in text, flag
    flat = " ".join(text.split())
    assert flat.count("(default: ") >= 20 and "env POLCHAIN_PORT" in flat
    line = one_line_error(polchain("verify", "--datadir", str(tmp_path / "nothing")))
    assert "holds no chain" in line and "--preset" not in line


def test_progress_bar_only_on_a_terminal():
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            bar = Progress(10, "verify", stream=tty, interval=0)
            assert bar.enabled
            for i in range(1, 11):
                bar.update(i)
            bar.close()
        drawn = ""
        while "\n" not in drawn:                 # close() ends the line; the pty hands it over in pieces
            ready, _, _ = select.select([master], [], [], 5)
            assert ready, drawn
            drawn += os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert "verify [" in drawn and "10/10" in drawn
    pipe = io.StringIO()
    bar = Progress(10, "verify", stream=pipe, interval=0)
    for i in range(1, 11):
        bar.update(i)
    bar.close()
    assert not bar.enabled and pipe.getvalue() == ""


def test_progress_is_logged_off_a_terminal():
    """Issue 21.10: `verify` into a pipe or a log file was silent for a minute; off a terminal the
    bar's line is written as a log line every log_interval seconds (never for short work)."""
    now = [100.0]
    pipe = io.StringIO()
    bar = Progress(10, "verify", stream=pipe, log_interval=10, clock=lambda: now[0])
    for t, done in ((105, 1), (111, 3), (112, 4), (121.5, 6), (125, 10)):
        now[0] = t
        bar.update(done)
    bar.close()
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 2, lines                       # at 111 s and 121.5 s; not at the end (the verdict says it)
    assert lines[0].startswith("verify [") and "3/10" in lines[0] and "eta" in lines[0]
    assert "6/10" in lines[1] and "\r" not in pipe.getvalue()


def test_progress_lines_above_the_bar():
    """`polchain mine --blocks N`: each block's line is printed above the bar, which is redrawn below it;
    off a terminal only the lines are written."""
    tty = io.StringIO()
    bar = Progress(3, "mine", stream=tty, interval=0, enabled=True)
    bar.update(1)
    bar.print("block 1")
    out = tty.getvalue()
    assert out.index("mine [") < out.index("\r\x1b[Kblock 1\n") < out.rindex("mine [")   # bar, line, bar again
    plain = io.StringIO()
    bar = Progress(3, "mine", stream=plain, interval=0)
    bar.update(1)
    bar.print("block 1")
    bar.close()
    assert plain.getvalue() == "block 1\n"


@pytest.mark.slow
def test_an_unreachable_peer_is_said_not_in_sync(tmp_path):
    """Issue 21.7: the only peer (--peer) does not answer: `polchain status` says so (it said "in sync,
    peers 0"), and the log says it once (it said nothing)."""
    dead = f"http://127.0.0.1:{free_port()}"
    node = NodeProc(tmp_path / "d", "--peer", dead).start()
    try:
        node.wait_for(lambda: "unreachable" in node.log_text(), timeout=120, what="the unreachable-peer line")
        r = polchain("status", "--node", node.url)
        assert r.returncode == 0, r.stderr
        fields = dict(line.split(None, 1) for line in r.stdout.splitlines() if line.strip())
        assert fields["sync"] == "no peer reachable (1 known, none answering)", r.stdout
        st = node.status()
        assert (st["peers"], st["peers_known"]) == (0, 1)
        assert node.log_text().count(f"peer {dead}:80 unreachable") + node.log_text().count(f"peer {dead} unreachable") == 1
    finally:
        node.stop()


def test_sync_text_cases():
    from node.cli_ops import sync_text
    assert sync_text({"height": 5, "peers": 0, "peers_known": 0}) == "alone: no peers"
    assert sync_text({"height": 5, "peers": 2, "sync": {"best_peer_height": 5}}) == "in sync"
    assert sync_text({"height": 5, "peers": 1, "sync": {"best_peer_height": 9}}) == "behind: best peer at 9"
