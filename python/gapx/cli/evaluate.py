"""``gapx eval``: errors of a model on labelled data, a metrics table, JSON and parity plots."""

from __future__ import annotations

import os

from ..dataset import data_summary, format_summary, read_frames
from ..evaluation import evaluate, format_error_table
from ..labels import DEFAULT_KEYS
from ..plotting import parity_plot
from ..uncertainty import format_metrics_table
from .common import (
    EXIT_OK,
    CLIError,
    add_evaluation_options,
    check_output_dir,
    check_output_file,
    load_model,
    thread_limit,
    write_report,
)


def add_parser(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="errors of a model on labelled data",
        description=(
            "Energy (per atom), force and virial RMSE/MAE, overall and per config_type; when "
            "the model predicts stds, also how well they match the errors (as gapx calibrate)."
        ),
    )
    ev.add_argument("model", help="model file (.gapx, or a QUIP/GAP .xml)")
    ev.add_argument("data", help="labelled frames, extended XYZ")
    ev.add_argument("--json", metavar="FILE", help="also write the errors as JSON")
    ev.add_argument("--plots", metavar="DIR", help="write parity plots (PNG) into DIR")
    ev.add_argument(
        "--key",
        action="append",
        metavar="NAME=KEY",
        help="label names in the file, e.g. energy=DFT_energy (repeatable)",
    )
    add_evaluation_options(ev)
    ev.set_defaults(func=run)


def _label_keys(assignments) -> dict:
    keys = dict(DEFAULT_KEYS)
    for assignment in assignments or []:
        name, _, value = assignment.partition("=")
        if name not in DEFAULT_KEYS or not value:
            raise CLIError(
                f"bad --key {assignment!r}: expected NAME=KEY with NAME one of "
                f"{', '.join(DEFAULT_KEYS)}"
            )
        keys[name] = value
    return keys


def run(args) -> int:
    if args.json:
        check_output_file(args.json, "--json")
    if args.plots:
        check_output_dir(args.plots, "--plots")
    model = load_model(args.model)
    keys = _label_keys(args.key)
    frames = read_frames(args.data)
    try:
        print(format_summary(data_summary(frames, keys)))
    except ValueError as error:
        raise CLIError(f"{error} (set label names with --key NAME=KEY)") from None
    largest = max(len(a) for a in frames)
    with thread_limit(args.threads, largest, single_blas=True):
        result, parity = evaluate(model, frames, keys, progress=not args.quiet)
    print(format_error_table(result))
    if "uncertainty" in result:
        stds = "calibrated" if model.calibration is not None else "predicted"
        print(format_metrics_table({stds: result["uncertainty"]}))
    if args.json:
        write_report(args.json, args, result, "errors")
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        path = os.path.join(args.plots, "parity.png")
        parity_plot(parity, path)
        print(f"parity plot written to {path}")
    return EXIT_OK
