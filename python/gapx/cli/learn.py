"""``gapx learn``: on-the-fly active learning during Langevin MD, any ASE calculator as oracle."""

from __future__ import annotations

import argparse
import math
import os
import sys

from ..dataset import read_frames
from ..learning import LearningError, OnTheFly
from ..learning.oracle import load_oracle
from ..learning.run_files import RunFolder
from .common import EXIT_OK, CLIError, load_model, thread_limit
from .config import build_model, read_config, validate_config

EPILOG = """\
How it works: the oracle labels the start structure (or --train gives the first training
frames) and a first model is fitted with the config. Langevin MD then runs on the model; every
--std-interval steps the largest predicted force std is computed, and when it exceeds
--threshold (at least --min-interval steps after the last call, fewer than --max-calls calls
so far) the oracle labels the current structure, the frame is added to the model by an
incremental update (new rows folded into the QR factor, new sparse points from the frame's
environments; no refit) and MD continues. e0 stays at its value in the first fit.

Until the model reports forces_std, the force std is a stand-in: each atom's local-energy
std divided by 1 A (the summary and the plot say so); forces_std is used once it exists.

Files in the output folder:
  calls.extxyz   every oracle call, appended and fsync'ed as it happens (the start's
                 labelling first); info holds learn_step, learn_max_force_std and the model's
                 learn_max_force_error at that structure before the update
  model.gapx     the current model, replaced atomically after each update
  log.csv        step, time_ps, temperature_K, max_force_std, oracle_called, max_force_error
  learning.png   std over the run, the calls, and the actual force error at each call
  run.json, state.json, learner.npz, train.extxyz
                 settings, MD checkpoint, incremental fit, first training frames: what
                 --resume needs

--resume continues a stopped or killed run from the folder exactly where it left off (same
settings; --steps is the total, so a larger value extends a finished run). Options not given
take the run's values; the model comes from the folder.

Example (EMT copper as the oracle):
  gapx learn cu.xyz --oracle ase.calculators.emt:EMT --config fit.toml --steps 2000 \\
      --temperature 600 --timestep 2 --threshold 0.05 -o run/
"""


