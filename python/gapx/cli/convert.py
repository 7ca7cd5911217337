"""``gapx convert``: a model between gapx's .gapx and QUIP/GAP XML, by the files' extensions."""

from __future__ import annotations

from .common import EXIT_OK, CLIError, check_output_file, is_quip_xml, load_model


def add_parser(sub) -> None:
    convert = sub.add_parser(
        "convert",
        help="convert a model between .gapx and QUIP/GAP XML",
        description=(
            "Convert IN to OUT, choosing each format by its extension: .xml is QUIP/GAP XML "
            "(written with its sparseX files and a complete .gapx copy beside it, read by "
            "quippy and LAMMPS pair_style quip), anything else a gapx model file. XML export "
            "needs terms QUIP can express: SOAP with radial_basis='quip', TwoBody."
        ),
    )
    convert.add_argument("input", metavar="IN", help="model to read (.gapx or .xml)")
    convert.add_argument("output", metavar="OUT", help="model to write (.gapx or .xml)")
    convert.set_defaults(func=run)


def run(args) -> int:
    check_output_file(args.output, "OUT")
    model = load_model(args.input)
    if is_quip_xml(args.output):
        try:
            model.to_quip(args.output)
        except ValueError as error:
            raise CLIError(f"cannot write {args.output} as QUIP XML: {error}") from None
    else:
        model.save(args.output)
    print(f"wrote {args.output}")
    return EXIT_OK
