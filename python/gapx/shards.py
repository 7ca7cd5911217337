"""Training data kept in files (extxyz shards): naming them, the scan pass, reading blocks.

A sharded fit never holds the data set in one process. The scan pass reads each shard once
(on a worker when there is a cluster) and returns what planning needs, a few numbers per frame:
atom counts, descriptor-gradient bytes, per-atom energies for e0, and the shard's data summary
and content hash. Blocks are then frame ranges of one shard, read where they are used.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass

import numpy as np
from ase.data import chemical_symbols

from . import blocks
from .dataset import data_summary, merge_summaries, read_frames
from .labels import extract_labels
from .neighbors import StructureContext
from .validation import as_atomic_numbers

#: Frames the scan pass holds at once (its memory is a few frames, whatever the shard's size).
SCAN_CHUNK = 64


def is_file_source(data) -> bool:
    """Whether fit data names files (a path, a glob, or a list of them) rather than Atoms."""
    if isinstance(data, (str, os.PathLike)):
        return True
    return (
        isinstance(data, (list, tuple))
        and len(data) > 0
        and all(isinstance(d, (str, os.PathLike)) for d in data)
    )


def shard_paths(sources) -> list[str]:
    """The shard files named by ``sources`` (paths or glob patterns), in the order given, each
    pattern's matches sorted. A missing file or a pattern matching nothing raises
    FileNotFoundError naming it; a file named twice is refused (its frames would count twice)."""
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    paths = []
    for source in map(os.fspath, sources):
        if glob.has_magic(source):
            matches = sorted(p for p in glob.glob(source) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(f"no shard matches {source}")
            paths.extend(matches)
        elif not os.path.isfile(source):
            raise FileNotFoundError(f"file not found: {source}")
        else:
            paths.append(source)
    seen = set()
    for path in paths:
        if os.path.realpath(path) in seen:
            raise ValueError(f"shard {path} is named twice")
        seen.add(os.path.realpath(path))
    return paths


@dataclass
class ShardScan:
    """What the scan pass learnt about one shard (a few numbers per frame)."""

    path: str
    sha256: str
    n_atoms: np.ndarray  # (n_frames,) int
    terms: list  # (type_name, cutoff) of the terms it was scanned for
    gradient_bytes_per_feature: np.ndarray  # (n_frames, n_terms): Term.gradient_bytes / n_features
    energy_per_atom: np.ndarray  # (n_frames,) (energy - baseline) / n_atoms, NaN without energy
    isolated_atom: np.ndarray  # (n_frames,) bool: config_type == "isolated_atom"
    labelled: np.ndarray  # (n_frames, 3) bool: has energy, forces, virial
    isolated_energy: dict  # {symbol: energy - baseline} of single-atom isolated_atom frames
    summary: dict  # dataset.data_summary of the shard

    @property
    def n_frames(self) -> int:
        return int(self.n_atoms.size)


def scanned_terms(model) -> list:
    """What of the terms a scan depends on: their types and cutoffs."""
    return [(term.type_name, float(term.cutoff)) for term in model.terms]


def gradient_bytes(scan: ShardScan, terms) -> np.ndarray:
    """Bytes of each frame's descriptor gradients for ``terms`` (those scanned for, possibly
    with other species): :func:`gapx.blocks.gradient_bytes` from the scan."""
    return scan.gradient_bytes_per_feature @ np.array([t.n_features for t in terms], float)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _iter_chunks(path: str):
    """Frames of ``path`` in lists of :data:`SCAN_CHUNK`, naming the shard when it is corrupt."""
    import ase.io

    chunk = []
    try:
        for atoms in ase.io.iread(path, index=":", format="extxyz"):
            chunk.append(atoms)
            if len(chunk) == SCAN_CHUNK:
                yield chunk
                chunk = []
    except Exception as error:  # ase.io raises many types for corrupt files
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(f"cannot read shard {path}: {reason}") from None
    if chunk:
        yield chunk


def scan_shard(model, path: str) -> ShardScan:
    """Read shard ``path`` once: check every frame as a fit does (labels, elements, overlapping
    atoms; errors name the shard and frame) and return its :class:`ShardScan`.

    Of ``model`` the scan uses only what does not depend on the data's species (label keys,
    baseline, e0 method, the terms' types and cutoffs), so a command line can scan before it
    builds a model whose SOAP species default to the data's: gradient bytes are kept per
    feature (a term's are proportional to its feature count, an entry per feature)."""
    keys = {name[: -len("_key")]: value for name, value in model.keys.items()}
    n_atoms, per_feature, per_atom, isolated, labelled, summaries = [], [], [], [], [], []
    isolated_energy = {}
    first = 0
    try:
        for frames in _iter_chunks(path):
            for offset, atoms in enumerate(frames):
                frame = first + offset
                label = extract_labels(atoms, frame, **model.keys)
                try:
                    as_atomic_numbers(atoms.numbers)
                    context = StructureContext(atoms)
                    context.check_no_overlap()
                except ValueError as error:
                    raise ValueError(f"frame {frame}: {error}") from None
                per_feature.append(
                    [term.gradient_bytes(context) / term.n_features for term in model.terms]
                )
                base = 0.0
                if model.baseline is not None and label.energy is not None:
                    base = float(model.baseline.calculate(atoms)["energy"])
                energy = np.nan if label.energy is None else label.energy - base
                per_atom.append(energy / len(atoms))
                isolated.append(label.config_type == "isolated_atom")
                labelled.append(
                    [label.energy is not None, label.forces is not None, label.virial is not None]
                )
                if isolated[-1] and model.e0_method == "isolated_atom":
                    if len(atoms) != 1 or label.energy is None:
                        raise ValueError(
                            f"frame {frame}: an isolated_atom frame must have one atom and an "
                            "energy"
                        )
                    isolated_energy[chemical_symbols[atoms.numbers[0]]] = energy
                n_atoms.append(len(atoms))
            summaries.append(data_summary(frames, keys))
            first += len(frames)
    except ValueError as error:
        message = str(error)
        prefix = "" if message.startswith(f"cannot read shard {path}") else f"shard {path}: "
        raise ValueError(prefix + message) from None
    if not n_atoms:
        raise ValueError(f"no frames in shard {path}")
    return ShardScan(
        path=path,
        sha256=file_sha256(path),
        n_atoms=np.array(n_atoms, dtype=np.int64),
        terms=scanned_terms(model),
        gradient_bytes_per_feature=np.array(per_feature, dtype=np.float64),
        energy_per_atom=np.array(per_atom, dtype=np.float64),
        isolated_atom=np.array(isolated, dtype=bool),
        labelled=np.array(labelled, dtype=bool).reshape(-1, 3),
        isolated_energy=isolated_energy,
        summary=merge_summaries(summaries),
    )


def scan_shards(model, paths: list[str], client=None) -> list[ShardScan]:
    """:func:`scan_shard` of every shard, in order: on the cluster's workers when ``client`` is
    given (the client sends paths and receives the scans), else here one after the other."""
    if client is None:
        return [scan_shard(model, path) for path in paths]
    [shared] = client.scatter([model], broadcast=True, hash=False)
    futures = [client.submit(scan_shard, shared, path, pure=False) for path in paths]
    try:
        return client.gather(futures)
    finally:
        client.cancel(futures)


@dataclass(frozen=True)
class ShardBlock:
    """Frames ``frames`` (indices within the shard, ascending) of shard ``path``: one unit of
    work, read by whoever runs it."""

    index: int  # position in the fit's block order
    path: str
    frames: tuple[int, ...]


def read_block(block: ShardBlock) -> list:
    """The frames of ``block``, read from its shard (only up to its last frame)."""
    start, stop = block.frames[0], block.frames[-1] + 1
    try:
        frames = read_frames(block.path, index=f"{start}:{stop}", format="extxyz")
    except (OSError, ValueError) as error:
        raise ValueError(f"shard {block.path} (frames {start}-{stop - 1}): {error}") from None
    if len(frames) != stop - start:
        raise ValueError(
            f"shard {block.path} has changed since the scan: frames {start}-{stop - 1} expected, "
            f"{len(frames)} read"
        )
    return [frames[k - start] for k in block.frames]


def plan_blocks(scans: list[ShardScan], fit_mask: list, frame_bytes: list, block_memory: float):
    """Blocks of each shard's fitted frames (``fit_mask[s]`` of shard ``s``) holding at most
    ``block_memory`` bytes by ``frame_bytes[s]``; blocks never span shards, so the partition
    depends only on the data and the block size."""
    planned = []
    for scan, mask, sizes in zip(scans, fit_mask, frame_bytes, strict=True):
        chosen = np.flatnonzero(mask)
        for block in blocks.frame_blocks(sizes[chosen], block_memory):
            frames = tuple(int(chosen[k]) for k in block)
            planned.append(ShardBlock(len(planned), scan.path, frames))
    return planned


def combined_summary(scans: list[ShardScan]) -> dict:
    """The data summary of all shards, reduced from the per-shard summaries."""
    return merge_summaries([scan.summary for scan in scans])


def fingerprint(scans: list[ShardScan]) -> list[dict]:
    """The manifest of the data: each shard's path, frame count and content hash."""
    return [{"path": s.path, "n_frames": s.n_frames, "sha256": s.sha256} for s in scans]