def add_parser(sub) -> None:
    learn = sub.add_parser(
        "learn",
        help="on-the-fly active learning during MD, with an ASE calculator as oracle",
        description="Run Langevin MD on a model and call the oracle (any ASE calculator) "
        "wherever the model is unsure, updating the model as it goes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    learn.add_argument("start", help="starting structure (any ase.io format)")
    learn.add_argument(
        "--oracle",
        required=True,
        metavar="MODULE:CALLABLE",
        help="ASE calculator class or factory giving the reference labels, called for a fresh "
        "calculator at each call, e.g. ase.calculators.emt:EMT",
    )
    learn.add_argument(
        "--config",
        "-c",
        metavar="FIT.toml",
        help="model config, as for gapx fit (required for a new run; with --resume the "
        "folder's model gives the settings)",
    )
    learn.add_argument("-o", "--output", required=True, metavar="DIR", help="run folder")
    learn.add_argument(
        "--steps", type=int, default=1000, help="total MD steps of the run (default 1000)"
    )
    learn.add_argument("--temperature", "-T", type=float, help="temperature in K (default 300)")
    learn.add_argument("--timestep", type=float, help="time step in fs (default 1)")
    learn.add_argument(
        "--threshold",
        type=float,
        metavar="EV_PER_A",
        help="call the oracle when the max predicted force std exceeds this (eV/A; required)",
    )
    learn.add_argument("--friction", type=float, help="Langevin friction in 1/fs (default 0.01)")
    learn.add_argument(
        "--std-interval",
        type=int,
        metavar="K",
        help="compute the std every K steps (default 1; it costs more than the MD step)",
    )
    learn.add_argument(
        "--min-interval", type=int, metavar="K", help="least steps between calls (default 1)"
    )
    learn.add_argument(
        "--max-calls",
        type=int,
        metavar="C",
        help="most oracle calls in all, the start's labelling included (default: no limit)",
    )
    learn.add_argument("--seed", type=int, help="seed of the velocities and thermostat (0)")
    learn.add_argument(
        "--train",
        metavar="FILE",
        help="labelled frames for the first model instead of labelling the start",
    )
    learn.add_argument("--index", default="0", help="frame of the start file (default 0)")
    learn.add_argument(
        "--new-sparse",
        type=int,
        metavar="N",
        help="most sparse points added per call and (term, kind) (default 4)",
    )
    learn.add_argument(
        "--sparse-tolerance",
        type=float,
        help="an environment becomes a sparse point only if its residual variance (what the "
        "sparse set cannot represent) exceeds this fraction of the largest prior variance "
        "among the new environments (default 1e-6)",
    )
    learn.add_argument(
        "--max-temperature",
        type=float,
        metavar="K",
        help="stop when the temperature exceeds this (default 5 T + 1000 K)",
    )
    learn.add_argument(
        "--max-std",
        type=float,
        metavar="EV_PER_A",
        help="stop when the std exceeds this and no call is allowed (default 100 threshold)",
    )
    learn.add_argument(
        "--retries",
        type=int,
        default=0,
        help="ask the oracle again this many times when it fails (default 0)",
    )
    learn.add_argument(
        "--checkpoint-interval",
        type=int,
        default=100,
        metavar="K",
        help="steps between MD checkpoints besides those at each call (default 100)",
    )
    learn.add_argument(
        "--resume", action="store_true", help="continue the run in DIR where it stopped"
    )
    learn.add_argument(
        "--threads", type=int, metavar="N", help="OpenMP threads (default: 1 below 100 atoms)"
    )
    learn.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    learn.set_defaults(func=run)


#: (option attribute, OnTheFly keyword, default of a new run)
DYNAMICS = (
    ("threshold", "threshold", None),
    ("temperature", "temperature", 300.0),
    ("timestep", "timestep", 1.0),
    ("friction", "friction", 0.01),
    ("std_interval", "std_interval", 1),
    ("min_interval", "min_interval", 1),
    ("seed", "seed", 0),
    ("new_sparse", "new_sparse_per_frame", 4),
    ("sparse_tolerance", "sparse_tolerance", 1e-6),
    ("max_temperature", "max_temperature", None),
    ("max_std", "max_std", None),
)


def _settings(args, folder: RunFolder) -> dict:
    """OnTheFly keywords: given options, else the run's values (--resume) or the defaults."""
    saved = folder.read_json(folder.settings) if args.resume else {}
    settings = {}
    for option, keyword, default in DYNAMICS:
        value = getattr(args, option)
        settings[keyword] = value if value is not None else saved.get(keyword, default)
    if settings["threshold"] is None:
        raise CLIError("--threshold is required (eV/A)")
    for keyword in ("threshold", "temperature", "timestep", "friction"):
        if not (settings[keyword] > 0 and math.isfinite(settings[keyword])):
            raise CLIError(f"--{keyword} must be a positive number, got {settings[keyword]}")
    return settings


def _model(args, folder: RunFolder, species: list[str]):
    if args.config is None:
        if not args.resume:
            raise CLIError("--config is required for a new run (the model's settings)")
        if not os.path.isfile(folder.model):
            raise CLIError(f"{folder.model} does not exist yet: give --config to resume")
        model = load_model(folder.model)
    else:
        model = build_model(validate_config(read_config(args.config)), species)
    model.verbose = False
    return model


def run(args) -> int:
    folder = RunFolder(args.output)
    if args.resume and not folder.exists():
        raise CLIError(f"--resume: {args.output} holds no learning run")
    if not args.resume and folder.exists():
        raise CLIError(f"{args.output} already holds a learning run: add --resume to continue")
    if args.steps < 0:
        raise CLIError(f"--steps must be >= 0, got {args.steps}")
    oracle = load_oracle(args.oracle)
    atoms = read_frames(args.start, index=str(args.index))[0]
    frames = read_frames(args.train) if args.train and not args.resume else None
    species = sorted({s for a in [atoms, *(frames or [])] for s in a.get_chemical_symbols()})
    learner = OnTheFly(
        _model(args, folder, species),
        oracle,
        args.output,
        frames=frames,
        max_calls=args.max_calls,
        retries=args.retries,
        checkpoint_interval=args.checkpoint_interval,
        progress=not args.quiet,
        **_settings(args, folder),
    )
    try:
        with thread_limit(args.threads, len(atoms), single_blas=True):
            summary = learner.run(atoms, args.steps, resume=args.resume)
    except LearningError as error:
        kept = len(folder.read_calls())
        model = "the model and " if os.path.isfile(folder.model) else ""
        raise CLIError(
            f"{error} ({args.output} keeps {model}all {kept} oracle calls; continue with --resume)"
        ) from None
    except KeyboardInterrupt:
        print(
            f"gapx learn: interrupted; {args.output} keeps the model and every oracle call: "
            "continue with --resume",
            file=sys.stderr,
        )
        return 130
    std = summary["last_max_force_std"]
    sparse = ", ".join(f"{k} {v}" for k, v in summary["n_sparse"].items())
    print(
        f"learned to step {summary['steps']}: {summary['n_calls']} oracle calls "
        f"({summary['calls_this_run']} in this run); last max force std {std:.4g} eV/A"
    )
    print(f"sparse points: {sparse}")
    print(f"model written to {folder.model}; calls in {folder.calls}; plot {folder.plot}")
    return EXIT_OK
