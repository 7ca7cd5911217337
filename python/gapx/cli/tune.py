"""``gapx tune``: choose hyperparameters by cross-validation (and the evidence) within a budget."""

from __future__ import annotations

import json
import os

from ..dataset import read_frames
from ..io import atomic_write
from ..tuning import DEFAULT_SPACE, MIN_BUDGET, SETTINGS, search_space, tune
from .common import EXIT_OK, CLIError, check_output_dir, check_output_file, thread_limit
from .config import build_model, format_config, read_config, validate_config
from .fit import dask_client


def add_parser(sub) -> None:
    ranges = ", ".join(f"{k} {list(v)}" for k, v in DEFAULT_SPACE.items())
    tune_ = sub.add_parser(
        "tune",
        help="choose hyperparameters by cross-validation within a time budget",
        description="k-fold cross-validation by frame over the SOAP term's cutoff, atom_sigma, "
        "n_max, l_max, zeta, n_sparse and an optional TwoBody term (Optuna TPE, seeded), with "
        "delta and the noise sigmas set by the evidence in every fit. Default ranges: "
        f"{ranges}; override them in a [tune] table of the config (e.g. cutoff = [4.0, 5.5]), "
        "which also takes energy_weight, force_weight (score = energy_weight * energy MAE "
        "per atom + force_weight * force MAE), trials, seed and folds. Uses only TRAIN.",
    )
    tune_.add_argument("train", nargs="+", help="training file(s), extended XYZ")
    tune_.add_argument("--config", "-c", required=True, help="base TOML config (gapx fit's)")
    tune_.add_argument("--budget", type=float, required=True, help="wall-clock seconds")
    tune_.add_argument("-o", "--output", default="TUNED.toml", help="tuned config to write")
    tune_.add_argument(
        "--plots",
        metavar="DIR",
        help="write the report, learning curves and error-vs-hyperparameter plots into DIR",
    )
    tune_.add_argument("--folds", type=int, help=f"CV folds (default {SETTINGS['folds']})")
    tune_.add_argument("--trials", type=int, help=f"most trials (default {SETTINGS['trials']})")
    tune_.add_argument("--seed", type=int, help="seed of the folds and the sampler")
    tune_.add_argument("--threads", type=int, metavar="N", help="OpenMP/BLAS threads")
    tune_.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run the trials on a dask.distributed cluster (scheduler address, or 'local'): one "
        "trial per worker at a time",
    )
    tune_.set_defaults(func=run)


def _progress(row: dict) -> None:
    p = row["params"]
    energy = "-" if row["energy_mae"] is None else f"{1000 * row['energy_mae']:.3f}"
    force = "-" if row["force_mae"] is None else f"{1000 * row['force_mae']:.2f}"
    print(
        f"trial {row['number']:>3}  rc {p['cutoff']:.2f} sigma {p['atom_sigma']:.2f} "
        f"n {p['n_max']} l {p['l_max']} zeta {p['zeta']} M {p['n_sparse']} "
        f"2b {'y' if p['two_body'] else 'n'}  E MAE {energy} meV/atom  F MAE {force} meV/Å  "
        f"score {row['score']:.5f}  ({row['seconds']:.1f} s)",
        flush=True,
    )


def run(args) -> int:
    if not args.budget > MIN_BUDGET:
        raise CLIError(f"--budget {args.budget:g} s is too small for one trial (> {MIN_BUDGET:g})")
    config = validate_config(read_config(args.config))
    try:
        space, settings = search_space(config.get("tune"))
    except ValueError as error:
        raise CLIError(str(error)) from None
    for name in ("folds", "trials", "seed"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if not any(t["type"] == "soap" for t in config["terms"]):
        raise CLIError("gapx tune searches a SOAP term: the config has none")
    if int(settings["folds"]) < 2:
        raise CLIError(f"--folds must be at least 2, got {settings['folds']}")
    if int(settings["trials"]) < 1:
        raise CLIError(f"--trials must be at least 1, got {settings['trials']}")
    frames = read_frames(args.train)
    if len(frames) < int(settings["folds"]):
        raise CLIError(f"{len(frames)} frames are fewer than the {settings['folds']} folds")
    report_path = (
        os.path.join(args.plots, "tune_report.json")
        if args.plots
        else (os.path.splitext(args.output)[0] + ".json")
    )
    check_output_file(args.output, "-o")
    if args.plots:
        check_output_dir(args.plots, "--plots")
    else:
        check_output_file(report_path, "-o (its .json report)")
    species = sorted({s for a in frames for s in a.get_chemical_symbols()})
    base = dict(config)
    base.pop("tune", None)

    def make(trial_config):
        model = build_model(trial_config, species)
        model.verbose = False
        return model

    print(f"gapx tune: {len(frames)} frames, {settings['folds']} folds, budget {args.budget:g} s")
    with thread_limit(args.threads), dask_client(args.dask) as client:
        report = tune(
            frames,
            base,
            make,
            args.budget,
            space,
            settings,
            curves=bool(args.plots),
            client=client,
            progress=_progress,
        )
    status = (
        "complete"
        if report["complete"]
        else (
            f"INCOMPLETE: the budget ended after {report['n_trials'] + report['n_pruned']} of "
            f"{settings['trials']} trials; best config so far"
        )
    )
    best = report["best"]
    header = (
        f"gapx tune: {status}\n"
        f"CV ({report['folds']} folds) energy MAE {best['energy_mae']} eV/atom, "
        f"force MAE {best['force_mae']} eV/Å, score {best['score']:.6g}"
    )
    with atomic_write(args.output, "w") as handle:
        handle.write(format_config(report["config"], header=header))
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
    with atomic_write(report_path, "w") as handle:
        json.dump(report, handle, indent=1, default=str)
    if args.plots:
        from ..plotting import hyperparameter_plot, learning_curve_plot

        hyperparameter_plot(report["trials"], os.path.join(args.plots, "hyperparameters.png"))
        if "learning_curves" in report:
            learning_curve_plot(
                report["learning_curves"], os.path.join(args.plots, "learning_curves.png")
            )
    print(
        f"{status}; {report['n_trials']} trials completed, {report['n_pruned']} stopped early "
        f"(worse than the median after a fold), in {report['seconds']:.1f} s"
    )
    print(f"tuned config written to {args.output}, report to {report_path}")
    return EXIT_OK
