"""`polchain bench memory`: peak RSS of a real mining node process.

A real ``polchain node --mine`` is started as a subprocess (its own datadir,
loopback port, peer discovery off) and its memory is read from
``/proc/PID/status`` every 0.25 s:

* ``VmHWM`` when ``/health`` first answers: the peak of start-up (imports,
  data loaded and checked, genesis weights hashed, the chain opened);
* then the peak counter is reset (``echo 5 > /proc/PID/clear_refs``) and read
  again at the end: the peak of the *mining* phase (fast search passes,
  canonical confirmations with an evaluation on E, building the block,
  validating it in ``Chain.submit`` (its steps replayed from the parent's
  post-state, one evaluation) and storing its 45 MB post-state);
* ``peak_rss_mib`` is the larger of the two: the process's peak over its life.

The node mines for at least ``--seconds`` and until its chain reaches
``--min-blocks`` blocks (``--timeout`` caps it), so every code path of a mining
node runs. For resnet18 (``--feed``, the default there) this process also mines
one block on the same spec (on genesis, as ``bench verify`` does) and POSTs it to
the node as a peer would (header and records): the node validates it from
genesis's post-state and stores it, its miner abandons its search and moves to
the new tip's post-state, and then finds blocks of its own; the default
``--min-blocks 2`` waits for one.

``--preset cifar10-resnet18``: CIFAR-10 cannot be downloaded here, so a
CIFAR-10 archive is *generated* in the official binary layout and at the
official sizes (50,000 + 10,000 records of 3,073 bytes, gzip; pixels are noise
around a colour per class, so a model can learn them) and the node's spec is the preset with ``archive_md5`` set to that
archive's MD5: the node loads it through the real CIFAR-10 decoder, so the data
occupy what real CIFAR-10 would. The initial difficulty is lowered to ``--k``
(default 2) so blocks are found on a CPU; the memory of a pass, a confirmation
or a validation does not depend on k. The output says all this.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from node.argtypes import nonneg_int, positive_float, positive_int
from node.devices import device_arg
from node.threads import threads_arg

from . import common


def register(sub) -> None:
    from consensus.spec import PRESETS
    p = sub.add_parser("memory", help="peak RSS of a real mining node process (VmHWM)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=PRESETS, default="cifar10-resnet18")
    p.add_argument("--seconds", type=positive_float, default=120.0, help="mine at least this long (default 120)")
    p.add_argument("--min-blocks", type=nonneg_int, default=None,
                   help="and until the chain has this many blocks (default: 2 with --feed, else 1)")
    p.add_argument("--system-malloc", action="store_true",
                   help="run the node with glibc's default malloc settings (POLCHAIN_MALLOC=system; "
                        "node/allocator.py): what the tuned allocator costs in memory")
    p.add_argument("--feed", action=argparse.BooleanOptionalAction, default=None,
                   help="mine one block here and POST it to the node (default: on for cifar10-resnet18)")
    p.add_argument("--timeout", type=positive_float, default=900.0,
                   help="stop after this many seconds of mining regardless")
    p.add_argument("--k", type=positive_int, default=2,
                   help="initial difficulty of the cifar10-resnet18 spec (CPU mining)")
    p.add_argument("--threads", type=threads_arg, default=1, help="the node's torch threads (default 1)")
    p.add_argument("--device", default="cpu", type=device_arg, help="the node's mining device (default cpu)")
    p.add_argument("--work-dir", type=Path, default=None, help="keep the datadir and log here (default: temp dir)")
    common.add_output_arguments(p, figure="memory-<preset>")
    p.set_defaults(func=run)


# -- a generated CIFAR-10 archive -------------------------------------------------------------
def write_cifar_archive(path: Path, records_per_batch: int = 10000, seed: int = 0) -> str:
    """A CIFAR-10 binary archive in the official layout (learnable generated images); returns its MD5."""
    import io

    import torch

    from consensus import cifar10

    from .verify import learnable_generated
    n = records_per_batch
    ds = learnable_generated(5 * n, n, seed)
    xs = [ds.train_x[i * n:(i + 1) * n] for i in range(5)] + [ds.test_x]
    ys = [ds.train_y[i * n:(i + 1) * n] for i in range(5)] + [ds.test_y]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1, format=tarfile.GNU_FORMAT) as tf:
        d = tarfile.TarInfo(cifar10.MEMBER_DIR)
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        for name, x, y in zip((*cifar10.TRAIN_MEMBERS, cifar10.TEST_MEMBER), xs, ys):
            raw = torch.cat([y.view(-1, 1), x.reshape(n, -1)], dim=1).contiguous().numpy().tobytes()
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
            f"pixels: noise around a colour per class; MD5 {md5[:12]}...) loaded by the real decoder, and initial difficulty "
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


def feed_block(spec, data_dir: Path, work: Path, url: str, report: dict) -> None:
    """Mine one block on the node's spec in this process and POST it to the node (a peer's block)."""
    from types import SimpleNamespace

    from consensus.data import load_dataset

    from .propagate import post_block
    from .verify import mine_block
    try:
        t0 = time.monotonic()
        dataset = load_dataset(spec.dataset, data_dir)
        block, _, _ = mine_block(spec, dataset, "cpu", None, 0, work)
        report["mined_s"] = round(time.monotonic() - t0, 1)
        common.progress(f"feeder: block {block.hash[:16]} mined here in {report['mined_s']} s; POST to the node")
        report["post_status"] = post_block(SimpleNamespace(url=url), block)
        report["posted_s"] = round(time.monotonic() - t0, 1)
        report["hash"] = block.hash
    except Exception as exc:  # noqa: BLE001 - reported in the result, the measurement goes on
        report["error"] = repr(exc)


def node_status(url: str) -> dict | None:
    import httpx
    try:
        r = httpx.get(url + "/status", timeout=5)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def health(url: str) -> dict | None:
    import httpx
    try:
        r = httpx.get(url + "/health", timeout=2)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


# -- the benchmark -------------------------------------------------------------------------------
def run(args) -> int:
    res = measure_memory(args)
    return common.emit_with_figures(res, args, table, f"memory-{args.preset}", draw)


def draw(res: dict, out_dir: Path) -> list[Path]:
    """memory-<preset>.png/.svg: the node's RSS over time, start-up and mining, peaks and the 3 GB line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] for s in res["rss_samples"]]
    v = [s[1] for s in res["rss_samples"]]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(t, v, "-", color="#1f4e99", lw=1.4, label="VmRSS (sampled every 0.25 s)")
    ax.axvline(res["startup_seconds"], color="grey", ls=":", lw=1)
    ax.text(res["startup_seconds"], 3072 * 0.97, " /health answers: mining", fontsize=7, va="top", color="grey")
    ax.axhline(res["peak_rss_mib"], color="#d1495b", ls="--", lw=1,
               label=f"peak (VmHWM) {res['peak_rss_mib']:.0f} MiB")
    ax.axhline(res["mining_peak_rss_mib"], color="#edae49", ls="--", lw=1,
               label=f"mining-phase peak {res['mining_peak_rss_mib']:.0f} MiB")
    ax.axhline(3072, color="black", lw=0.8, label="3 GB budget")
    ax.set_ylim(0, 3300)
    ax.set_xlabel("seconds since the node process started")
    ax.set_ylabel("MiB")
    ax.set_title(f"polchain node --mine, {res['preset']} ({res['arch']}), {res['threads']} torch thread(s): "
                 f"chain height {res['blocks_mined']}, {res.get('own_blocks_found')} mined by the node", fontsize=9)
    ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
    return common.save_figure(fig, res, out_dir, f"memory-{res['preset']}", threads=False)


