"""``gapx md``: molecular dynamics with the model as ASE calculator."""

from __future__ import annotations

import math
import os

from ..calculator import GAPCalculator
from ..dataset import read_frames
from ..md import ENSEMBLES, format_md_summary, run_md
from .common import (
    EXIT_OK,
    CLIError,
    add_evaluation_options,
    check_output_file,
    load_model,
    thread_limit,
)

# Steps between std evaluations. The full std (forces included) costs about 40 mean predictions
# for a 1000-atom cell, so every 100th step adds about 40 % to the run, and a drift into
# unknown territory is still seen within 100 steps.
DEFAULT_STD_INTERVAL = 100


def add_parser(sub) -> None:
    md = sub.add_parser(
        "md",
        help="molecular dynamics with ASE",
        description="NVE (velocity Verlet) or Langevin MD with the model as ASE calculator.",
    )
    md.add_argument("model", help="model file (.gapx)")
    md.add_argument("start", help="starting structure (any ase.io format)")
    md.add_argument("--steps", type=int, default=1000, help="number of steps (default 1000)")
    md.add_argument(
        "--temperature", "-T", type=float, default=300.0, help="temperature in K (default 300)"
    )
    md.add_argument("--timestep", type=float, default=0.5, help="time step in fs (default 0.5)")
    md.add_argument("--ensemble", choices=ENSEMBLES, default="nve")
    md.add_argument(
        "--friction", type=float, default=0.01, help="Langevin friction in 1/fs (default 0.01)"
    )
    md.add_argument("--trajectory", metavar="FILE", help="ASE trajectory file to write")
    md.add_argument("--trajectory-interval", type=int, default=10, metavar="N")
    md.add_argument(
        "--log", metavar="FILE", help="write time, energies, T, energy std and max force std"
    )
    md.add_argument("--log-interval", type=int, default=1, metavar="N")
    md.add_argument("--index", default="0", help="frame of the start file to use (default 0)")
    md.add_argument("--seed", type=int, default=0, help="seed for velocities and thermostat")
    md.add_argument(
        "--std-interval",
        type=int,
        default=DEFAULT_STD_INTERVAL,
        metavar="N",
        help="compute the predictive stds (energy, max force) every N steps "
        f"(default {DEFAULT_STD_INTERVAL}; one costs tens of mean evaluations)",
    )
    md.add_argument("--no-std", action="store_true", help="never compute stds (logged as nan)")
    add_evaluation_options(md)
    md.set_defaults(func=run)


def _same(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def run(args) -> int:
    for path, flag in ((args.trajectory, "--trajectory"), (args.log, "--log")):
        if path:
            check_output_file(path, flag)
    if args.trajectory and args.log and _same(args.trajectory, args.log):
        raise CLIError("--trajectory and --log name the same file")
    if args.steps < 1:
        raise CLIError(f"--steps must be at least 1, got {args.steps}")
    if not (args.timestep > 0 and math.isfinite(args.timestep)):
        raise CLIError(f"--timestep must be a positive number of fs, got {args.timestep}")
    if not (args.temperature >= 0 and math.isfinite(args.temperature)):
        raise CLIError(f"--temperature must be >= 0 K, got {args.temperature}")
    for name in ("trajectory_interval", "log_interval", "std_interval"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise CLIError(f"{flag} must be at least 1, got {getattr(args, name)}")
    if not (args.friction > 0 and math.isfinite(args.friction)):
        raise CLIError(f"--friction must be a positive number (1/fs), got {args.friction}")
    model = load_model(args.model)
    atoms = read_frames(args.start, index=str(args.index))[0]
    calc = GAPCalculator(model, std_every=None if args.no_std else args.std_interval)
    with thread_limit(args.threads, len(atoms), single_blas=True):
        summary = run_md(
            atoms,
            calc,
            steps=args.steps,
            temperature=args.temperature,
            timestep=args.timestep,
            ensemble=args.ensemble,
            friction=args.friction,
            seed=args.seed,
            trajectory=args.trajectory,
            trajectory_interval=args.trajectory_interval,
            log=args.log,
            log_interval=args.log_interval,
            progress=not args.quiet,
        )
    print(format_md_summary(summary))
    if args.trajectory:
        print(f"trajectory written to {args.trajectory}")
    if args.log:
        print(f"log written to {args.log}")
    return EXIT_OK
