"""``gapx calibrate``: fit the scale and floor of a model's stds on held-out labelled frames."""

from __future__ import annotations

import os

from ..dataset import data_summary, format_summary, read_frames
from ..plotting import calibration_plot
from ..uncertainty import calibrate, format_calibration, format_metrics_table
from .common import (
    EXIT_OK,
    add_evaluation_options,
    check_output_dir,
    check_output_file,
    load_model,
    thread_limit,
    write_report,
)


def add_parser(sub) -> None:
    cal = sub.add_parser(
        "calibrate",
        help="calibrate a model's predicted stds on held-out labelled data",
        description=(
            "Fit, by maximum likelihood on held-out labelled frames, a scale and a noise floor "
            "for the model's predicted standard deviations (energies per atom and force "
            "components separately); print calibration metrics before and after; write the "
            "calibrated model, whose predictions then report calibrated stds. Labels are found "
            "under the model's label names."
        ),
    )
    cal.add_argument("model", help="model file (.gapx)")
    cal.add_argument("data", help="held-out labelled frames (not the training set), extended XYZ")
    cal.add_argument(
        "-o", "--output", required=True, metavar="CALIBRATED.gapx", help="calibrated model file"
    )
    cal.add_argument("--plots", metavar="DIR", help="write calibration.png into DIR")
    cal.add_argument("--json", metavar="FILE", help="also write the calibration and metrics")
    add_evaluation_options(cal)
    cal.set_defaults(func=run)


def run(args) -> int:
    check_output_file(args.output, "-o")
    if args.json:
        check_output_file(args.json, "--json")
    if args.plots:
        check_output_dir(args.plots, "--plots")
    model = load_model(args.model)
    frames = read_frames(args.data)
    keys = {name.removesuffix("_key"): value for name, value in model.keys.items()}
    print(format_summary(data_summary(frames, keys)))
    largest = max(len(a) for a in frames)
    with thread_limit(args.threads, largest, single_blas=True):
        calibration, report, (errors, stds) = calibrate(model, frames, progress=not args.quiet)
    model.calibration = calibration  # what GAP.calibrate stores; the residuals feed the plot
    print(format_calibration(calibration))
    print(format_metrics_table({"before": report["before"], "after": report["after"]}))
    model.save(args.output)
    print(f"calibrated model written to {args.output}")
    if args.json:
        write_report(args.json, args, report, "calibration")
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        path = os.path.join(args.plots, "calibration.png")
        calibration_plot(errors, stds, calibration, path)
        print(f"calibration plot written to {path}")
    return EXIT_OK
