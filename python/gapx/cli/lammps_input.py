"""``gapx lammps-input MODEL ELEMENT...``: the LAMMPS lines that run a model."""

from __future__ import annotations

from .. import lammps
from .common import EXIT_OK, load_model


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "lammps-input",
        help="print the LAMMPS input lines for a model",
        description=(
            "Print the pair_style / pair_coeff lines (and, for a model with an Ewald baseline, "
            "coul/long, kspace_style ewald and the charges) that run MODEL in LAMMPS with atom "
            "types 1, 2, ... named ELEMENT..."
        ),
    )
    parser.add_argument("model", help="model file (.gapx)")
    parser.add_argument("elements", nargs="+", metavar="ELEMENT", help="element of each type")
    parser.add_argument(
        "--coulomb-cutoff",
        type=float,
        default=lammps.COULOMB_CUTOFF,
        metavar="RC",
        help=f"coul/long real-space cutoff in Å (default {lammps.COULOMB_CUTOFF:g})",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    model = load_model(args.model)
    print("\n".join(lammps.input_lines(model, args.model, args.elements, args.coulomb_cutoff)))
    return EXIT_OK
