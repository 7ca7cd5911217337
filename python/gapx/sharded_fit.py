"""The fit of training data kept in files (shards), whose frames never meet in one process.

``scan`` (one read of every shard: counts, e0 statistics, the data summary, content hashes)
→ pass 1: per-block sparse candidates per (term, kind), merged on the client in block order
(:mod:`gapx.gp.candidates`; CUR first sums the blocks' Gram matrices) → pass 2: each block's
noise-scaled design rows reduced to an R factor where the block is read, the factors of each
group of :data:`~gapx.fit_memory.TREE_WIDTH` blocks merged in block order on the workers
(TSQR), the groups' roots folded into R on the client in order → the weights. The same
reduction runs without a cluster, so both give the same numbers. Whoever runs a block reads it
(:func:`gapx.shards.read_block`): with a cluster the client sends paths and frame ranges only.
Progress goes to a checkpoint (:mod:`gapx.checkpoint`) after selection and at intervals.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import warnings

import numpy as np
from ase.data import chemical_symbols

from . import blocks, checkpoint, fitting
from .fit_memory import TREE_WIDTH, largest_frame, plan_memory
from .gp import candidates as cand
from .gp.solver import stacked_factor
from .labels import extract_labels
from .shards import (
    combined_summary,
    fingerprint,
    plan_blocks,
    read_block,
    scan_shards,
    scanned_terms,
)
from .shards import gradient_bytes as shard_gradient_bytes

logger = logging.getLogger("gapx")


def _block_values(model, block):
    return blocks.descriptor_values(model.terms, read_block(block))


def block_gram(model, block) -> dict:
    """``{(term, kind): X^T X}`` of a block's rows, for the terms selecting by CUR."""
    values = _block_values(model, block)
    return {
        (t, kind): X.T @ X
        for t, term in enumerate(model.terms)
        if term.sparse_method == "cur"
        for kind, X in values[t].items()
    }


def block_candidates(shared, block) -> dict:
    """``{(term, kind): Candidates}`` of one block (seeded by the block's place in the order)."""
    model, projections = shared
    values = _block_values(model, block)
    return {
        (t, kind): cand.block_candidates(
            model.terms[t],
            X,
            block.index,
            projections.get((t, kind)),
            np.random.default_rng([model.seed, t, kind, block.index]),
        )
        for t in range(len(model.terms))
        for kind, X in values[t].items()
    }


def block_factor(shared, block) -> np.ndarray:
    """A block's noise-scaled design rows as an R factor (or rows, when short), read here."""
    model, e0, sparse_sets, n_columns = shared
    frames = read_block(block)
    labels = [
        extract_labels(atoms, k, **model.keys)
        for atoms, k in zip(frames, block.frames, strict=True)
    ]
    targets = fitting.frame_targets(model, frames, labels, e0)
    return blocks.block_factor((model.terms, sparse_sets, n_columns), frames, targets)


def merge_factors(shared, upper, lower) -> np.ndarray:
    """The TSQR step: R of two factors' rows stacked (``upper`` from earlier blocks)."""
    return stacked_factor(shared[3], upper, lower)


def shard_e0(model, scans, fit_mask) -> dict[str, float]:
    """e0 per species from the scans, as :func:`gapx.fitting.compute_e0` from the frames."""
    species = sorted(
        {s for scan in scans for s in scan.summary["species"]},
        key=lambda s: chemical_symbols.index(s),
    )
    isolated = {}
    for scan in scans:
        isolated.update(scan.isolated_energy)
    per_atom = np.concatenate([s.energy_per_atom[m] for s, m in zip(scans, fit_mask, strict=True)])
    per_atom = per_atom[~np.isnan(per_atom)]
    return fitting.e0_by_method(model.e0_method, species, isolated, per_atom)


