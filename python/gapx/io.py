"""Model files and training sets.

Model file: one zip archive written by ``numpy.savez`` holding plain numeric arrays and a JSON
header stored as a ``uint8`` array named ``__header__``. The header carries the format version,
the gapx version, the model hyperparameters, species, e0, the terms' and the baseline's
``to_dict()``, a training summary, and a manifest (name, shape, dtype) of every array. Reading
uses ``np.load(..., allow_pickle=False)`` and checks everything against the manifest; nothing is
ever unpickled or executed.

Training sets: :func:`read_training_set` reads any ASE-readable file; :func:`extract_labels` finds
and validates the labels of one frame (energy, forces, virial or stress, config_type, per-frame
sigmas).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress

FORMAT_NAME = "gapx-model"
FORMAT_VERSION = 1
HEADER = "__header__"
_ALLOWED_KINDS = "biuf"


def write_model_file(path, header: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``header`` (JSON-serialisable) and numeric ``arrays`` to ``path`` (exact name)."""
    manifest = {}
    clean = {}
    for name, value in arrays.items():
        if name == HEADER:
            raise ValueError(f"array name {HEADER!r} is reserved")
        array = np.ascontiguousarray(value)
        if array.dtype.kind not in _ALLOWED_KINDS:
            raise ValueError(f"array {name!r} has dtype {array.dtype}: only numeric arrays allowed")
        manifest[name] = {"shape": list(array.shape), "dtype": array.dtype.str}
        clean[name] = array
    full = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **header}
    full["arrays"] = manifest
    text = json.dumps(full, sort_keys=True, allow_nan=False)
    clean[HEADER] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    # A file object keeps numpy from appending ".npz" to the name.
    with open(os.fspath(path), "wb") as handle:
        np.savez(handle, **clean)


