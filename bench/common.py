"""Shared helpers for the benchmarks under bench/.

A benchmark module (bench/mine.py, bench/verify.py, ...) exposes
``register(subparsers)``, adds its parser with ``add_common_arguments`` and
reports through ``emit``: a text table by default, ONE JSON object with
``--json``, and a JSON file under ``--out DIR``. Only the standard library is
imported at module level (the ``polchain`` parser imports this module for every
command); torch is imported inside the functions that need it.

Timing figures on a shared machine are noisy: every result carries the load
average before and after, and benchmarks repeat runs and report medians.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from node.argtypes import positive_float, positive_int
from node.devices import device_arg

GENERATED_CIFAR = "generated (CIFAR-10 unavailable)"


# -- arguments ----------------------------------------------------------------------
def add_spec_arguments(p: argparse.ArgumentParser, preset_default: str = "tiny") -> None:
    from consensus.spec import PRESETS
    p.add_argument("--preset", choices=PRESETS, default=preset_default)
    p.add_argument("--spec", type=Path, default=None,
                   help="chain spec file instead of a preset (e.g. from `polchain spec --dataset-archive`)")


def load_spec(args: argparse.Namespace):
    """The chain a benchmark runs: ``--spec FILE``, else ``--preset``.

    ``args.preset`` becomes the chain's name, which the results and their files carry.
    """
    from consensus.spec import preset
    from node.startup_error import StartupError
    from node.setup import read_spec_file
    try:
        spec = read_spec_file(args.spec) if getattr(args, "spec", None) else preset(args.preset)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    args.preset = spec.name
    if hasattr(args, "threads"):
        from node.threads import apply_threads
        progress(apply_threads(args.threads, spec.model.arch, getattr(args, "device", "cpu")))
    return spec


def add_common_arguments(p: argparse.ArgumentParser, *, preset_default: str = "tiny",
                         seconds_default: float = 10.0, runs_default: int = 3) -> None:
    add_spec_arguments(p, preset_default)
    p.add_argument("--device", default="auto", type=device_arg, help="cpu, cuda, cuda:N, mps or auto (default)")
    p.add_argument("--seconds", type=positive_float, default=seconds_default, help="length of one timed run")
    p.add_argument("--runs", type=positive_int, default=runs_default, help="timed runs (the median is reported)")
    from node.threads import threads_arg
    p.add_argument("--threads", type=threads_arg, default=None,
                   help="torch CPU threads (default: measured per model, see node/threads.py)")
    p.add_argument("--dataset-dir", "--data-dir", dest="data_dir", type=Path, default=None,
                   help="where CIFAR-10 lives, if it does (never downloaded by a benchmark; --data-dir: the old name)")
    add_output_arguments(p)


def add_output_arguments(p: argparse.ArgumentParser, figure: str | None = None) -> None:
    """--json and --out; with ``figure`` (the figure's stem) also --figures and --no-figure."""
    if figure is not None:
        p.add_argument("--figures", type=Path, default=None,
                       help=f"write {figure}.png/.svg here (default: --out, else no figure)")
        p.add_argument("--no-figure", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result into this directory")


# -- the machine --------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info(device: str | None = None) -> dict[str, Any]:
    """CPU model and cores, memory, GPU (if any), torch and Python versions, load."""
    import torch
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": None,
        "load_average": load_average(),
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        info["memory_gib"] = None
    if torch.cuda.is_available():
        i = (torch.device(device).index or 0) if device and device.startswith("cuda") else 0
        p = torch.cuda.get_device_properties(i)
        info["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                       "count": torch.cuda.device_count(), "cuda": torch.version.cuda,
                       "cudnn": torch.backends.cudnn.version()}
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        info["gpu"] = {"name": "Apple MPS"}
    return info


def machine_line(info: dict[str, Any]) -> str:
    gpu = info["gpu"]["name"] if info.get("gpu") else "no GPU"
    load = info.get("load_average")
    return (f"{info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads), "
            f"{info.get('memory_gib')} GiB, {gpu}; torch {info['torch']}, Python {info['python']}"
            + (f"; load average {load[0]}" if load else ""))


# -- timing -------------------------------------------------------------------------
def sync_device(device: str | None) -> None:
    """Wait for queued GPU work, so a timer reads the work done, not the work queued."""
    if device and device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def run_for(seconds: float, body: Callable[[Callable[[], bool]], int], device: str | None = None) -> tuple[int, float]:
    """Call ``body(should_stop)`` until ``seconds`` have passed; (work units it reported, elapsed s).

    ``should_stop`` turns true at the deadline; ``body`` returns the units done
    in that call (it may return early, e.g. when a miner finds a block, and is
    called again).
    """
    sync_device(device)
    t0 = time.perf_counter()
    deadline = t0 + seconds
    should_stop = lambda: time.perf_counter() >= deadline  # noqa: E731
    done = 0
    while not should_stop():
        done += body(should_stop)
    sync_device(device)
    return done, time.perf_counter() - t0


def summary(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """Median, min, max and the individual values (rounded)."""
    vals = [float(v) for v in values]
    return {"median": round(statistics.median(vals), digits), "min": round(min(vals), digits),
            "max": round(max(vals), digits), "runs": [round(v, digits) for v in vals]}


def ratio(a: float, b: float, digits: int = 3) -> float | None:
    return round(a / b, digits) if b else None


# -- data ---------------------------------------------------------------------------
def bench_dataset(spec, data_dir: Path | None = None):
    """(dataset, description): the spec's data, or generated data of the same shape.

    A benchmark never downloads. CIFAR-10 is used when it is already in
    ``data_dir``; otherwise uniform random uint8 images and labels with the
    spec's split sizes stand in (the cost of a training step does not depend on
    the pixel values), and the description says so.
    """
    from consensus.data import DatasetError, load_dataset
    if spec.dataset.id == "synthetic":
        return load_dataset(spec.dataset, None), "synthetic (the spec's own)"
    if data_dir is not None:
        try:
            return (load_dataset(spec.dataset, Path(data_dir)),
                    f"{spec.dataset.id} from {data_dir}")
        except DatasetError as exc:
            progress(f"not using {data_dir}: {exc}")
    progress(f"data: {GENERATED_CIFAR}: random images of its shape stand in; the figures are speeds only "
             "(accuracies mean nothing). Real data: --dataset-dir DIR holding the archive")
    return generated_dataset(spec.dataset.train_size, spec.dataset.test_size), GENERATED_CIFAR


def canonical_run(args: argparse.Namespace):
    """(spec, dataset, its description, the canonical step, rng) of a benchmark that runs canonical steps
    on random batches: ``--spec``/``--preset``, its data (``--dataset-dir``), ``--threads`` torch threads
    and a ``random.Random(--seed)``."""
    import random

    import torch

    from consensus.training import canonical_step
    spec = load_spec(args)
    data, note = bench_dataset(spec, args.data_dir)
    torch.set_num_threads(args.threads)
    return spec, data, note, canonical_step(spec, data), random.Random(args.seed)


def warm_state(replayer, steps: int, rng):
    """W: the genesis model after ``steps`` canonical steps on random batches (``replayer`` holds it)."""
    from consensus.training import genesis_state
    spec = replayer.spec
    n, s = spec.dataset.train_size, spec.training.batch_size
    replayer.load(genesis_state(spec))
    for _ in range(steps):
        replayer.step(tuple(rng.sample(range(n), s)))
    return replayer.state()


def generated_dataset(train: int, test: int, seed: int = 0):
    import torch
    from consensus.data import Dataset
    g = torch.Generator().manual_seed(seed)
    return Dataset(torch.randint(0, 256, (train, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (train,), dtype=torch.uint8, generator=g),
                   torch.randint(0, 256, (test, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (test,), dtype=torch.uint8, generator=g))


# -- output -------------------------------------------------------------------------
def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned text table; numbers right-aligned."""
    rows = [[_cell(c) for c in r] for r in rows]
    cols = list(zip(*([list(headers)] + rows))) if rows else [[h] for h in headers]
    widths = [max(len(c) for c in col) for col in cols]
    numeric = [all(_is_number(c) for c in col[1:]) and len(col) > 1 for col in cols]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return "-" if v is None else str(v)


def _is_number(s: str) -> bool:
    try:
        float(s.rstrip("x"))
        return True
    except ValueError:
        return s == "-"


def write_json(result: dict[str, Any], out_dir: Path, name: str) -> Path:
    """Write ``result`` to ``out_dir/name.json`` atomically; returns the path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def result_header(benchmark: str, **fields: Any) -> dict[str, Any]:
    return {"benchmark": benchmark,
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **fields}


def emit(result: dict[str, Any], args: argparse.Namespace, table: Callable[[dict[str, Any]], str],
         name: str | None = None) -> int:
    """Print the table (or the JSON object with --json); write the JSON under --out."""
    name = name or f"{result['benchmark']}-{result.get('preset', 'result')}"
    if getattr(args, "out", None):
        path = write_json(result, args.out, name)
        print(f"wrote {path}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps(result, sort_keys=True))
    else:
        print(table(result))
    return 0


def progress(msg: str, args: argparse.Namespace | None = None) -> None:
    """A progress line on stderr (stdout stays the result)."""
    print(msg, file=sys.stderr, flush=True)


def emit_with_figures(result: dict[str, Any], args: argparse.Namespace, table: Callable[[dict[str, Any]], str],
                      name: str, draw: Callable[[dict[str, Any], Path], list[Path]]) -> int:
    """``emit``, after drawing the result's figures into --figures (or --out) unless --no-figure."""
    fig_dir = None if args.no_figure else (args.figures or args.out)
    if fig_dir is not None:
        try:
            result["figures"] = [str(p) for p in draw(result, Path(fig_dir))]
        except ImportError:
            progress("no figure: matplotlib is not installed (pip install 'polchain[bench]')")
    return emit(result, args, table, name=name)


def save_figure(fig, result: dict[str, Any], out_dir: Path, stem: str, *, threads: bool = True) -> list[Path]:
    """Footer naming the machine and load, then PNG and SVG into out_dir; closes the figure."""
    import matplotlib.pyplot as plt

    m = result["machine"]
    thr = f"{m['torch_threads']} torch thread(s), " if threads else ""
    fig.text(0.01, 0.005, f"{m['cpu']}, {m['cores']} cores, {thr}torch {m['torch']}; load average "
             f"{(result.get('load_average_after') or ['?'])[0]} (shared machine); {result['started']}",
             fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{stem}.{ext}"
        fig.savefig(p, dpi=130 if ext == "png" else None)
        paths.append(p)
    plt.close(fig)
    return paths