def _select(model, pass1, client) -> dict:
    """Pass 1: sparse points per (term, kind) from per-block candidates."""
    projections = {}
    if any(term.sparse_method == "cur" for term in model.terms):
        grams = {}
        for result in blocks.map_blocks(
            client, block_gram, model, [(b,) for b in pass1], [len(b.frames) for b in pass1],
            desc="leverage", verbose=model.verbose,
        ):  # fmt: skip
            for key, G in result.items():
                grams[key] = G if key not in grams else grams[key] + G
        projections = {
            (t, kind): cand.leverage_projection(G, model.terms[t].n_sparse)
            for (t, kind), G in grams.items()
        }
    merged = {}
    results = blocks.map_blocks(
        client, block_candidates, (model, projections), [(b,) for b in pass1],
        [len(b.frames) for b in pass1], desc="sparse candidates", verbose=model.verbose,
    )  # fmt: skip
    for block, result in zip(pass1, results, strict=True):
        for (t, kind), found in sorted(result.items()):
            rng = np.random.default_rng([model.seed, t, kind, block.index, 1])
            merged[t, kind] = cand.merge_candidates(
                model.terms[t], merged.get((t, kind)), found, rng
            )
    return {
        (t, kind): cand.final_points(
            model.terms[t], found, np.random.default_rng([model.seed, t, kind])
        )
        for (t, kind), found in sorted(merged.items())
    }


def _summary(model, scans, fit_mask, sparse_sets, e0, plan) -> dict:
    labelled = np.concatenate([s.labelled[m] for s, m in zip(scans, fit_mask, strict=True)])
    n_atoms = np.concatenate([s.n_atoms[m] for s, m in zip(scans, fit_mask, strict=True)])
    counts = {
        "n_frames": int(n_atoms.size),
        "n_energies": int(labelled[:, 0].sum()),
        "n_force_components": int(3 * n_atoms[labelled[:, 1]].sum()),
        "n_virial_components": int(6 * labelled[:, 2].sum()),
    }
    names = [model.terms[s.term].describe_kind(s.kind) for s in sparse_sets]
    n_columns = sum(s.size for s in sparse_sets)
    n_obs = counts["n_energies"] + counts["n_force_components"] + counts["n_virial_components"]
    return {
        **counts,
        "n_shards": len(scans),
        "n_sparse": {name: s.size for name, s in zip(names, sparse_sets, strict=True)},
        "n_sparse_total": n_columns,
        **fitting.memory_estimate(n_obs, n_columns, plan.block_memory),
        "process_peak_bytes": plan.process_bytes,
        "sparse_jitter": {name: s.jitter for name, s in zip(names, sparse_sets, strict=True)},
        "e0": dict(e0),
    }


def _settings_only(model):
    """A copy of ``model`` without fitted state: what workers are sent."""
    settings = copy.copy(model)
    settings.sparse_sets, settings.alpha, settings.R = [], None, None
    settings.e0, settings.summary, settings.calibration = None, {}, None
    return settings


