"""Errors of a model on labelled frames: the one RMSE/MAE implementation and the metric tables."""

from __future__ import annotations

import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress
from tqdm.auto import tqdm

from .dataset import config_type, label_keywords
from .labels import DEFAULT_KEYS, extract_labels
from .uncertainty import calibration_metrics, concatenate, frame_residuals

#: Units of the error metrics :func:`evaluate` reports, per quantity.
UNITS = {"energy": "eV/atom", "energy_total": "eV", "forces": "eV/Angstrom", "virial": "eV/atom"}


def error_metrics(errors) -> dict:
    """``{"rmse", "mae", "n"}`` of a set of errors (any shape); None for an empty set."""
    errors = np.asarray(errors, dtype=np.float64).ravel()
    if errors.size == 0:
        return {"rmse": None, "mae": None, "n": 0}
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "n": int(errors.size),
    }


def evaluate(model, frames, keys: dict | None = None, progress: bool = True):
    """Predict every frame; return ``(errors, parity)``.

    ``errors`` has ``overall`` and ``config_types`` (one row per config type), each with the
    number of ``frames`` and :func:`error_metrics` of energies per atom (eV/atom), total energies
    (eV), force components (eV/Å) and virials per atom (eV/atom, as gap_fit's sigma_virial), plus
    ``units``. When the predictions have stds, ``errors`` also has ``uncertainty``: the
    :func:`gapx.uncertainty.calibration_metrics` of energies per atom and force components over
    all frames (with the stds the model reports: calibrated if the model is). ``parity`` holds
    (reference, predicted) pairs for :func:`gapx.plotting.parity_plot`. ``keys`` name the labels
    as in :func:`gapx.dataset.data_summary`.
    """
    keys = {**DEFAULT_KEYS, **(keys or {})}
    groups: dict[str, dict[str, list]] = {}
    parity = {"energy": [], "forces": [], "config_type": [], "force_config_type": []}
    residuals = []  # (errors, stds) of every frame, for the uncertainty metrics
    bar = tqdm(frames, desc="eval", unit="frame", disable=not progress, leave=False)
    for index, atoms in enumerate(bar):
        labels = extract_labels(atoms, index, **label_keywords(keys))
        structure = atoms.copy()
        structure.calc = None
        out = model.predict(structure)
        residuals.append(frame_residuals(out, labels))
        ctype = config_type(atoms, keys)
        group = groups.setdefault(
            ctype, {"energy": [], "energy_total": [], "forces": [], "virial": [], "frames": 0}
        )
        group["frames"] += 1
        n_atoms = len(atoms)
        if labels.energy is not None:
            error = float(out["energy"]) - labels.energy
            group["energy"].append(error / n_atoms)
            group["energy_total"].append(error)
            parity["energy"].append((labels.energy / n_atoms, float(out["energy"]) / n_atoms))
            parity["config_type"].append(ctype)
        if labels.forces is not None:
            predicted = np.asarray(out["forces"]).reshape(n_atoms, 3)
            group["forces"].append((predicted - labels.forces).ravel())
            parity["forces"].append(np.stack([labels.forces.ravel(), predicted.ravel()], 1))
            parity["force_config_type"].append((ctype, 3 * n_atoms))
        if labels.virial is not None and atoms.cell.rank == 3 and out.get("stress") is not None:
            virial = -voigt_6_to_full_3x3_stress(np.asarray(out["stress"])) * atoms.get_volume()
            group["virial"].append(((virial - labels.virial) / n_atoms).ravel())

    def table(parts: list[dict]) -> dict:
        row = {"frames": sum(p["frames"] for p in parts)}
        for name in ("energy", "energy_total", "forces", "virial"):
            chunks = [np.ravel(np.asarray(x, dtype=float)) for p in parts for x in p[name]]
            row[name] = error_metrics(np.concatenate(chunks) if chunks else np.zeros(0))
        return row

    result = {
        "overall": table(list(groups.values())),
        "config_types": {name: table([group]) for name, group in groups.items()},
        "units": dict(UNITS),
    }
    errors, stds = concatenate(residuals)
    if any(s.size for s in stds.values()):
        result["uncertainty"] = calibration_metrics(errors, stds)
    return result, parity


def format_error_table(result: dict) -> str:
    """A fixed-width table of RMSE / MAE in meV units, one row per config type plus overall."""
    header = (
        f"{'config_type':<20} {'frames':>6}  {'E RMSE':>8} {'E MAE':>8}  "
        f"{'F RMSE':>8} {'F MAE':>8}  {'V RMSE':>8} {'V MAE':>8}"
    )
    units = f"{'':<20} {'':>6}  {'meV/atom':>17}  {'meV/Å':>17}  {'meV/atom':>17}"
    lines = [header, units, "-" * len(header)]

    def fmt(metric: dict, key: str) -> str:
        value = metric[key]
        return f"{'-':>8}" if value is None else f"{1000 * value:8.2f}"

    rows = list(result["config_types"].items())
    if len(rows) > 1 or not rows:
        rows.append(("overall", result["overall"]))
    for name, row in rows:
        cells = [f"{name[:20]:<20} {row['frames']:>6} "]
        for quantity in ("energy", "forces", "virial"):
            cells.append(f" {fmt(row[quantity], 'rmse')} {fmt(row[quantity], 'mae')} ")
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)
