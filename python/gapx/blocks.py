"""The fit's unit of work: blocks of frames, planned by memory, run here or on a Dask cluster.

A fit makes two passes over its frames, each as a sequence of blocks: descriptor values (for
sparse-point selection), then noise-scaled design rows folded into the R factor. Blocks are
consecutive frames holding at most ``block_memory`` bytes, so memory stays bounded whatever the
data set's size; :func:`map_blocks` runs them in order, locally or on workers.
"""

from __future__ import annotations

import collections
import itertools

import numpy as np
from tqdm.auto import tqdm

from .gp import design
from .gp.solver import stacked_factor
from .neighbors import StructureContext


def frame_blocks(frame_bytes, block_memory: float) -> list[list[int]]:
    """Consecutive blocks of frame indices, each holding at most ``block_memory`` bytes (or
    one frame when a single frame is larger)."""
    blocks: list[list[int]] = [[]]
    held = 0.0
    for k, size in enumerate(frame_bytes):
        if blocks[-1] and held + size > block_memory:
            blocks.append([])
            held = 0.0
        blocks[-1].append(k)
        held += size
    return blocks if blocks[0] else []


def gradient_bytes(frames, terms) -> np.ndarray:
    """Bytes of each frame's descriptor gradients, as each term counts its own
    (:meth:`gapx.terms.Term.gradient_bytes`; a three-body term's grow with the square of the
    neighbour count), from one neighbour list per cutoff and frame."""
    out = np.zeros(len(frames))
    for n, atoms in enumerate(frames):
        context = StructureContext(atoms)
        out[n] = sum(term.gradient_bytes(context) for term in terms)
    return out


def design_row_bytes(n_atoms, n_columns: int) -> np.ndarray:
    """Bytes of each frame's design rows while a block is assembled, from the frames' atom
    counts: its (1 + 3 n_atoms + 6) rows of M + 1 columns, held twice (assembly and the
    noise-scaled copy)."""
    n_atoms = np.asarray(n_atoms, dtype=np.float64)
    return 16.0 * (7 + 3 * n_atoms) * (n_columns + 1)


def map_blocks(client, fn, shared, block_args, block_sizes, desc, verbose):
    """Yield ``fn(shared, *args)`` for each block, in block order, with a progress bar.

    Without a client the blocks run here one after the other (one block in memory at a time).
    With a ``dask.distributed.Client`` the shared state is sent to the workers once and the
    blocks run there; results are consumed in submission order so folding them stays
    deterministic, while workers keep computing later blocks. At most two blocks per worker
    are in flight, so finished (M+1)^2 factors never pile up faster than they are folded.
    """
    progress = tqdm(
        total=sum(block_sizes), desc=desc, disable=not verbose, leave=False, unit="frame"
    )
    if client is None:
        for args, size in zip(block_args, block_sizes, strict=True):
            yield fn(shared, *args)
            progress.update(size)
    else:
        [shared_future] = client.scatter([shared], broadcast=True, hash=False)
        window = 2 * max(1, len(client.scheduler_info()["workers"]))
        blocks = iter(zip(block_args, block_sizes, strict=True))
        in_flight = collections.deque()

        def submit_next() -> None:
            for args, size in itertools.islice(blocks, 1):
                in_flight.append((client.submit(fn, shared_future, *args, pure=False), size))

        for _ in range(window):
            submit_next()
        while in_flight:
            future, size = in_flight.popleft()
            result = future.result()
            future.release()
            submit_next()
            yield result
            progress.update(size)
    progress.close()


