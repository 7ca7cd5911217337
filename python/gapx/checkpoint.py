"""A sharded fit's progress on disk, so that an interrupted fit continues where it stopped.

The checkpoint is one file in the model-file container (:mod:`gapx.io`: zip of a JSON header
and ``.npy`` arrays, written atomically, read with bounded sizes and no pickle). It holds the
fit's fingerprint (a hash of every shard's content and of the settings that change the
result), e0, the sparse points, the R factor folded so far and how many block groups it holds.
Resuming recomputes nothing that is in it, and folds the remaining groups exactly as the
uninterrupted fit would: the result is the same bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from .io import read_model_file, write_model_file

KIND = "gapx-fit-checkpoint"


def settings_fingerprint(model, manifest: list[dict], plan: dict) -> str:
    """SHA-256 of everything that decides a sharded fit's result: the shards' contents (the
    ``manifest`` from :func:`gapx.shards.fingerprint`, in order), the model's settings and the
    block ``plan`` (block sizes and tree width)."""
    settings = {
        "terms": [t.to_dict() for t in model.terms],
        "baseline": None if model.baseline is None else model.baseline.to_dict(),
        "sigmas": [model.sigma_energy, model.sigma_force, model.sigma_virial],
        "config_type_sigma": {k: list(v) for k, v in sorted(model.config_type_sigma.items())},
        "e0_method": model.e0_method,
        "sparse_jitter": model.sparse_jitter,
        "seed": model.seed,
        "keys": model.keys,
        "shards": [{"n_frames": s["n_frames"], "sha256": s["sha256"]} for s in manifest],
        "plan": plan,
    }
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Progress:
    """A fit's state after sparse selection and ``groups_done`` groups of design blocks."""

    fingerprint: str
    e0: dict[str, float]
    sparse_points: dict  # {(term, kind): (n, F) array}
    R: np.ndarray  # (M+1, M+1): prior rows and the groups done, folded
    n_rows: int
    groups_done: int


def write(path, progress: Progress, manifest: list[dict]) -> None:
    """Write ``progress`` to ``path`` atomically (the old checkpoint or the new one, never a
    part)."""
    keys = sorted(progress.sparse_points)
    header = {
        "checkpoint": {
            "kind": KIND,
            "fingerprint": progress.fingerprint,
            "e0": progress.e0,
            "sparse_sets": [[int(t), int(kind)] for t, kind in keys],
            "n_rows": int(progress.n_rows),
            "groups_done": int(progress.groups_done),
            "shards": manifest,
        }
    }
    arrays = {f"points_{n}": progress.sparse_points[key] for n, key in enumerate(keys)}
    arrays["R"] = progress.R
    write_model_file(os.fspath(path), header, arrays)


def read(path, fingerprint: str) -> Progress:
    """The progress in checkpoint ``path``; ValueError when it is not a fit checkpoint or was
    written for other data or settings (``fingerprint`` is this fit's)."""
    header, arrays = read_model_file(path)
    meta = header.get("checkpoint")
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise ValueError(f"{os.fspath(path)} is not a gapx fit checkpoint")
    if meta.get("fingerprint") != fingerprint:
        raise ValueError(
            f"cannot resume from {os.fspath(path)}: it was written for other data or settings "
            "(the shards' contents, the model's settings, block_memory or memory_limit differ); "
            "fit without resume, or with the data and settings of that checkpoint"
        )
    points = {
        (int(t), int(kind)): np.ascontiguousarray(arrays[f"points_{n}"], dtype=np.float64)
        for n, (t, kind) in enumerate(meta["sparse_sets"])
    }
    return Progress(
        fingerprint=fingerprint,
        e0={str(k): float(v) for k, v in meta["e0"].items()},
        sparse_points=points,
        R=np.asfortranarray(arrays["R"], dtype=np.float64),
        n_rows=int(meta["n_rows"]),
        groups_done=int(meta["groups_done"]),
    )
