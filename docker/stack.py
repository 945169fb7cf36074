#!/usr/bin/env python3
"""Start-up of the containers of docker-compose.yml, under compose and under `docker stack deploy`.

In the image as ``polchain-stack``:

  polchain-stack setup    the one-shot ``dataset`` service: write the stack's chain spec (a given spec
                          file, or the preset with an optional local archive and k), fetch or check its
                          dataset into the shared dataset directory, then move the spec into place
  polchain-stack node     a node: wait until that spec is in place (or take the spec from a peer that
                          answers: a host of a swarm that ran no setup), then exec ``polchain node``
  polchain-stack health   the healthcheck: healthy while waiting for the spec and while the node starts
                          (until its API first answers, at most POLCHAIN_STACK_START_GRACE s: one passing
                          check ends Docker's start_period, and importing torch and loading the dataset
                          take a while), then while the API answers /health with 200 or 503 "syncing"
                          (alive; a long sync is no reason for swarm to kill the task)

Swarm ignores ``depends_on`` and starts every service at once, so the nodes wait here instead; compose
does the same. A node whose datadir already holds a chain starts at once on it.

Environment (defaults in brackets):
  POLCHAIN_STACK_SPEC   where setup writes the spec and nodes wait for it [/data/datasets/stack/spec.json]
  POLCHAIN_STACK_WAIT   seconds a node waits for it before exiting 1 (its restart policy retries) [3600]
  POLCHAIN_STACK_START_GRACE   seconds a started node may take before its API answers [600]
  POLCHAIN_PRESET       setup: preset when no spec file is given [tiny]
  POLCHAIN_K            setup: difficulty k for the preset (e.g. 4 for ResNet-18 on CPUs) [the preset's]
  STACK_INPUT_SPEC      setup: a spec file (bind-mounted; /dev/null or empty = none) [/input/spec.json]
  STACK_INPUT_ARCHIVE   setup: a CIFAR-10 archive in the official layout [/input/dataset.tar.gz]
  POLCHAIN_DATASET_DIR  the shared dataset directory [/data/datasets]
  POLCHAIN_DATADIR, POLCHAIN_PEERS, POLCHAIN_PORT   as for `polchain node`
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

WAITING_MARK = Path(tempfile.gettempdir()) / "polchain-stack-waiting"    # exists while a node waits for the spec
STARTED_MARK = Path(tempfile.gettempdir()) / "polchain-stack-started"    # its mtime: when `polchain node` started
ANSWERED_MARK = Path(tempfile.gettempdir()) / "polchain-stack-answered"  # the API has answered once


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


def say(msg: str) -> None:
    print(f"polchain-stack: {msg}", file=sys.stderr, flush=True)


def given(path: Path) -> bool:
    """A bind-mounted input counts when it is a non-empty regular file (/dev/null is the "none")."""
    return path.is_file() and path.stat().st_size > 0


# -- setup (the one-shot dataset service) --------------------------------------------------
def setup() -> int:
    out = Path(env("POLCHAIN_STACK_SPEC", "/data/datasets/stack/spec.json"))
    dataset_dir = Path(env("POLCHAIN_DATASET_DIR", "/data/datasets"))
    spec_in = Path(env("STACK_INPUT_SPEC", "/input/spec.json"))
    archive_in = Path(env("STACK_INPUT_ARCHIVE", "/input/dataset.tar.gz"))
    preset, k = env("POLCHAIN_PRESET", "tiny"), env("POLCHAIN_K")
    if k and not k.isdigit():
        say(f"error: POLCHAIN_K={k!r} is not a whole number")
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    if given(archive_in):   # nodes find an archive in the dataset directory by its MD5, under any *.tar.gz name
        dest = dataset_dir / "stack-input.tar.gz"
        if not (dest.is_file() and dest.stat().st_size == archive_in.stat().st_size):
            shutil.copyfile(archive_in, dest.with_name(dest.name + ".part"))
            os.replace(dest.with_name(dest.name + ".part"), dest)
        say(f"dataset archive from POLCHAIN_DATASET_ARCHIVE: {archive_in.stat().st_size} bytes -> {dest}")
    if given(spec_in):
        if k:
            say("error: POLCHAIN_K and POLCHAIN_SPEC both set: a spec file fixes k (`polchain spec --k K`)")
            return 2
        shutil.copyfile(spec_in, tmp)
        say(f"spec from POLCHAIN_SPEC ({spec_in.stat().st_size} bytes)")
    else:
        cmd = ["polchain", "spec", "--preset", preset, "-o", str(tmp)]
        if given(archive_in):
            cmd += ["--dataset-archive", str(archive_in)]
        if k:
            cmd += ["--k", k]
        say("writing the spec: " + " ".join(cmd[1:]))
        rc = subprocess.call(cmd)
        if rc:
            return rc
    # a throwaway chain loads the dataset (downloads the official archive when the spec names it and no
    # file in the dataset directory has its MD5) and checks the spec; the nodes then find it in place
    with tempfile.TemporaryDirectory() as scratch:
        rc = subprocess.call(["polchain", "mine", "--blocks", "0", "--datadir", str(Path(scratch) / "check"),
                              "--spec", str(tmp), "--dataset-dir", str(dataset_dir)])
    if rc:
        say(f"error: the spec or its dataset did not check out (exit {rc}); the nodes keep waiting")
        tmp.unlink(missing_ok=True)
        return rc
    os.replace(tmp, out)
    spec = json.loads(out.read_text())
    say(f"ready: {out} ({spec.get('name')}, initial k = {spec.get('difficulty', {}).get('initial', '?')}); nodes start now")
    return 0


# -- node ----------------------------------------------------------------------------------
def peer_spec(peers: list[str], timeout: float = 5.0) -> dict | None:
    """The chain spec of the first peer that answers GET /spec with a JSON object, else None."""
    for url in peers:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/spec", timeout=timeout) as r:
                obj = json.loads(r.read())
        except (OSError, ValueError, urllib.error.URLError):
            continue
        if isinstance(obj, dict) and obj.get("name"):
            return obj
    return None


def wait_for_spec(spec_path: Path, datadir: Path, peers: list[str], wait_s: float,
                  poll_s: float = 2.0) -> Path | None:
    """The spec file to start with: the stack's once it exists, or one taken from a peer (written into
    the datadir). None when neither came within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    said = 0.0
    while True:
        if spec_path.is_file():
            return spec_path
        obj = peer_spec(peers) if peers else None
        if obj is not None:
            datadir.mkdir(parents=True, exist_ok=True)
            taken = datadir / "peer-spec.json"
            taken.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
            say(f"spec {obj.get('name')} taken from a peer (no local setup ran on this host)")
            return taken
        now = time.monotonic()
        if now >= deadline:
            return None
        if now - said >= 30:
            say(f"waiting for {spec_path} (the dataset service writes it)"
                + (f" or a peer's /spec ({', '.join(peers)})" if peers else "")
                + f"; {deadline - now:.0f} s left")
            said = now
        time.sleep(poll_s)