def reduce_groups(client, leaf, combine, shared, leaf_args, width: int, desc: str, verbose):
    """Yield, per group of ``width`` consecutive blocks, the group's ``leaf(shared, *args)``
    results reduced in block order: ``combine(shared, combine(shared, r0, r1), r2) ...``.

    The reduction's shape depends only on the block order and ``width``, so the result is the
    same here or on any cluster, whatever its size. On a cluster the leaves run in parallel and
    the merges on the workers too: the client receives only each group's root. Here, each leaf
    is merged as soon as it is computed (three results in memory at most). Enough groups are
    in flight to keep every worker busy (two per ``width`` workers, at least two).
    """
    groups = [leaf_args[i : i + width] for i in range(0, len(leaf_args), width)]
    progress = tqdm(total=len(leaf_args), desc=desc, disable=not verbose, leave=False)
    if client is None:
        for group in groups:
            yield _fold(group, lambda args: leaf(shared, *args), lambda a, b: combine(shared, a, b))
            progress.update(len(group))
        progress.close()
        return
    [shared_future] = client.scatter([shared], broadcast=True, hash=False)
    n_workers = max(1, len(client.scheduler_info()["workers"]))
    window = max(2, -(-2 * n_workers // width))

    def submit(group):
        return _fold(
            group,
            lambda args: client.submit(leaf, shared_future, *args, pure=False),
            lambda a, b: client.submit(combine, shared_future, a, b, pure=False),
        )

    pending = collections.deque()
    queue = iter(groups)
    for group in itertools.islice(queue, window):
        pending.append((submit(group), len(group)))
    while pending:
        root, size = pending.popleft()
        result = root.result()
        root.release()
        for group in itertools.islice(queue, 1):
            pending.append((submit(group), len(group)))
        yield result
        progress.update(size)
    progress.close()


def _fold(items, leaf, combine):
    node = None
    for item in items:
        node = leaf(item) if node is None else combine(node, leaf(item))
    return node


def descriptor_values(terms, frames) -> list[dict[int, np.ndarray]]:
    """Descriptor rows of ``frames`` per term, grouped by kind (one context per frame)."""
    out = [dict() for _ in terms]
    contexts = [StructureContext(atoms) for atoms in frames]
    for t, term in enumerate(terms):
        grouped: dict[int, list] = {}
        for atoms, context in zip(frames, contexts, strict=True):
            rows = term.rows(atoms, gradients=False, context=context)
            for kind in np.unique(rows.kinds):
                grouped.setdefault(int(kind), []).append(rows.X[rows.kinds == kind])
        out[t] = {kind: np.concatenate(parts) for kind, parts in grouped.items()}
    return out


def stacked_rows(terms, frames) -> list[tuple]:
    """Each term's rows of a block of frames, with gradients, stacked by
    :func:`gapx.gp.design.stack_rows`: ``[(rows, frame_of_row), ...]`` (one context per frame,
    shared by the terms)."""
    n_atoms = [len(atoms) for atoms in frames]
    contexts = [StructureContext(atoms) for atoms in frames]
    return [
        design.stack_rows(
            [
                term.rows(atoms, gradients=True, context=context)
                for atoms, context in zip(frames, contexts, strict=True)
            ],
            n_atoms,
        )
        for term in terms
    ]


def scaled_rows(model_parts, frames, targets, stacked=None) -> np.ndarray:
    """Noise-scaled design rows ``[K_NM / sigma | y / sigma]`` (n_obs, M + 1) of a block.

    ``targets[f]`` is ``(energy, forces, virial, (sigma_e, sigma_f, sigma_v))`` of frame ``f``
    (None where unlabelled), already with e0 and the baseline removed. ``stacked`` is the
    block's :func:`stacked_rows`, computed here when not given.
    """
    terms, sparse_sets, n_columns = model_parts
    n_atoms = [len(atoms) for atoms in frames]
    layout = design.block_layout(
        n_atoms,
        [t[0] is not None for t in targets],
        [t[1] is not None for t in targets],
        [t[2] is not None for t in targets],
    )
    if stacked is None:
        stacked = stacked_rows(terms, frames)
    # Fortran order: LAPACK folds the block into R without another copy.
    augmented = np.zeros((layout.n_obs, n_columns + 1), order="F")
    design.assemble_block(
        [rows for rows, _ in stacked],
        [frame_of_row for _, frame_of_row in stacked],
        [term.kernel for term in terms],
        sparse_sets,
        layout,
        n_columns,
        out=augmented[:, :n_columns],
    )
    y = np.zeros(layout.n_obs)
    sigma = np.ones(layout.n_obs)
    for f, (energy, forces, virial, (se, sf, sv)) in enumerate(targets):
        if energy is not None:
            y[layout.energy_row[f]] = energy
            sigma[layout.energy_row[f]] = se
        if forces is not None:
            r0 = layout.force_row[f]
            y[r0 : r0 + 3 * n_atoms[f]] = forces.reshape(-1)
            sigma[r0 : r0 + 3 * n_atoms[f]] = sf
        if virial is not None:
            r0 = layout.virial_row[f]
            y[r0 : r0 + 6] = virial
            sigma[r0 : r0 + 6] = sv
    augmented[:, n_columns] = y
    augmented /= sigma[:, None]
    return augmented


def block_factor(model_parts, frames, targets) -> np.ndarray:
    """A block's scaled rows, or, when taller than wide, their R factor (same R^T R).

    Folding R instead of the rows gives the same normal matrix and solution, and keeps what a
    worker sends back to at most (M+1)^2 numbers.
    """
    return stacked_factor(model_parts[2], scaled_rows(model_parts, frames, targets))