def fit_shards(
    model,
    paths,
    client=None,
    *,
    scans=None,
    checkpoint_path=None,
    resume=False,
    checkpoint_interval=600.0,
) -> fitting.FittedState:
    """Fit ``model``'s settings to the frames of the shard files ``paths`` (see
    :meth:`gapx.GAP.fit`); ``model`` is not modified.

    ``checkpoint_path``: where progress is written, after sparse selection and then after a
    group of blocks whenever ``checkpoint_interval`` seconds have passed since the last write.
    ``scans``: the shards' :func:`gapx.shards.scan_shards`, when the caller has them (scanned
    for terms of these types and cutoffs).
    ``resume``: continue from that checkpoint when it exists (refused when it was written for
    other data or settings); the result equals the uninterrupted fit's bit for bit.
    """
    start = time.perf_counter()
    model = _settings_only(model)
    if scans is None or any(s.terms != scanned_terms(model) for s in scans):
        scans = scan_shards(model, paths, client)
    gradient_bytes = [shard_gradient_bytes(s, model.terms) for s in scans]
    fit_mask = [
        ~s.isolated_atom if model.e0_method == "isolated_atom" else np.ones(s.n_frames, bool)
        for s in scans
    ]
    if not any(m.any() for m in fit_mask):
        raise ValueError("no frames left to fit after removing isolated_atom frames")
    data = combined_summary(scans)
    fitting.warn_unused_config_types(model, data["config_types"])
    species = data["species"]
    n_max = sum(term.max_sparse_points(species) for term in model.terms)
    pass2_bytes = [
        g + blocks.design_row_bytes(s.n_atoms, n_max)
        for s, g in zip(scans, gradient_bytes, strict=True)
    ]
    threads = None
    if client is not None:
        workers = client.scheduler_info()["workers"].values()
        threads = max((w["nthreads"] for w in workers), default=1)
    plan = plan_memory(model, species, largest_frame(pass2_bytes), threads)
    if model.verbose:
        print(plan.describe())
    logger.info(plan.describe())
    manifest = fingerprint(scans)
    key = checkpoint.settings_fingerprint(
        model,
        manifest,
        {"block_memory": model.block_memory, "memory_limit": model.memory_limit,
         "tree_width": TREE_WIDTH},
    )  # fmt: skip
    progress = None
    if resume:
        if checkpoint_path is None:
            raise ValueError("resume needs a checkpoint path")
        if os.path.isfile(checkpoint_path):
            progress = checkpoint.read(checkpoint_path, key)
        else:
            warnings.warn(
                f"no checkpoint at {checkpoint_path}: the fit starts from the beginning",
                UserWarning,
                stacklevel=3,
            )
    if progress is None:
        e0 = shard_e0(model, scans, fit_mask)
        pass1 = plan_blocks(scans, fit_mask, gradient_bytes, plan.block_memory)
        points = _select(model, pass1, client)
        sparse_sets = fitting.make_sparse_sets(model, points)
        solver = fitting.prior_solver(sparse_sets)
        progress = checkpoint.Progress(key, e0, points, solver.R, 0, 0)
        if checkpoint_path is not None:
            checkpoint.write(checkpoint_path, progress, manifest)
    else:
        sparse_sets = fitting.make_sparse_sets(model, progress.sparse_points)
        solver = fitting.prior_solver(sparse_sets)
        solver.R, solver.n_rows = progress.R, progress.n_rows
    e0 = progress.e0
    n_columns = sum(s.size for s in sparse_sets)
    summary = _summary(model, scans, fit_mask, sparse_sets, e0, plan)
    fitting.report_summary(summary, model.verbose)

    pass2 = plan_blocks(
        scans,
        fit_mask,
        [
            g + blocks.design_row_bytes(s.n_atoms, n_columns)
            for s, g in zip(scans, gradient_bytes, strict=True)
        ],
        plan.block_memory,
    )
    shared = (model, e0, sparse_sets, n_columns)
    todo = pass2[progress.groups_done * TREE_WIDTH :]
    last_write = time.monotonic()

    def group_done(group: int) -> None:
        nonlocal last_write
        if checkpoint_path is None or time.monotonic() - last_write < checkpoint_interval:
            return
        progress.R, progress.n_rows, progress.groups_done = solver.R, solver.n_rows, group + 1
        checkpoint.write(checkpoint_path, progress, manifest)
        last_write = time.monotonic()

    roots = blocks.reduce_groups(
        client, block_factor, merge_factors, shared, [(b,) for b in todo], TREE_WIDTH,
        desc="design rows", verbose=model.verbose,
    )  # fmt: skip
    for g, root in enumerate(roots, start=progress.groups_done):
        solver.add_rows(root)
        group_done(g)
    alpha, R = solver.solve()
    summary["fit_seconds"] = time.perf_counter() - start
    for s in sparse_sets:
        s.factor = np.ascontiguousarray(s.factor)
    return fitting.FittedState(
        e0=e0, sparse_sets=sparse_sets, alpha=alpha, R=np.ascontiguousarray(R), summary=summary
    )