def read_model_file(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and validate a model file; returns ``(header, arrays)``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a zip archive, truncated or corrupted (CRC) data, an array that would need pickle, a
        missing/unparseable header, a newer format version, or arrays missing or with shapes and
        dtypes different from the manifest.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    where = f"model file {path!r}"
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{where} is corrupted or truncated: not a readable zip archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if HEADER not in names:
                raise ValueError(f"{where} has no gapx header: not a gapx model file")
            raw = archive[HEADER]
            header = _parse_header(raw, where)
            arrays = {name: archive[name] for name in names if name != HEADER}
    except ValueError as error:
        message = str(error)
        if "pickle" in message:
            raise ValueError(
                f"{where} contains an object array that would need pickle; refusing to load it"
            ) from None
        if message.startswith(where):
            raise
        raise ValueError(f"{where} is corrupted or truncated: {message}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as error:
        raise ValueError(f"{where} is corrupted or truncated: {error}") from None
    _check_manifest(header, arrays, where)
    return header, arrays


def _parse_header(raw: np.ndarray, where: str) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{where}: header is not a byte string")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{where}: header is not valid JSON ({error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ValueError(f"{where}: header does not describe a {FORMAT_NAME} file")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{where}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where} has format version {version}, newer than this gapx reads "
            f"({FORMAT_VERSION}); upgrade gapx (file written by gapx "
            f"{header.get('gapx_version', '?')})"
        )
    if not isinstance(header.get("arrays"), dict):
        raise ValueError(f"{where}: header has no array manifest")
    return header


def _check_manifest(header: dict, arrays: dict, where: str) -> None:
    manifest = header["arrays"]
    missing = sorted(set(manifest) - set(arrays))
    if missing:
        raise ValueError(f"{where} is missing arrays {missing}")
    extra = sorted(set(arrays) - set(manifest))
    if extra:
        raise ValueError(f"{where} has arrays not in its manifest: {extra}")
    for name, spec in manifest.items():
        array = arrays[name]
        try:
            shape = tuple(int(s) for s in spec["shape"])
            dtype = np.dtype(spec["dtype"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: bad manifest entry for {name!r}") from None
        if array.shape != shape or array.dtype != dtype:
            raise ValueError(
                f"{where}: array {name!r} has shape {array.shape} dtype {array.dtype}, "
                f"expected {shape} {dtype}"
            )


def load(path):
    """Load a model written by ``GAP.save`` (validated; no pickle, no code execution)."""
    from .model import GAP

    header, arrays = read_model_file(path)
    return GAP._from_file(header, arrays, where=f"model file {os.fspath(path)!r}")


def read_training_set(path, index=":", format: str | None = None) -> list:
    """Read labelled frames with ``ase.io.read`` (extxyz, ASE trajectories, ...)."""
    import ase.io

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"training set not found: {path}")
    frames = ase.io.read(path, index=index, format=format)
    return frames if isinstance(frames, list) else [frames]


@dataclass
class FrameLabels:
    """Validated labels of one frame (``None`` when absent).

    ``virial`` is the 3x3 virial W = -dE/deps in eV (a stress label is converted to
    ``-stress * volume``); sigmas are per-frame overrides from ``info``.
    """

    energy: float | None
    forces: np.ndarray | None
    virial: np.ndarray | None
    config_type: str | None
    energy_sigma: float | None = None
    force_sigma: float | None = None
    virial_sigma: float | None = None


def _lookup(atoms, key: str, where: str):
    results = getattr(atoms.calc, "results", None) if atoms.calc is not None else None
    if results and key in results:
        return results[key]
    if where == "arrays":
        return atoms.arrays.get(key)
    return atoms.info.get(key)


def _finite_array(value, shape_ok, what: str, frame: int, expected: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"frame {frame}: {what} is not numeric ({value!r})") from None
    if not shape_ok(array.shape):
        raise ValueError(f"frame {frame}: {what} has shape {array.shape}, expected {expected}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"frame {frame}: {what} contains NaN or infinite values")
    return array


def _sigma_override(atoms, key: str, frame: int) -> float | None:
    if key not in atoms.info:
        return None
    try:
        value = float(atoms.info[key])
    except (TypeError, ValueError):
        raise ValueError(f"frame {frame}: {key} must be a number") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"frame {frame}: {key} must be positive, got {value}")
    return value


def extract_labels(
    atoms,
    frame: int,
    *,
    energy_key: str = "energy",
    forces_key: str = "forces",
    virial_key: str = "virial",
    stress_key: str = "stress",
    config_type_key: str = "config_type",
) -> FrameLabels:
    """Find and validate the labels of ``atoms`` (frame number ``frame`` for messages).

    Each key is looked up first in the attached calculator's ``results`` (ASE's extxyz reader
    puts energy, forces and stress there), then in ``info`` (energy, virial, stress) or
    ``arrays`` (forces). ``virial``: 3x3 or 9 values in eV; ``stress``: 6 Voigt or 3x3 values in
    eV/Å^3, converted to ``virial = -stress * volume``. Both need a periodic 3-d cell.
    """
    n_atoms = len(atoms)
    if n_atoms == 0:
        raise ValueError(f"frame {frame}: no atoms")
    energy = _lookup(atoms, energy_key, "info")
    if energy is not None:
        try:
            energy = float(np.asarray(energy, dtype=np.float64).reshape(()))
        except (TypeError, ValueError):
            raise ValueError(f"frame {frame}: energy {energy!r} is not a single number") from None
        if not np.isfinite(energy):
            raise ValueError(f"frame {frame}: energy is NaN or infinite")
    forces = _lookup(atoms, forces_key, "arrays")
    if forces is not None:
        forces = _finite_array(
            forces, lambda s: s == (n_atoms, 3), "forces", frame, f"({n_atoms}, 3)"
        )
    periodic = bool(np.all(atoms.pbc)) and atoms.cell.rank == 3
    virial = _lookup(atoms, virial_key, "info")
    if virial is not None:
        virial = _finite_array(
            virial, lambda s: s in ((3, 3), (9,)), "virial", frame, "(3, 3) or (9,)"
        ).reshape(3, 3)
    stress = _lookup(atoms, stress_key, "info")
    if stress is not None:
        stress = _finite_array(
            stress, lambda s: s in ((3, 3), (6,)), "stress", frame, "(6,) or (3, 3)"
        )
        if stress.shape == (6,):
            stress = voigt_6_to_full_3x3_stress(stress)
    if (virial is not None or stress is not None) and not periodic:
        which = "virial" if virial is not None else "stress"
        raise ValueError(f"frame {frame}: {which} label on a frame without a periodic 3-d cell")
    if stress is not None:
        from_stress = -stress * atoms.get_volume()
        if virial is not None and not np.allclose(virial, from_stress, rtol=1e-6, atol=1e-8):
            raise ValueError(f"frame {frame}: virial and stress labels disagree")
        virial = from_stress
    if energy is None and forces is None and virial is None:
        raise ValueError(
            f"frame {frame}: no labels (looked for energy {energy_key!r}, forces {forces_key!r},"
            f" virial {virial_key!r}, stress {stress_key!r})"
        )
    config_type = atoms.info.get(config_type_key)
    return FrameLabels(
        energy=energy,
        forces=forces,
        virial=virial,
        config_type=None if config_type is None else str(config_type),
        energy_sigma=_sigma_override(atoms, "energy_sigma", frame),
        force_sigma=_sigma_override(atoms, "force_sigma", frame),
        virial_sigma=_sigma_override(atoms, "virial_sigma", frame),
    )
