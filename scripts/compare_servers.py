"""Servers under silent and slow connections (docs/security.md, "The connection layer"): uvicorn as the node
ran it before issue 30.1, hypercorn, granian, and the node's own accept loop (node/connections.py), each
serving the same tiny ASGI app on loopback.

    python scripts/compare_servers.py --other-bin /tmp/altvenv/bin      # a venv with hypercorn and granian

(hypercorn and granian are not dependencies of the node: install them into another venv; without
``--other-bin`` only uvicorn and ours run.) Three phases per server, one JSON line each:

* ``flood``: 1,000 silent sockets from 127.0.3.1-250 (one /24), reopened each second as they close
  (tests/adversarial/idle_sockets.py), a bystander's ``GET /`` on a fresh connection every 50 ms from
  127.0.4.9: its p99 quiet and attacked, and what became of the sockets;
* ``slowloris``: 10 sockets sending one header byte a second for 25 s: when each was closed;
* ``files``: the server at ``ulimit -n 1024`` facing 1,200 silent sockets from 10 /24s: probes from
  127.0.0.1 (trusted by the node) and from a stranger's /24.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.adversarial.test_connections import Prober, p99  # noqa: E402

APP = '''
BODY = b'{"height": 1, "tip": "' + b"0" * 64 + b'", "pad": "' + b"x" * 400 + b'"}'
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
'''
UVICORN = '''
import sys, uvicorn
from tinyapp import app
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", timeout_keep_alive=5,
            limit_concurrency=256)
'''
OURS = '''
import sys, uvicorn
from node.cli_node import _server_class, bind_port
from node.connections import ConnectionGate, ConnectionLimits
from tinyapp import app
gate = ConnectionGate(ConnectionLimits(), ["127.0.0.1", "::1"], lambda host: False, cap_local_networks=True)
config = uvicorn.Config(app, log_level="warning", timeout_keep_alive=5, limit_concurrency=None)
_server_class()(config, gate).run(sockets=[bind_port("127.0.0.1", int(sys.argv[1]))])
'''


def servers(work: Path, other: Path | None) -> dict[str, list[str]]:
    py = sys.executable
    out = {"uvicorn 256 (before)": [py, str(work / "run_uvicorn.py"), "{port}"],
           "ours": [py, str(work / "run_ours.py"), "{port}"]}
    if other is not None:
        out["hypercorn --read-timeout 5"] = [str(other / "hypercorn"), "--bind", "127.0.0.1:{port}", "--read-timeout",
                                             "5", "--keep-alive", "5", "--log-level", "warning", "tinyapp:app"]
        out["granian --http1-header-read-timeout 10000"] = [
            str(other / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}",
            "--http1-header-read-timeout", "10000", "--log-level", "warning", "tinyapp:app"]
    return out


def start(cmd: list[str], port: int, work: Path, files: int | None = None) -> subprocess.Popen:
    def limit() -> None:
        if files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(work), str(REPO)))}
    proc = subprocess.Popen([c.format(port=port) for c in cmd], cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=limit)
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{cmd[0]} did not start")


def attack(port: int, ips: str, count: int, seconds: float, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.adversarial.idle_sockets", "127.0.0.1", str(port), "--ips",
                             ips, "--count", str(count), "--seconds", str(seconds), *extra], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)


def ms(x: float | None) -> float | None:
    return None if x is None or x != x else round(x * 1e3, 1)


def flood(url: str, port: int) -> dict:
    with Prober(url, "127.0.4.9") as quiet:
        time.sleep(5)
    proc = attack(port, "127.0.3.1-250", 1000, 14)
    time.sleep(1)
    with Prober(url, "127.0.4.9") as attacked:
        time.sleep(11)
    got = json.loads(proc.communicate()[0])
    held = [c["held"] for c in got["closed"]]
    later = [h for h in held if h >= 1]
    return {"quiet_p99_ms": ms(p99(quiet.lat)), "attacked": attacked.outcomes, "attacked_p99_ms": ms(p99(attacked.lat)),
            "attacked_median_ms": ms(statistics.median(attacked.lat)) if attacked.lat else None,
            "connects": got["opened"], "closed_at_once": sum(h < 1 for h in held), "closed_later": len(later),
            "closed_later_s": [min(later, default=None), max(later, default=None)],
            "open_at_end": len(got["open_ages"])}


def slowloris(port: int) -> dict:
    proc = attack(port, "127.0.5.1-10", 10, 25, "--trickle", "1")
    got = json.loads(proc.communicate()[0])
    return {"closed_after_s": sorted(c["held"] for c in got["closed"]), "open_after_25_s": len(got["open_ages"])}


def files(url: str, port: int) -> dict:
    proc = attack(port, ",".join(f"127.0.{n}.1-25" for n in range(10, 20)), 1200, 12)
    time.sleep(1.5)
    with Prober(url, "127.0.0.1", every=0.1) as trusted, Prober(url, "127.0.30.1", every=0.1) as stranger:
        time.sleep(9)
    json.loads(proc.communicate()[0])
    return {"from_127.0.0.1": trusted.outcomes, "p99_ms": ms(p99(trusted.lat)), "stranger": stranger.outcomes}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--other-bin", type=Path, default=None, help="bin directory of a venv with hypercorn and granian")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "tinyapp.py").write_text(APP)
        (work / "run_uvicorn.py").write_text(UVICORN)
        (work / "run_ours.py").write_text(OURS)
        port = 18900 + os.getpid() % 500
        for name, cmd in servers(work, a.other_bin).items():
            for phase in ("flood", "slowloris", "files"):
                if phase == "files" and name.startswith("uvicorn"):
                    continue
                port += 1
                proc = start(cmd, port, work, files=1024 if phase == "files" else None)
                url = f"http://127.0.0.1:{port}"
                try:
                    row = flood(url, port) if phase == "flood" else slowloris(port) if phase == "slowloris" \
                        else files(url, port)
                finally:
                    proc.terminate()
                    proc.wait(10)
                print(json.dumps({"server": name, "phase": phase, **row}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
