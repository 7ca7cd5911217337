"""``gapx select``: the frames of a pool that would teach a model the most."""

from __future__ import annotations

import contextlib
import json

from ..dataset import read_frames
from ..io import atomic_write
from ..learning import select_frames
from .common import (
    EXIT_OK,
    CLIError,
    add_evaluation_options,
    check_output_file,
    load_model,
    thread_limit,
)


def add_parser(sub) -> None:
    sel = sub.add_parser(
        "select",
        help="choose the most informative frames of a pool",
        description=(
            "Choose N frames of an unlabelled pool that most reduce the model's uncertainty, "
            "greedily by information gain under its GP posterior (each choice conditioned on "
            "the earlier ones, so near-duplicates are not all chosen). The chosen frames are "
            "written in the pool's order with select_score (nats), select_rank, pool_index and "
            "energy_std (eV) in their info."
        ),
    )
    sel.add_argument("model", help="model file (.gapx)")
    sel.add_argument("pool", help="candidate frames (extended XYZ or any ase.io format)")
    sel.add_argument("-n", type=int, required=True, metavar="N", help="number of frames")
    sel.add_argument("-o", "--output", required=True, metavar="FILE", help="chosen frames (extxyz)")
    sel.add_argument("--report", metavar="FILE", help="also write indices, scores and stds (JSON)")
    sel.add_argument(
        "--noise",
        type=float,
        metavar="EV",
        help="std of a local energy once its frame is labelled (default: the model's sigma_energy)",
    )
    sel.add_argument(
        "--environments",
        type=int,
        default=8,
        metavar="R",
        help="candidate atoms summarising each frame (default 8)",
    )
    add_evaluation_options(sel)
    sel.set_defaults(func=run)


def run(args) -> int:
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    check_output_file(args.output, "-o")
    if args.report:
        check_output_file(args.report, "--report")
    model = load_model(args.model)
    pool = read_frames(args.pool)
    if not 1 <= args.n <= len(pool):
        raise CLIError(f"-n must be between 1 and the pool size {len(pool)}, got {args.n}")
    if args.environments < 1:
        raise CLIError(f"--environments must be at least 1, got {args.environments}")
    if args.noise is not None and not args.noise > 0:
        raise CLIError(f"--noise must be a positive energy in eV, got {args.noise}")
    largest = max(len(a) for a in pool)
    with thread_limit(args.threads, largest, single_blas=True):
        selection = select_frames(
            model,
            pool,
            args.n,
            noise=args.noise,
            environments=args.environments,
            progress=not args.quiet,
        )
        stds = {int(i): float(model.predict(pool[i])["energy_std"]) for i in selection.indices}
    chosen = []
    for rank, (index, score) in enumerate(zip(selection.indices, selection.scores, strict=True)):
        chosen.append(
            {
                "index": int(index),
                "rank": rank,
                "score": float(score),
                "energy_std": stds[int(index)],
                "max_local_std": float(selection.max_std[index]),
            }
        )
    frames = []
    for entry in sorted(chosen, key=lambda e: e["index"]):
        original = pool[entry["index"]]
        atoms = original.copy()
        if getattr(original.calc, "results", None):  # a labelled pool keeps its labels
            atoms.calc = SinglePointCalculator(atoms, **original.calc.results)
        atoms.info.update(
            pool_index=entry["index"],
            select_rank=entry["rank"],
            select_score=entry["score"],
            energy_std=entry["energy_std"],
        )
        frames.append(atoms)
    report = {
        "model": args.model,
        "pool": args.pool,
        "n_pool": len(pool),
        "n": args.n,
        "noise": args.noise if args.noise is not None else model.sigma_energy,
        "environments": args.environments,
        "indices": [e["index"] for e in chosen],
        "scores": [e["score"] for e in chosen],
        "chosen": chosen,
        "pool_gain": [float(g) for g in selection.gains],
        "pool_max_local_std": [float(s) for s in selection.max_std],
        "units": {"score": "nats", "energy_std": "eV", "max_local_std": "eV"},
    }
    # A failure while writing either file replaces neither.
    with contextlib.ExitStack() as stack:
        handle = stack.enter_context(atomic_write(args.output, "w"))
        ase.io.write(handle, frames, format="extxyz")
        if args.report:
            report_handle = stack.enter_context(atomic_write(args.report, "w"))
            json.dump(report, report_handle, indent=2)
    print(f"{'rank':>4} {'index':>6} {'score':>10} {'energy_std':>11} {'max local std':>14}")
    for e in chosen:
        print(
            f"{e['rank']:>4} {e['index']:>6} {e['score']:>10.4f} {e['energy_std']:>11.5f} "
            f"{e['max_local_std']:>14.5f}"
        )
    print(f"{len(frames)} of {len(pool)} frames written to {args.output}")
    if args.report:
        print(f"report written to {args.report}")
    return EXIT_OK
