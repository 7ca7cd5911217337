"""What each process of a sharded fit holds, and the block size that keeps it under a limit.

With ``M`` sparse points (at most ``term.max_sparse_points`` per term before selection), ``F_t``
features of term ``t``, ``K_t`` kinds and a block of ``B`` bytes (descriptor gradients and
design rows of its frames), a process holds:

* the single process (no cluster): ``4 B + 4 R`` (the folded R, its group's partial factor, a
  block's factor and a merge's output) plus the selection state ``S``;
* the client of a cluster: ``2 R + S`` (the folded R and one group's root; no block);
* a worker running ``T`` tasks at once (its threads): ``T (4 B + 3 R) + S`` (a block's rows and
  factor, or a merge's two inputs and its output, per task);

with ``R = 8 (M + 1)^2`` bytes, a block counted at its transient peak ``BLOCK_PEAK_FACTOR B``
(4 B), and ``S = sum_t 8 (2 M_t F_t + [CUR] 2 K_t F_t^2)``: the running
candidates and one block's, and for CUR the summed Gram matrices ``X^T X`` per kind. Finished
block factors of the groups in flight (``TREE_WIDTH`` blocks each) may also wait on a worker
until they are merged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fitting import format_bytes

#: Peak bytes of a block being computed per byte of its planned gradients and design rows
#: (``B``): SOAP's intermediate expansion gradients and the kernel contractions come and go
#: on top. Measured: 3.8 (peak RSS above the interpreter's, 54-atom Cu cells, SOAP n_max 8,
#: l_max 6, 200 sparse points, blocks of 16 and 64 MB alike).
BLOCK_PEAK_FACTOR = 4.0

#: Blocks merged into one factor (on the workers, with a cluster) before the client folds it
#: into R: fixed, so the reduction's shape (and the result's rounding) never depends on the
#: cluster.
TREE_WIDTH = 8


@dataclass
class MemoryPlan:
    """The planned sizes (bytes) of a sharded fit."""

    n_columns: int  # M, at most
    factor_bytes: float  # R = 8 (M + 1)^2
    selection_bytes: float  # S
    block_memory: float  # B, after any memory_limit
    process_bytes: dict  # {"single process" | "client" | "worker": peak bytes}

    def describe(self) -> str:
        peaks = ", ".join(f"{name} {format_bytes(b)}" for name, b in self.process_bytes.items())
        return (
            f"memory plan: R factor {format_bytes(self.factor_bytes)} (M <= {self.n_columns}), "
            f"sparse selection {format_bytes(self.selection_bytes)}, blocks of "
            f"{format_bytes(self.block_memory)}; peak per process: {peaks}"
        )


def selection_bytes(model, species_counts: dict) -> float:
    """``S`` of the module docstring: candidates and Gram matrices of pass 1."""
    total = 0.0
    for term in model.terms:
        n_points = term.max_sparse_points(species_counts)
        total += 16.0 * n_points * term.n_features
        if term.sparse_method == "cur":
            total += 16.0 * len(term.possible_kinds(species_counts)) * term.n_features**2
    return total


def plan_memory(
    model, species_counts: dict, largest_frame_bytes: float, worker_threads: int | None
) -> MemoryPlan:
    """The :class:`MemoryPlan` of fitting ``model`` to data with these atom counts per species.

    ``largest_frame_bytes``: the largest one frame's block bytes (gradients and design rows at
    the largest M). ``worker_threads``: the most tasks a worker of the cluster runs at once, or
    None without a cluster. With ``model.memory_limit``, blocks shrink so that every process stays
    under it; ValueError, naming the numbers, when even one frame per block does not fit (or R
    itself does not).
    """
    n_columns = int(sum(term.max_sparse_points(species_counts) for term in model.terms))
    factor = 8.0 * (n_columns + 1) ** 2
    selection = selection_bytes(model, species_counts)
    # Bytes held besides the blocks, and how many blocks a process holds at once.
    fixed = {"single process": 4 * factor + selection}
    n_blocks = {"single process": 1}
    if worker_threads is not None:
        fixed = {
            "client": 2 * factor + selection,
            "worker": worker_threads * 3 * factor + selection,
        }
        n_blocks = {"client": 0, "worker": worker_threads}
    block = float(model.block_memory)
    limit = model.memory_limit
    if limit is not None:
        largest_fixed = max(fixed.values())
        held = (
            f"{format_bytes(largest_fixed)} held per process: R factors of {n_columns} sparse "
            f"points ({format_bytes(factor)} each) and sparse selection "
            f"({format_bytes(selection)})"
        )
        if largest_fixed >= limit:
            raise ValueError(
                f"the fit cannot stay under memory_limit {format_bytes(limit)}: {held} already "
                "exceed it; reduce n_sparse or raise memory_limit"
            )
        room = min((limit - fixed[p]) / (n * BLOCK_PEAK_FACTOR) for p, n in n_blocks.items() if n)
        block = min(block, room)
        if block < largest_frame_bytes:
            raise ValueError(
                f"the fit cannot stay under memory_limit {format_bytes(limit)}: {held} leave "
                f"room for blocks of {format_bytes(room)} (a block peaks at about "
                f"{BLOCK_PEAK_FACTOR:g} times its size), but the largest frame needs "
                f"{format_bytes(largest_frame_bytes)}; reduce n_sparse or raise memory_limit"
            )
    peaks = {
        name: held + n_blocks[name] * BLOCK_PEAK_FACTOR * max(block, largest_frame_bytes)
        for name, held in fixed.items()
    }
    return MemoryPlan(n_columns, factor, selection, block, peaks)


def largest_frame(frame_bytes: list[np.ndarray]) -> float:
    """The largest entry of per-shard per-frame byte counts."""
    return float(max(np.max(b) for b in frame_bytes if b.size))
