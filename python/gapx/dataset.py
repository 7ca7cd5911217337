"""Data sets of frames: reading them from files, and a summary of what they hold."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from .labels import DEFAULT_KEYS, extract_labels
from .validation import as_atomic_numbers


def read_frames(paths, index: str = ":", format: str | None = None) -> list:
    """All frames of one file or a list of files (extxyz or any ``ase.io``-readable), in order.

    ``index`` is an ``ase.io`` index: a slice such as ``":"`` or ``"2:10"``, or one frame (from
    the end when negative). Raises FileNotFoundError for a missing file and ValueError (naming the
    file and the reason) for one that cannot be read, holds no frames, or has no frame ``index``.
    """
    import ase.io

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    frames = []
    for path in map(os.fspath, paths):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"file not found: {path}")
        single = _single_index(index)
        if single is not None and single < 0:  # ase wraps some negative indices silently
            _check_index(path, single, _count_frames(path, format))
        try:
            read = ase.io.read(path, index=index, format=format)
        except (StopIteration, IndexError):
            if single is None:
                raise ValueError(f"cannot read {path}: index {index!r} is out of range") from None
            _check_index(path, single, _count_frames(path, format))
            raise ValueError(f"cannot read {path}: frame {single} is unreadable") from None
        except Exception as error:  # ase.io raises many types for unreadable files
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ValueError(f"cannot read {path}: {reason}") from None
        read = read if isinstance(read, list) else [read]
        if not read:
            raise ValueError(f"no frames in {path}")
        frames.extend(read)
    return frames


def _single_index(index) -> int | None:
    """``index`` as one frame number, or None when it is a slice (or not a number)."""
    try:
        return int(index)
    except (TypeError, ValueError):
        return None


def _count_frames(path: str, format: str | None) -> int:
    import ase.io

    try:
        return sum(1 for _ in ase.io.iread(path, index=":", format=format))
    except Exception as error:  # as in read_frames
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(f"cannot read {path}: {reason}") from None


def _check_index(path: str, index: int, n_frames: int) -> None:
    if not -n_frames <= index < n_frames:
        raise ValueError(
            f"cannot read {path}: index {index} is out of range, the file has {n_frames} "
            f"frame{'s' if n_frames != 1 else ''} (0 to {n_frames - 1}, or -1 to -{n_frames})"
        )


def config_type(atoms, keys: dict | None = None) -> str:
    """The frame's config_type (``"default"`` when it has none)."""
    key = (keys or DEFAULT_KEYS)["config_type"]
    return str(atoms.info.get(key, "default"))


def label_keywords(keys: dict) -> dict:
    """``{"energy": "E", ...}`` label names as :func:`gapx.labels.extract_labels` keywords."""
    return {f"{name}_key": value for name, value in keys.items()}


def data_summary(frames, keys: dict | None = None) -> dict:
    """Counts describing a training or test set (labels validated as ``GAP.fit`` does).

    ``keys`` maps label names (energy, forces, virial, stress, config_type) to where they are
    stored; missing names take :data:`gapx.labels.DEFAULT_KEYS`.
    """
    keys = {**DEFAULT_KEYS, **(keys or {})}
    n_atoms = np.array([len(a) for a in frames])
    species = Counter()
    for index, atoms in enumerate(frames):
        try:
            numbers = as_atomic_numbers(atoms.numbers)
        except ValueError as error:
            raise ValueError(f"frame {index}: {error}") from None
        species.update(chemical_symbols[z] for z in numbers)
    present = Counter()
    atoms_with_forces = 0
    for index, atoms in enumerate(frames):
        labels = extract_labels(atoms, index, **label_keywords(keys))
        for name in ("energy", "forces", "virial"):
            present[name] += getattr(labels, name) is not None
        atoms_with_forces += len(atoms) if labels.forces is not None else 0
    return {
        "n_frames": len(frames),
        "n_atoms": int(n_atoms.sum()),
        "atoms_per_frame": (int(n_atoms.min()), int(n_atoms.max())),
        "species": dict(sorted(species.items(), key=lambda kv: atomic_numbers.get(kv[0], 0))),
        "config_types": dict(Counter(config_type(a, keys) for a in frames)),
        "labels": {k: int(present.get(k, 0)) for k in ("energy", "forces", "virial")},
        "atoms_with_forces": atoms_with_forces,
        "periodic": int(sum(a.cell.rank == 3 and all(a.pbc) for a in frames)),
    }


def format_summary(summary: dict) -> str:
    """Four lines describing a :func:`data_summary`."""
    lo, hi = summary["atoms_per_frame"]
    size = f"{lo}" if lo == hi else f"{lo}-{hi}"
    species = ", ".join(f"{s} {n}" for s, n in summary["species"].items())
    types = ", ".join(f"{t} ({n})" for t, n in summary["config_types"].items())
    labels = ", ".join(f"{k} {n}" for k, n in summary["labels"].items())
    return "\n".join(
        [
            f"data: {summary['n_frames']} frames, {summary['n_atoms']} atoms ({size} per frame), "
            f"{summary['periodic']} periodic",
            f"  species: {species}",
            f"  config types: {types}",
            f"  labelled frames: {labels}",
        ]
    )


def merge_summaries(summaries: list[dict]) -> dict:
    """One :func:`data_summary` of the frames of several (shards' summaries, in order)."""
    if not summaries:
        raise ValueError("no summaries to merge")
    species, types, labels = Counter(), Counter(), Counter()
    for s in summaries:
        species.update(s["species"])
        types.update(s["config_types"])
        labels.update(s["labels"])
    return {
        "n_frames": sum(s["n_frames"] for s in summaries),
        "n_atoms": sum(s["n_atoms"] for s in summaries),
        "atoms_per_frame": (
            min(s["atoms_per_frame"][0] for s in summaries),
            max(s["atoms_per_frame"][1] for s in summaries),
        ),
        "species": dict(sorted(species.items(), key=lambda kv: atomic_numbers.get(kv[0], 0))),
        "config_types": dict(types),
        "labels": {k: int(labels.get(k, 0)) for k in ("energy", "forces", "virial")},
        "atoms_with_forces": sum(s["atoms_with_forces"] for s in summaries),
        "periodic": sum(s["periodic"] for s in summaries),
    }
