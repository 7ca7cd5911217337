"""A sparse-GP fit that grows: frames and sparse points added without refitting from scratch.

The fit's weights come from the QR factor R of the stacked system (ARCHITECTURE.md, "The sparse
GP in one place")::

    A = [ Lambda^-1/2 K_NM | Lambda^-1/2 y ]      one block of rows per batch of frames
        [ L^T              | 0             ]      K_MM = L L^T, block diagonal over sparse sets

Adding frames adds rows; adding sparse points adds columns, and a new column needs every old
row's value there, i.e. the kernel between the old frames' descriptors (and their gradients) and
the new points. :class:`IncrementalFit` therefore keeps

* the noise-scaled rows of every frame at every current column (``n_obs x (M + 1)`` numbers:
  small next to the descriptor gradients they were built from), and
* the frames' stacked descriptor rows and gradients (:func:`gapx.blocks.stacked_rows`), as long
  as they fit in ``descriptor_memory`` bytes; blocks beyond the budget are recomputed when
  columns are added (counted in ``stats["recomputed_blocks"]``).

An update with ``B`` new rows and ``m`` new columns then costs the new frames' descriptors and
kernel rows at all M + m columns, the kernel of the kept old rows at the m new columns only,
the Cholesky factors of the sparse sets that grew, and, when columns were added, one QR of the
kept rows (``(n_obs + M) M^2`` flops, dense BLAS: no descriptor, gradient or kernel of an old
frame at an old column is recomputed). Without new columns the new rows are folded into R.

New sparse points are chosen among the new frames' environments, per (term, kind), by the
residual variance the current set leaves (:func:`gapx.gp.selection.residual_variance_rows`): up
to ``new_sparse_per_frame`` per added frame and kind, only where the set represents the
environment worse than ``sparse_tolerance`` of the prior variance.

e0 stays fixed at its value in the first fit (a new e0 would change every old target); frames
with species outside it are refused. The result equals a from-scratch fit on the same frames
with the same sparse points and e0 (``gapx.fitting.fit(model, frames, e0=..., sparse_points=
...)``) up to round-off, and is deterministic.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np

from .. import blocks, fitting
from ..gp.selection import residual_variance_rows
from ..gp.solver import StreamingQR
from ..gp.sparse_set import SparseSet
from ..validation import positive_integer, positive_number


@dataclasses.dataclass
class _Block:
    """Consecutive fitted frames: their targets and scaled rows (model column order)."""

    frames: list
    targets: list
    rows: np.ndarray  # (n_obs, M + 1), Fortran order
    stacked: list | None = None  # blocks.stacked_rows of the frames, when kept


#: Two sparse points closer than this (largest feature difference, relative to the features'
#: scale) are one: symmetric sites of a crystal give rows equal to round-off.
DUPLICATE_TOLERANCE = 1e-10


def _distinct(points: np.ndarray) -> np.ndarray:
    """``points`` without repeats of an earlier row (to DUPLICATE_TOLERANCE), in their order."""
    scale = DUPLICATE_TOLERANCE * max(float(np.abs(points).max(initial=0.0)), 1e-300)
    # Rows sorted by a projection: a row's duplicates are among its neighbours there.
    weights = np.linspace(1.0, 2.0, points.shape[1])
    projection = points @ weights
    order = np.argsort(projection, kind="stable")
    reach = scale * weights.sum()
    duplicate = np.zeros(points.shape[0], dtype=bool)
    for a, i in enumerate(order):
        if duplicate[i]:
            continue
        for j in order[a + 1 :]:
            if projection[j] - projection[i] > reach:
                break
            if not duplicate[j] and np.all(np.abs(points[j] - points[i]) <= scale):
                duplicate[max(i, j)] = True  # the later row repeats the earlier one
    return points[~duplicate]


def _nbytes(stacked) -> int:
    total = 0
    for rows, frame_of_row in stacked:
        total += rows.X.nbytes + frame_of_row.nbytes
        if rows.gradients is not None:
            g = rows.gradients
            total += g.values.nbytes + g.pairs.nbytes + g.strain.nbytes
    return total


class IncrementalFit:
    """A fitted sparse GP that frames (and sparse points chosen from them) can be added to.

    Build it with :meth:`fit` (the first fit: sparse points by each term's method, as
    ``GAP.fit``) or :meth:`from_arrays` (a checkpoint), add frames with :meth:`add`; both
    return a :class:`gapx.fitting.FittedState` that ``GAP._adopt`` takes.

    Parameters
    ----------
    model : gapx.GAP
        The settings (terms, noise, jitter, seed, block memory). It is not modified.
    new_sparse_per_frame : int
        Most sparse points added per added frame and (term, kind).
    sparse_tolerance : float
        An environment becomes a sparse point only if its residual variance exceeds this
        fraction of the largest prior variance among the candidates (SOAP environments of one
        solid at one temperature typically leave 1e-8 to 1e-4 of it; points much closer to the
        sparse jitter than this would make K_MM ill conditioned).
    descriptor_memory : float
        Bytes of descriptor rows and gradients kept for adding columns later.
    """

    def __init__(
        self,
        model,
        *,
        new_sparse_per_frame: int = 4,
        sparse_tolerance: float = 1e-6,
        descriptor_memory: float = 1e9,
    ):
        self.model = model
        self.new_sparse_per_frame = positive_integer(
            "new_sparse_per_frame", new_sparse_per_frame, minimum=0
        )
        self.sparse_tolerance = positive_number("sparse_tolerance", sparse_tolerance)
        self.descriptor_memory = float(descriptor_memory)
        if not self.descriptor_memory >= 0:
            raise ValueError(f"descriptor_memory must be >= 0 bytes, got {descriptor_memory!r}")
        self.e0: dict[str, float] = {}
        self.sparse_sets: list[SparseSet] = []
        self._blocks: list[_Block] = []
        # Per call of fit/add: (frames given, fitted frames per block) - what a checkpoint
        # needs to rebuild the blocks from the frames.
        self._groups: list[tuple[int, list[int]]] = []
        self._solver: StreamingQR | None = None
        self.stats = {"updates": 0, "sparse_added": 0, "recomputed_blocks": 0, "kept_bytes": 0}

    @property
    def n_columns(self) -> int:
        return sum(s.size for s in self.sparse_sets)

    @property
    def n_frames(self) -> int:
        """Frames given so far (to :meth:`fit` and every :meth:`add`)."""
        return sum(n_input for n_input, _ in self._groups)

    @classmethod
    def fit(cls, model, frames, *, e0=None, sparse_points=None, **options) -> IncrementalFit:
        """The first fit, keeping what later updates need. ``e0`` and ``sparse_points`` as in
        :func:`gapx.fitting.fit`; by default the model's e0 method and sparse selection, as
        ``GAP.fit``, except that duplicated points are kept once (a perfect crystal, a usual
        start, has one environment per site: ``n_sparse`` copies of one point would carry no
        more than one, yet count against every later update's cost)."""
        learner = cls(model, **options)
        frames = list(frames)
        fit_frames, targets, learner.e0, _ = fitting.prepare(model, frames, e0)
        gradient_bytes = blocks.gradient_bytes(fit_frames, model.terms)
        if sparse_points is None:
            chosen = fitting.select_sparse_sets(model, fit_frames, gradient_bytes)
            sparse_points = {(s.term, s.kind): _distinct(s.points) for s in chosen}
        learner.sparse_sets = fitting.make_sparse_sets(model, sparse_points)
        learner._solver = fitting.prior_solver(learner.sparse_sets)
        plan = blocks.frame_blocks(
            gradient_bytes
            + blocks.design_row_bytes([len(a) for a in fit_frames], learner.n_columns),
            model.block_memory,
        )
        for b in plan:
            block = learner._new_block([fit_frames[k] for k in b], [targets[k] for k in b], None)
            learner._solver.add_rows(np.array(block.rows, order="F"))
        learner._groups.append((len(frames), [len(b) for b in plan]))
        return learner

    def add(self, frames) -> dict:
        """Add labelled ``frames`` (and new sparse points from their environments); returns
        what the update did: frames, rows and sparse points added, seconds.

        Transactional: if it raises, the fit is as it was.
        """
        start = time.perf_counter()
        frames = list(frames)
        fit_frames, targets, _, _ = fitting.prepare(self.model, frames, self.e0)
        stacked = blocks.stacked_rows(self.model.terms, fit_frames)
        additions = self._new_points(stacked, len(fit_frames))
        saved = (self.sparse_sets, [b.rows for b in self._blocks], self._solver, dict(self.stats))
        try:
            if additions:
                self._add_columns(additions)
            block = self._new_block(fit_frames, targets, stacked)
            if additions:
                self._refactor()
            else:
                self._solver.add_rows(np.array(block.rows, order="F"))
        except BaseException:
            self.sparse_sets, rows, self._solver, self.stats = saved
            for b, r in zip(self._blocks, rows, strict=False):
                b.rows = r
            del self._blocks[len(rows) :]
            raise
        self._groups.append((len(frames), [len(fit_frames)]))
        n_added = sum(p.shape[0] for p in additions.values())
        self.stats["updates"] += 1
        self.stats["sparse_added"] += n_added
        return {
            "frames": len(frames),
            "rows": block.rows.shape[0],
            "sparse_added": n_added,
            "n_sparse_total": self.n_columns,
            "seconds": time.perf_counter() - start,
        }

    def state(self) -> fitting.FittedState:
        """The current fit, for ``GAP._adopt``."""
        alpha, R = self._solver.solve()
        frames = [f for b in self._blocks for f in b.frames]
        targets = [t for b in self._blocks for t in b.targets]
        summary = fitting.fit_summary(self.model, frames, targets, self.sparse_sets, self.e0)
        summary["learning"] = {
            "n_input_frames": self.n_frames,
            **{k: v for k, v in self.stats.items() if k != "kept_bytes"},
        }
        return fitting.FittedState(
            e0=dict(self.e0), sparse_sets=list(self.sparse_sets), alpha=alpha, R=R, summary=summary
        )

    def _new_block(self, fit_frames, targets, stacked) -> _Block:
        """Scaled rows of new frames at every column, appended to the blocks."""
        if stacked is None:
            stacked = blocks.stacked_rows(self.model.terms, fit_frames)
        rows = blocks.scaled_rows(
            (self.model.terms, self.sparse_sets, self.n_columns), fit_frames, targets, stacked
        )
        block = _Block(fit_frames, targets, rows)
        self._keep(block, stacked)
        self._blocks.append(block)
        return block

    def _keep(self, block: _Block, stacked) -> None:
        size = _nbytes(stacked)
        if self.stats["kept_bytes"] + size <= self.descriptor_memory:
            block.stacked = stacked
            self.stats["kept_bytes"] += size

    def _stacked(self, block: _Block):
        if block.stacked is not None:
            return block.stacked
        self.stats["recomputed_blocks"] += 1
        stacked = blocks.stacked_rows(self.model.terms, block.frames)
        self._keep(block, stacked)
        return stacked

    def _set(self, term: int, kind: int) -> SparseSet | None:
        for s in self.sparse_sets:
            if (s.term, s.kind) == (term, kind):
                return s
        return None

    def _new_points(self, stacked, n_frames: int) -> dict:
        """``{(term, kind): points}`` to add, chosen among the new rows."""
        additions = {}
        if self.new_sparse_per_frame == 0:
            return additions
        for t, (rows, _) in enumerate(stacked):
            term = self.model.terms[t]
            for kind in np.unique(rows.kinds):
                X = rows.X[rows.kinds == kind]
                current = self._set(t, int(kind))
                chosen = residual_variance_rows(
                    term.kernel,
                    X,
                    term.delta,
                    self.new_sparse_per_frame * n_frames,
                    self.sparse_tolerance,
                    None if current is None else current.points,
                    None if current is None else current.factor,
                )
                if chosen.size:
                    additions[t, int(kind)] = X[np.sort(chosen)]
        return additions

    def _add_columns(self, additions: dict) -> None:
        """Grow the sparse sets by ``additions`` and every kept block by the new columns."""
        old_sets, n_old = self.sparse_sets, self.n_columns
        points = {(s.term, s.kind): s.points for s in old_sets}
        for key, new in additions.items():
            points[key] = new if key not in points else np.concatenate([points[key], new])
        sets, offset = [], 0
        for key in sorted(points):
            if key in additions:
                grown = fitting.make_sparse_sets(self.model, {key: points[key]})[0]
                sets.append(dataclasses.replace(grown, offset=offset))
            else:
                sets.append(dataclasses.replace(self._set(*key), offset=offset))
            offset += points[key].shape[0]
        by_key = {(s.term, s.kind): s for s in sets}
        old_to_new = np.concatenate(
            [by_key[s.term, s.kind].offset + np.arange(s.size) for s in old_sets]
            or [np.zeros(0, dtype=np.int64)]
        )
        new_only, added_columns, position = [], [], 0
        for key in sorted(additions):
            grown = by_key[key]
            n_new = additions[key].shape[0]
            n_before = grown.size - n_new
            new_only.append(SparseSet(key[0], key[1], additions[key], position, grown.delta))
            added_columns.append(grown.offset + n_before + np.arange(n_new))
            position += n_new
        added_columns = np.concatenate(added_columns)
        n_new_total = offset
        for block in self._blocks:
            extra = blocks.scaled_rows(
                (self.model.terms, new_only, position),
                block.frames,
                block.targets,
                self._stacked(block),
            )
            rows = np.zeros((block.rows.shape[0], n_new_total + 1), order="F")
            rows[:, old_to_new] = block.rows[:, :n_old]
            rows[:, added_columns] = extra[:, :position]
            rows[:, n_new_total] = block.rows[:, n_old]
            block.rows = rows
        self.sparse_sets = sets

    def _refactor(self) -> None:
        """R afresh from the prior rows and every kept block (after columns were added)."""
        solver = fitting.prior_solver(self.sparse_sets)
        for block in self._blocks:
            solver.add_rows(np.array(block.rows, order="F"))
        self._solver = solver

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything but the frames and descriptors, as plain arrays (a checkpoint)."""
        meta = {
            "e0": self.e0,
            "sets": [
                {"term": s.term, "kind": s.kind, "delta": s.delta, "jitter": s.jitter}
                for s in self.sparse_sets
            ],
            "groups": self._groups,
            "stats": self.stats,
            "options": {
                "new_sparse_per_frame": self.new_sparse_per_frame,
                "sparse_tolerance": self.sparse_tolerance,
                "descriptor_memory": self.descriptor_memory,
            },
        }
        arrays = {
            "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
            "R": self._solver.R,
        }
        for n, s in enumerate(self.sparse_sets):
            arrays[f"set_{n}_points"] = s.points
            arrays[f"set_{n}_factor"] = s.factor
        for n, b in enumerate(self._blocks):
            arrays[f"block_{n}_rows"] = b.rows
        return arrays

    @staticmethod
    def _meta(arrays) -> dict:
        return json.loads(bytes(np.asarray(arrays["meta"], dtype=np.uint8)).decode("utf-8"))

    @staticmethod
    def frames_in(arrays) -> int:
        """How many frames the fit saved by :meth:`to_arrays` was given."""
        return sum(n_input for n_input, _ in IncrementalFit._meta(arrays)["groups"])

    @classmethod
    def from_arrays(cls, model, frames, arrays) -> IncrementalFit:
        """Rebuild from :meth:`to_arrays` and every frame given so far, in order (their targets
        are recomputed; descriptors are recomputed when first needed)."""
        meta = cls._meta(arrays)
        learner = cls(model, **meta["options"])
        learner.e0 = {str(k): float(v) for k, v in meta["e0"].items()}
        offset = 0
        for n, s in enumerate(meta["sets"]):
            points = np.asarray(arrays[f"set_{n}_points"], dtype=np.float64)
            factor = np.asarray(arrays[f"set_{n}_factor"], dtype=np.float64)
            learner.sparse_sets.append(
                SparseSet(s["term"], s["kind"], points, offset, s["delta"], s["jitter"], factor)
            )
            offset += points.shape[0]
        frames = list(frames)
        n_given = sum(n_input for n_input, _ in meta["groups"])
        if n_given != len(frames):
            raise ValueError(f"the checkpoint holds {n_given} frames, {len(frames)} given")
        start = 0
        for n_input, sizes in meta["groups"]:
            fit_frames, targets, _, _ = fitting.prepare(
                model, frames[start : start + n_input], learner.e0
            )
            if sum(sizes) != len(fit_frames):
                raise ValueError("the checkpoint does not match the frames given")
            first = 0
            for size in sizes:
                n = len(learner._blocks)
                rows = np.asfortranarray(arrays[f"block_{n}_rows"], dtype=np.float64)
                if rows.shape[1] != offset + 1:
                    raise ValueError(f"checkpoint block {n} has {rows.shape[1]} columns")
                learner._blocks.append(
                    _Block(fit_frames[first : first + size], targets[first : first + size], rows)
                )
                first += size
            learner._groups.append((n_input, list(sizes)))
            start += n_input
        learner._solver = StreamingQR(offset)
        learner._solver.R = np.asfortranarray(arrays["R"], dtype=np.float64)
        learner.stats = {**meta["stats"], "kept_bytes": 0}
        return learner
