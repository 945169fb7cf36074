"""`polchain bench memory`: peak RSS of a real mining node process.

A real ``polchain node --mine`` is started as a subprocess (its own datadir,
loopback port, peer discovery off) and its memory is read from
``/proc/PID/status`` every 0.25 s:

* ``VmHWM`` when ``/health`` first answers: the peak of start-up (imports,
  data loaded and checked, genesis weights hashed, the chain opened);
* then the peak counter is reset (``echo 5 > /proc/PID/clear_refs``) and read
  again at the end: the peak of the *mining* phase (fast search passes,
  canonical confirmations with two evaluations on E, building the block,
  validating it in ``Chain.submit`` and storing its 45 MB body);
* ``peak_rss_mib`` is the larger of the two: the process's peak over its life.

The node mines for at least ``--seconds`` and until ``--min-blocks`` blocks are
on its chain (``--timeout`` caps it), so every code path of a mining node runs.

``--preset cifar10-resnet18``: CIFAR-10 cannot be downloaded here, so a
CIFAR-10 archive is *generated* in the official binary layout and at the
official sizes (50,000 + 10,000 records of 3,073 bytes, random pixels and
labels, gzip) and the node's spec is the preset with ``archive_md5`` set to that
archive's MD5: the node loads it through the real CIFAR-10 decoder, so the data
occupy what real CIFAR-10 would. The initial difficulty is lowered to ``--k``
(default 2) so blocks are found on a CPU; the memory of a pass, a confirmation
or a validation does not depend on k. The output says all this.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from . import common


def register(sub) -> None:
    from consensus.spec import PRESETS
    p = sub.add_parser("memory", help="peak RSS of a real mining node process (VmHWM)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=PRESETS, default="cifar10-resnet18")
    p.add_argument("--seconds", type=float, default=120.0, help="mine at least this long (default 120)")
    p.add_argument("--min-blocks", type=int, default=1, help="and until this many blocks are mined (default 1)")
    p.add_argument("--timeout", type=float, default=900.0, help="stop after this many seconds of mining regardless")
    p.add_argument("--k", type=int, default=2, help="initial difficulty of the cifar10-resnet18 spec (CPU mining)")
    p.add_argument("--threads", type=int, default=1, help="the node's torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="the node's mining device (default cpu)")
    p.add_argument("--work-dir", type=Path, default=None, help="keep the datadir and log here (default: temp dir)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result into this directory")
    p.set_defaults(func=run)


# -- a generated CIFAR-10 archive -------------------------------------------------------------
def write_cifar_archive(path: Path, records_per_batch: int = 10000, seed: int = 0) -> str:
    """A CIFAR-10 binary archive in the official layout (random pixels/labels); returns its MD5."""
    import io

    from consensus import cifar10
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1, format=tarfile.GNU_FORMAT) as tf:
        d = tarfile.TarInfo(cifar10.MEMBER_DIR)
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        for name in (*cifar10.TRAIN_MEMBERS, cifar10.TEST_MEMBER):
            raw = bytearray(rng.randbytes(records_per_batch * cifar10.RECORD_BYTES))
            raw[0::cifar10.RECORD_BYTES] = bytes(rng.randrange(10) for _ in range(records_per_batch))
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(raw), 0o644
            tf.addfile(info, io.BytesIO(raw))
    return cifar10.file_md5(path)


def node_spec(preset_name: str, k: int, datadir: Path):
    """(spec, note) for the node; for cifar10-resnet18 also writes the generated archive into datadir/data."""
    from consensus import cifar10
    from consensus.spec import preset
    base = preset(preset_name)
    if base.dataset.id != "cifar10":
        return base, f"{preset_name} preset as is ({base.dataset.id} data)"
    md5 = write_cifar_archive(datadir / "data" / cifar10.ARCHIVE_NAME)
    spec = dataclasses.replace(base, name=f"{base.name}-memory-bench",
                               dataset=dataclasses.replace(base.dataset, archive_md5=md5),
                               difficulty=dataclasses.replace(base.difficulty, initial=k))
    note = (f"{preset_name} preset with a GENERATED CIFAR-10 archive (official binary layout and sizes, "
            f"random pixels and labels; MD5 {md5[:12]}...) loaded by the real decoder, and initial difficulty "
            f"k={k} instead of {base.difficulty.initial} so blocks are found on a CPU")
    return spec, note


# -- /proc ------------------------------------------------------------------------------------------
def proc_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def health(url: str) -> dict | None:
    import httpx
    try:
        r = httpx.get(url + "/health", timeout=2)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


# -- the benchmark -------------------------------------------------------------------------------
def run(args) -> int:
    return common.emit(measure_memory(args), args, table, name=f"memory-{args.preset}")


def measure_memory(args) -> dict:
    import logging

    from .propagate import free_port
    logging.getLogger("httpx").setLevel(logging.WARNING)
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="polchain-bench-memory-"))
    datadir = root / "node"
    datadir.mkdir(parents=True, exist_ok=True)
    proc = None
    try:
        common.progress(f"preparing the spec and data for {args.preset} in {root}")
        spec, note = node_spec(args.preset, args.k, datadir)
        spec_path = root / "spec.json"
        spec_path.write_text(spec.to_json())
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLCHAIN_")}
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "node.cli", "--log-level", "INFO", "node", "--datadir", str(datadir),
               "--port", str(port), "--spec", str(spec_path), "--mine", "--no-discover",
               "--threads", str(args.threads), "--device", args.device]
        log_path = root / "node.log"
        log = open(log_path, "ab")
        result = common.result_header("memory", preset=args.preset, arch=spec.model.arch, spec=spec.name, data=note,
                                      threads=args.threads, device=args.device, machine=common.machine_info("cpu"))
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        samples: list[tuple[float, int]] = []

        def sample() -> None:
            v = proc_kib(proc.pid, "VmRSS")
            if v is not None:
                samples.append((round(time.monotonic() - t0, 2), v))

        # start-up: until /health answers
        while health(url) is None:
            if proc.poll() is not None:
                raise RuntimeError(f"node exited ({proc.returncode}) during start-up; see {log_path}")
            if time.monotonic() - t0 > args.timeout:
                raise TimeoutError(f"node not up after {args.timeout:.0f} s; see {log_path}")
            sample()
            time.sleep(0.25)
        startup_s = time.monotonic() - t0
        startup_peak = proc_kib(proc.pid, "VmHWM") or 0
        reset = reset_peak(proc.pid)
        common.progress(f"node up after {startup_s:.1f} s, start-up peak {startup_peak / 1024:.0f} MiB; mining "
                        f"(at least {args.seconds:g} s and {args.min_blocks} block(s))")
        t_mine = time.monotonic()
        height, last_poll = 0, 0.0
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"node exited ({proc.returncode}) while mining; see {log_path}")
            sample()
            now = time.monotonic()
            if now - last_poll > 2:
                h = health(url)
                last_poll = now
                if h is not None and h.get("height", 0) > height:
                    height = h["height"]
                    common.progress(f"height {height} after {now - t_mine:.0f} s of mining; "
                                    f"RSS {samples[-1][1] / 1024:.0f} MiB")
            if (now - t_mine >= args.seconds and height >= args.min_blocks) or now - t_mine >= args.timeout:
                break
            time.sleep(0.25)
        mining_s = time.monotonic() - t_mine
        hwm = proc_kib(proc.pid, "VmHWM") or 0
        mine_samples = [v for t, v in samples if t >= startup_s]
        mining_peak = hwm if reset else max(mine_samples, default=0)
        peak = max(startup_peak, hwm)
        result.update(
            startup_seconds=round(startup_s, 1), mining_seconds=round(mining_s, 1), blocks_mined=height,
            peak_rss_mib=round(peak / 1024, 1), startup_peak_rss_mib=round(startup_peak / 1024, 1),
            mining_peak_rss_mib=round(mining_peak / 1024, 1), peak_reset=reset,
            rss_mib_mining=common.summary([v / 1024 for v in mine_samples] or [0.0], 1),
            rss_samples=[[t, round(v / 1024, 1)] for t, v in samples[::max(1, len(samples) // 200)]],
            under_3gb=peak < 3 * 1024 * 1024, load_average_after=common.load_average(),
            measured=("VmHWM of the `polchain node --mine` process from /proc/PID/status (peak resident set "
                      "size of that one process, children none)"))
        if not reset:
            result["note"] = "clear_refs not writable: the mining-phase peak is the largest sampled VmRSS"
        return result
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)


def table(res: dict) -> str:
    rows = [("start-up (until /health answers)", res["startup_seconds"], res["startup_peak_rss_mib"], "-"),
            ("mining (search, confirmations, own blocks validated + stored)", res["mining_seconds"],
             res["mining_peak_rss_mib"], res["rss_mib_mining"]["median"]),
            ("whole process life", res["startup_seconds"] + res["mining_seconds"], res["peak_rss_mib"], "-")]
    lines = [
        f"polchain bench memory: a real `polchain node --mine` process, preset {res['preset']} ({res['arch']}), "
        f"{res['threads']} torch thread(s), device {res['device']}",
        f"data: {res['data']}",
        f"machine: {common.machine_line(res['machine'])}",
        f"measured: {res['measured']}",
        "",
        common.format_table(["phase", "seconds", "peak RSS MiB", "median RSS MiB"], rows),
        "",
        f"blocks mined: {res['blocks_mined']}; peak RSS {res['peak_rss_mib']:.0f} MiB "
        f"({'under' if res['under_3gb'] else 'OVER'} 3 GB)",
    ]
    if res.get("note"):
        lines.append(f"note: {res['note']}")
    if res.get("load_average_after"):
        lines.append(f"load average after: {res['load_average_after'][0]}")
    return "\n".join(lines)
