"""``gapx info``: what a model file is and how it was trained."""

from __future__ import annotations

import os

from .. import serialization
from ..fitting import format_bytes
from ..io import read_model_file
from ..uncertainty import format_calibration
from .common import EXIT_OK, is_quip_xml, load_model


def add_parser(sub) -> None:
    info = sub.add_parser(
        "info",
        help="describe a model file",
        description="Species, terms and hyperparameters, training summary, format version.",
    )
    info.add_argument("model", help="model file (.gapx, or a QUIP/GAP .xml)")
    info.set_defaults(func=run)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def _settings(lines: list[str], title: str, settings: dict) -> None:
    lines.append(title)
    for name, value in settings.items():
        lines.append(f"    {name} = {_short(value)}")


def model_info(path: str) -> str:
    """Human-readable description of a model file: what it is and how it was trained."""
    model = load_model(path)  # validates the whole file first
    if is_quip_xml(path):
        header = serialization.model_header(model)
        origin = "format: QUIP/GAP XML (read by gapx.from_quip)"
    else:
        header, _ = read_model_file(path)
        origin = (
            f"format: {header['format']} version {header['format_version']}, "
            f"written by gapx {header.get('gapx_version', '?')}"
        )
    lines = [
        f"model file: {path} ({format_bytes(os.path.getsize(path))})",
        origin,
        f"species: {', '.join(model.species)}",
        "e0 (eV/atom): " + ", ".join(f"{k} {v:.6f}" for k, v in model.e0.items()),
    ]
    for index, term in enumerate(model.terms):
        settings = term.to_dict()
        _settings(lines, f"term {index}: {settings.pop('type')}", settings)
    lines.append(
        f"sparse points: {sum(s.size for s in model.sparse_sets)} in {len(model.sparse_sets)} "
        f"sets, {model.alpha.size} weights"
    )
    _settings(lines, "fit settings:", header["hyperparameters"])
    if model.baseline is not None:
        settings = model.baseline.to_dict()
        _settings(lines, f"baseline: {settings.pop('type')}", settings)
    if model.calibration is not None:
        lines.append(format_calibration(model.calibration))
    if model.summary:
        _settings(lines, "training:", model.summary)
    return "\n".join(lines)


def run(args) -> int:
    print(model_info(args.model))
    return EXIT_OK