def node(argv: list[str]) -> int:
    datadir = Path(env("POLCHAIN_DATADIR", "/data/node"))
    spec_path = Path(env("POLCHAIN_STACK_SPEC", "/data/datasets/stack/spec.json"))
    peers = env("POLCHAIN_PEERS").replace(",", " ").split()
    wait_s = float(env("POLCHAIN_STACK_WAIT", "3600"))
    cmd = ["polchain", "node", *argv]
    os.environ.pop("POLCHAIN_PRESET", None)        # the spec decides
    if (datadir / "spec.json").is_file():           # a restart: the datadir knows its chain
        os.environ.pop("POLCHAIN_SPEC", None)
        say(f"{datadir} holds a chain; starting on it")
    else:
        WAITING_MARK.write_text(str(os.getpid()))
        try:
            found = wait_for_spec(spec_path, datadir, peers, wait_s)
        finally:
            WAITING_MARK.unlink(missing_ok=True)
        if found is None:
            say(f"error: no spec at {spec_path} after {wait_s:.0f} s (is the dataset service failing? "
                "`docker service logs` / `docker compose logs dataset`)")
            return 1
        os.environ["POLCHAIN_SPEC"] = str(found)
    sys.stdout.flush()
    STARTED_MARK.write_text(str(os.getpid()))
    ANSWERED_MARK.unlink(missing_ok=True)
    os.execvp(cmd[0], cmd)


# -- healthcheck -----------------------------------------------------------------------------
def health() -> int:
    if WAITING_MARK.exists():
        print("waiting for the stack's spec")
        return 0
    url = f"http://127.0.0.1:{env('POLCHAIN_PORT', '8000')}/health"
    try:
        with urllib.request.urlopen(url, timeout=4) as r:
            ANSWERED_MARK.touch()
            print(r.read().decode()[:200])
            return 0
    except urllib.error.HTTPError as exc:
        ANSWERED_MARK.touch()
        body = exc.read().decode(errors="replace")[:200]
        print(f"{exc.code} {body}")
        return 0 if exc.code == 503 and '"syncing"' in body else 1
    except OSError as exc:
        grace = float(env("POLCHAIN_STACK_START_GRACE", "600"))
        try:
            age = time.time() - STARTED_MARK.stat().st_mtime
        except OSError:
            age = None
        if age is not None and age < grace and not ANSWERED_MARK.exists():
            print(f"starting ({age:.0f} s of {grace:.0f}): no answer from {url} yet")
            return 0
        print(f"no answer from {url}: {exc}")
        return 1


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("setup", "node", "health"):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    if argv[0] == "setup":
        return setup()
    if argv[0] == "health":
        return health()
    return node(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
