"""Small timing harness shared by the scripts in bench/ (import it, do not run it).

API (keep it small; other bench scripts import it):

* ``time_call(fn, min_time=1.0, min_repeats=3, max_repeats=10_000) -> (mean_s, std_s, repeats)``
  calls ``fn()`` once to warm up (imports, caches, thread pools, page faults), then repeats it
  enough times to fill about ``min_time`` seconds (at least ``min_repeats``) and returns the
  mean and standard deviation of the individual call times.
* ``time_interleaved(calls, min_time=1.0, block_time=0.6, settle_time=0.2) -> {name:
  (median_s, iqr_s, repeats)}``: the zero-argument functions of a dict in turn, each in blocks
  of about ``block_time`` seconds whose first ``settle_time`` seconds are not counted, until
  each has about ``min_time`` seconds counted: on a shared machine whose speed drifts, every
  function sees the same drift, so their ratios hold. Returns per name the median call time
  and the interquartile range.
* ``machine_info(packages=()) -> dict``: CPU model, logical CPUs usable by this process, load
  average, OMP_NUM_THREADS, Python/NumPy/gapx versions (and of ``packages`` if importable),
  whether gapx was built with OpenMP, git commit (with a ``-dirty`` suffix for local changes)
  and a UTC timestamp. Record it with every result: timings mean little without it.
* ``package_version(name) -> str | None``: installed version of a distribution, or None.
* ``write_json(path, results)``: write ``results`` (dicts/lists/NumPy scalars) as indented JSON.
* ``add_common_arguments(parser, threads=(1, 2))``: the flags every bench script shares:
  ``--threads`` (thread counts to time), ``--smoke`` (one tiny case, seconds, for CI; judge no
  numbers from it) and ``--json PATH``.
* ``smoke_min_time(args, full=1.0) -> float``: ``min_time`` to pass to ``time_call`` (0.01 s
  in smoke mode, so CI only checks that the scripts still run).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


def time_call(
    fn: Callable[[], object],
    min_time: float = 1.0,
    min_repeats: int = 3,
    max_repeats: int = 10_000,
) -> tuple[float, float, int]:
    """Mean and standard deviation (seconds) of ``fn()`` after one warm-up call.

    The repeat count is chosen from the warm-up time so the timed calls take about
    ``min_time`` seconds in total, clamped to ``[min_repeats, max_repeats]``.
    """
    start = time.perf_counter()
    fn()
    warm_up = time.perf_counter() - start
    repeats = int(np.clip(np.ceil(min_time / max(warm_up, 1e-9)), min_repeats, max_repeats))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    spread = statistics.stdev(samples) if len(samples) > 1 else 0.0
    return statistics.fmean(samples), spread, repeats


def time_interleaved(
    calls: dict[str, Callable[[], object]],
    min_time: float = 1.0,
    block_time: float = 0.6,
    settle_time: float = 0.2,
) -> dict[str, tuple[float, float, int]]:
    """Median and interquartile range (seconds) of each call, the calls made in turn in blocks
    of about ``block_time`` seconds. Calls in a block's first ``settle_time`` seconds (at least
    one) are not counted: they pay for the switch, e.g. OpenBLAS's threads still spinning
    (about 0.1 s) after the other function's last matrix product, stealing a core."""
    for fn in calls.values():
        fn()
    rounds = max(2, int(np.ceil(min_time / (block_time - settle_time))))
    samples = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            block_start = time.perf_counter()
            calls_in_block, counted_in_block = 0, 0
            while True:
                start = time.perf_counter()
                fn()
                end = time.perf_counter()
                if calls_in_block > 0 and start - block_start >= settle_time:
                    samples[name].append(end - start)
                    counted_in_block += 1
                calls_in_block += 1
                if end - block_start >= block_time and counted_in_block > 0:
                    break
    out = {}
    for name, times in samples.items():
        q1, median, q3 = np.percentile(times, [25, 50, 75])
        out[name] = (float(median), float(q3 - q1), len(times))
    return out


def package_version(name: str) -> str | None:
    """Installed version of distribution ``name``, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def machine_info(packages: Iterable[str] = ()) -> dict:
    """Where and with what the numbers were measured (see the module docstring)."""
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cpus = os.cpu_count()
    try:
        import gapx

        gapx_version = gapx.__version__
        from gapx import _core

        gapx_openmp = getattr(_core, "has_openmp", None)
        gapx_openmp = bool(gapx_openmp() if callable(gapx_openmp) else gapx_openmp)
    except ImportError:
        gapx_version, gapx_openmp = None, None
    versions = {"python": platform.python_version(), "numpy": np.__version__, "gapx": gapx_version}
    versions.update({name: package_version(name) for name in packages})
    return {
        "cpu": _cpu_model(),
        "usable_cpus": usable_cpus,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "gapx_openmp": gapx_openmp,
        "versions": versions,
        "git_commit": _git_commit(),
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_json(path, results) -> None:
    """Write ``results`` to ``path`` as indented JSON (NumPy scalars and arrays converted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")


def add_common_arguments(parser: argparse.ArgumentParser, threads=(1, 2)) -> None:
    """Add ``--threads``, ``--smoke`` and ``--json`` to a bench script's parser."""
    parser.add_argument(
        "--threads", type=int, nargs="+", default=list(threads), help="thread counts to time"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="one tiny case in seconds, for CI (no timings)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")


def smoke_min_time(args: argparse.Namespace, full: float = 1.0) -> float:
    """The ``min_time`` for ``time_call``: ``full`` normally, 0.01 s with ``--smoke``."""
    return 0.01 if getattr(args, "smoke", False) else full
