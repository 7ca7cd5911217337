"""``gapx fit``: fit a model to extxyz training data from a TOML config."""

from __future__ import annotations

import argparse
import contextlib
import time

from ..dataset import format_summary
from ..fitting import format_bytes, memory_estimate
from ..shards import combined_summary, scan_shards, shard_paths
from .common import EXIT_OK, CLIError, check_output_file, thread_limit
from .config import EXAMPLE_CONFIG, apply_override, build_model, read_config, validate_config


def add_parser(sub) -> None:
    fit = sub.add_parser(
        "fit",
        help="fit a model to extxyz training data",
        description="Fit a GAP model to labelled frames (energies, forces, virials or stress).",
        epilog="Example config (TOML):\n\n" + EXAMPLE_CONFIG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument(
        "train",
        nargs="+",
        help="training data: extended XYZ files or glob patterns ('data/*.xyz', quoted); "
        "each is a shard, read in blocks where it is used (on the workers with --dask)",
    )
    fit.add_argument("--config", "-c", required=True, help="TOML config file")
    fit.add_argument("-o", "--output", help="model file to write (default: [output] model)")
    fit.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. fit.sigma_energy=0.002, soap.n_max=4, "
        "terms.0.cutoff=4.5 (repeatable; values are TOML)",
    )
    fit.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="OpenMP/BLAS threads (default: OMP_NUM_THREADS)",
    )
    fit.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="compute descriptors and design-matrix blocks on a dask.distributed cluster: "
        "a scheduler address (tcp://host:8786) or 'local' for a LocalCluster",
    )
    fit.add_argument(
        "--memory-limit",
        type=float,
        metavar="BYTES",
        help="bytes each process may hold (e.g. 4e9): blocks are sized under it, and a fit "
        "that cannot stay under it is refused before it starts ([fit] memory_limit)",
    )
    fit.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="write the fit's progress to PATH (after sparse selection, then at intervals); "
        "default with --resume: OUTPUT.checkpoint",
    )
    fit.add_argument(
        "--checkpoint-interval",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="seconds between checkpoint writes (default 600)",
    )
    fit.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint (when it exists): the model equals an uninterrupted "
        "fit's; refused when the data or settings differ from the checkpoint's",
    )
    fit.set_defaults(func=run)


@contextlib.contextmanager
def dask_client(address: str | None):
    """A dask.distributed client for ``--dask``: a scheduler address, or "local" for a
    LocalCluster on this machine; None when the fit runs in this process."""
    if address is None:
        yield None
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise CLIError("--dask needs dask.distributed: pip install 'dask[distributed]'") from None
    if address == "local":
        with LocalCluster(threads_per_worker=1, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                print(f"dask: local cluster with {len(cluster.workers)} workers")
                yield client
        return
    try:
        client = Client(address, timeout=30)
    except OSError as error:
        raise CLIError(f"cannot reach the dask scheduler at {address}: {error}") from None
    with client:
        print(f"dask: connected to {address}")
        yield client


def estimate_memory(model, summary: dict) -> dict:
    """:func:`gapx.fitting.memory_estimate` of fitting ``model`` to a data set, from its
    :func:`gapx.dataset.data_summary` alone (before any descriptor is computed): sparse points
    are each term's :meth:`~gapx.terms.Term.max_sparse_points`."""
    n_columns = sum(term.max_sparse_points(summary["species"]) for term in model.terms)
    labels = summary["labels"]
    n_obs = labels["energy"] + 6 * labels["virial"] + 3 * summary["atoms_with_forces"]
    return memory_estimate(n_obs, n_columns, model.block_memory)


def run(args) -> int:
    config = read_config(args.config)
    for assignment in args.set or []:
        apply_override(config, assignment)
    if args.memory_limit is not None:
        config.setdefault("fit", {})["memory_limit"] = args.memory_limit
    config = validate_config(config)
    output = args.output or config["output"].get("model") or "model.gapx"
    check_output_file(output, "-o" if args.output else "[output] model")
    checkpoint = args.checkpoint or (f"{output}.checkpoint" if args.resume else None)
    if checkpoint is not None:
        check_output_file(checkpoint, "--checkpoint")
    paths = shard_paths(args.train)
    start = time.perf_counter()
    with thread_limit(args.threads), dask_client(args.dask) as client:
        # The scan needs no species (SOAP's default to the data's): scan, then build the model.
        scans = _scan(build_model(config, ["H"]), paths, client)
        summary = combined_summary(scans)
        print(format_summary(summary))
        model = build_model(config, list(summary["species"]))
        memory = estimate_memory(model, summary)
        # The fit prints its plan of each process's memory next (gapx.fit_memory).
        print(
            "memory estimate for the fit: design matrix "
            f"{format_bytes(memory['full_design_matrix_bytes'])} (streamed in blocks)"
        )
        model.fit(
            paths,
            client=client,
            checkpoint=checkpoint,
            resume=args.resume,
            checkpoint_interval=args.checkpoint_interval,
            scans=scans,
        )
    elapsed = time.perf_counter() - start
    model.save(output)
    print(f"fitted in {elapsed:.1f} s; model written to {output}")
    return EXIT_OK


def _scan(model, paths, client):
    try:
        return scan_shards(model, paths, client)
    except ValueError as error:
        raise CLIError(f"{error} (label names come from the [keys] table of the config)") from None
