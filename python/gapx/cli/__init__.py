"""The ``gapx`` command line: ``fit``, ``eval``, ``calibrate``, ``select``, ``md``, ``learn``,
``tune``, ``info``, ``convert``, ``lammps-plugin``, ``lammps`` and ``lammps-input``, one thin
module each.

Every command module has ``add_parser(sub)`` and ``run(args) -> int``, so tests and scripts can
call ``gapx.cli.main([...])`` without a subprocess. User errors (missing files, bad configs,
unknown keys, bad values, unwritable outputs, any OSError, running out of memory) print one
``gapx <command>: error: ...`` line on stderr and return exit code 1; argparse usage errors
return 2. ``--traceback`` shows the full Python traceback instead. Output paths are checked before
any work is done, and no command leaves a partial or empty output file behind when it fails.
"""

from __future__ import annotations

import argparse
import os
import sys

from .._core import __version__
from . import (
    calibrate,
    convert,
    evaluate,
    fit,
    info,
    lammps,
    lammps_input,
    lammps_plugin,
    learn,
    md,
    select,
    tune,
)
from .common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, CLIError

COMMANDS = (
    fit,
    evaluate,
    calibrate,
    select,
    md,
    learn,
    tune,
    info,
    convert,
    lammps_plugin,
    lammps,
    lammps_input,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gapx",
        description="Fit, evaluate and run Gaussian Approximation Potentials.",
    )
    parser.add_argument("--version", action="store_true", help="print the gapx version and exit")
    parser.add_argument(
        "--traceback", action="store_true", help="show full Python tracebacks on errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``gapx`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2)
        return int(exit_.code or 0)
    if args.version:
        print(f"gapx {__version__}")
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into head & co.: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the final flush silent
        return EXIT_OK
    except (CLIError, ValueError, OSError, TypeError, MemoryError) as error:
        if args.traceback:
            raise
        print(f"gapx {args.command}: error: {_describe(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"gapx {args.command}: interrupted", file=sys.stderr)
        return 130


def _describe(error: BaseException) -> str:
    """One line saying what went wrong."""
    if isinstance(error, MemoryError):
        return f"out of memory{': ' + str(error) if str(error) else ''}"
    text = " ".join(str(error).split()) or type(error).__name__
    return text


if __name__ == "__main__":
    sys.exit(main())