def measure_memory(args) -> dict:
    import logging
    import threading

    import torch

    from .propagate import free_port
    logging.getLogger("httpx").setLevel(logging.WARNING)
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))    # run the finally: stop the node
    torch.set_num_threads(1)
    feed = args.feed if args.feed is not None else args.preset == "cifar10-resnet18"
    min_blocks = args.min_blocks if args.min_blocks is not None else (2 if feed else 1)
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="polchain-bench-memory-"))
    datadir = root / "node"
    datadir.mkdir(parents=True, exist_ok=True)
    proc = None
    log = None
    try:
        common.progress(f"preparing the spec and data for {args.preset} in {root}")
        spec, note = node_spec(args.preset, args.k, datadir)
        spec_path = root / "spec.json"
        spec_path.write_text(spec.to_json())
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLCHAIN_")}
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
        if args.system_malloc:
            env["POLCHAIN_MALLOC"] = "system"
        cmd = [sys.executable, "-m", "node.cli", "--log-level", "INFO", "node", "--datadir", str(datadir),
               "--port", str(port), "--spec", str(spec_path), "--mine", "--no-discover",
               "--threads", str(args.threads), "--device", args.device]
        log_path = root / "node.log"
        log = open(log_path, "ab")
        result = common.result_header("memory", preset=args.preset, arch=spec.model.arch, spec=spec.name, data=note,
                                      threads=args.threads, device=args.device, feed=feed, min_blocks=min_blocks,
                                      allocator="system" if args.system_malloc else "tuned",
                                      machine=common.machine_info("cpu"))
        feeder: dict = {}
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
        feeding = None
        if feed:
            feeding = threading.Thread(target=feed_block, args=(spec, datadir / "data", root / "feeder", url, feeder),
                                       daemon=True)
            feeding.start()
        common.progress(f"node up after {startup_s:.1f} s, start-up peak {startup_peak / 1024:.0f} MiB; mining "
                        f"(at least {args.seconds:g} s and {min_blocks} block(s))")
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
            fed = feeding is None or not feeding.is_alive()       # the peer's block posted (or failed)
            if (now - t_mine >= args.seconds and height >= min_blocks and fed) or now - t_mine >= args.timeout:
                break
            time.sleep(0.25)
        mining_s = time.monotonic() - t_mine
        st = node_status(url) or {}
        found = (st.get("mining") or {}).get("blocks_found")
        hwm = proc_kib(proc.pid, "VmHWM") or 0
        mine_samples = [v for t, v in samples if t >= startup_s]
        mining_peak = hwm if reset else max(mine_samples, default=0)
        peak = max(startup_peak, hwm)
        result.update(
            startup_seconds=round(startup_s, 1), mining_seconds=round(mining_s, 1), blocks_mined=height,
            height=height, own_blocks_found=found, fed_block=feeder or None,
            peak_rss_mib=round(peak / 1024, 1), startup_peak_rss_mib=round(startup_peak / 1024, 1),
            mining_peak_rss_mib=round(mining_peak / 1024, 1), peak_reset=reset,
            rss_mib_mining={k: v for k, v in common.summary([v / 1024 for v in mine_samples] or [0.0], 1).items()
                            if k != "runs"},
            rss_samples=[[t, round(v / 1024, 1)] for t, v in samples[::max(1, len(samples) // 200)]],
            under_3gb=peak < 3 * 1024 * 1024, load_average_after=common.load_average(),
            measured=("VmHWM of the `polchain node --mine` process from /proc/PID/status (peak resident set "
                      "size of that one process, children none)"))
        if not reset:
            result["note"] = "clear_refs not writable: the mining-phase peak is the largest sampled VmRSS"
        return result
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if log is not None:
            log.close()
        if not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)


def table(res: dict) -> str:
    rows = [("start-up (until /health answers)", res["startup_seconds"], res["startup_peak_rss_mib"], "-"),
            ("mining (search, confirmations, blocks validated + stored)", res["mining_seconds"],
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
        f"chain height at the end: {res['blocks_mined']} (blocks the node mined itself: {res.get('own_blocks_found')}"
        + (f"; one block mined by this process, POSTed to the node: HTTP {res['fed_block'].get('post_status')}"
           f"{', ' + res['fed_block']['error'] if res['fed_block'].get('error') else ''}" if res.get("fed_block") else "")
        + f"); peak RSS {res['peak_rss_mib']:.0f} MiB "
        f"({'under' if res['under_3gb'] else 'OVER'} 3 GB)",
    ]
    if res.get("note"):
        lines.append(f"note: {res['note']}")
    if res.get("figures"):
        lines.append("figures: " + ", ".join(res["figures"]))
    if res.get("load_average_after"):
        lines.append(f"load average after: {res['load_average_after'][0]}")
    return "\n".join(lines)
