"""Pool-based selection: which unlabelled frames would teach a fitted model the most.

The criterion is greedy information gain under the model's GP posterior, evaluated on the pool's
own atoms (not only through the sparse points), so a frame far from every sparse point
is seen as novel rather than ignored.

The GP posterior
----------------
A row ``x`` of term ``t`` and kind ``k`` (a SOAP centre, a two-body pair) carries a local energy
``f(x)``. After the fit its posterior covariance with another row ``x'`` is the projected-process
(DTC) covariance of :mod:`gapx.gp.variance`::

    c0(x, x') = delta^2 k(x, x') [same (t, k)] - k_xM K_MM^-1 k_Mx' + k_xM Sigma k_Mx'

(``k_xM`` with delta^2, ``K_MM = L L^T``, ``Sigma = R^-1 R^-T``). For a row far from every
sparse point ``k_xM ~ 0`` and ``c0(x, x) ~ delta^2 k(x, x)``: the prior minus the Nyström
residual carries its novelty, which the ``Sigma`` term alone would miss.

The quantities compared are the local energies of atoms, ``sum_r w_r f(x_r)`` over the rows an
atom owns (every term together), as ``energies_std`` of :meth:`gapx.GAP.predict` reports them:
the split of an energy between terms is not identified by the data, so one term's rows alone
look uncertain even where their sum is known.

What labelling a frame teaches
------------------------------
Labelling a frame is modelled as observing the local energies of its atoms with noise ``noise``
(eV; default the model's ``sigma_energy``). That is a proxy: energies and forces are linear
functionals of the same local energies, and a refit puts sparse points among the new
environments. Each frame is summarised by at most ``environments`` candidate atoms, chosen by a
pivoted Cholesky factorisation of ``c0`` over the frame's atoms (the most uncertain atom first,
then the most uncertain given it, ...; it stops once the rest have variance below
``noise**2``), so near-identical environments of one frame (a bulk crystal) count once.

The gain of frame ``f`` given the set ``O`` of atoms observed so far is the mutual information
``0.5 log det(I + C_f|O / noise^2)`` of its candidate block ``C_f|O``, the exact conditional
covariance ``c0(S_f, S_f) - c0(S_f, O) (c0(O, O) + noise^2 I)^-1 c0(O, S_f)``. The frame with the
largest gain is chosen (ties, within a relative 1e-9, go to the lowest pool index), its
candidates join ``O``, and every frame's block is updated by rank-one downdates. A near-duplicate
of a chosen frame has lost most of its gain, so a batch spreads over distinct structures.

Cost
----
With ``P`` pool frames, ``r`` candidates per frame (``C = P r``), ``M`` sparse points in all and
``q`` rows per atom (1 for SOAP, about the neighbour count for the two-body term):
summarising a frame of ``N`` atoms costs what one std prediction of it costs (kernel rows
against the sparse points, triangular solves per atom) plus ``r`` covariance columns over its
atoms, ``O(N q^2)`` each. Each of the ``n`` choices adds ``r`` observations at
``O(C (q^2 F + 2M + n r))`` each and refreshes the gains at ``O(P r^3)``: time linear in
``P n``. Memory: ``C (2M + n r)`` floats for the candidates plus one frame's rows at a time,
never a matrix over all pool atoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
from ase.data import chemical_symbols
from tqdm.auto import tqdm

from ..neighbors import StructureContext
from ..validation import as_atomic_numbers, positive_integer, positive_number

#: Gains within this relative distance of the best count as ties (lowest index wins).
TIE_RTOL = 1e-9


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_frames`.

    Attributes
    ----------
    indices : (n,) int64
        Pool indices in the order they were chosen (most informative first).
    scores : (n,) float64
        Information gain (nats) of each chosen frame at the moment it was chosen, i.e. given
        the frames chosen before it.
    gains : (n_pool,) float64
        Gain of every pool frame before any choice (what the model alone makes of it).
    max_std : (n_pool,) float64
        Largest posterior standard deviation (eV) of an atom's local energy in each frame (the
        largest ``energies_std`` :meth:`gapx.GAP.predict` reports).
    """

    indices: np.ndarray
    scores: np.ndarray
    gains: np.ndarray
    max_std: np.ndarray


class _Groups:
    """Rows are covariant a priori only within one (term, kind): each pair is a group."""

    def __init__(self, model):
        self.model = model
        self.sets = {(s.term, s.kind): s for s in model.sparse_sets}
        self.keys: dict[tuple[int, int], int] = {}
        self.kernels = []
        self.d2 = []

    def index(self, term: int, kind: int) -> int:
        key = (term, int(kind))
        if key not in self.keys:
            s = self.sets.get(key)
            delta = s.delta if s is not None else self.model.terms[term].delta
            self.keys[key] = len(self.kernels)
            self.kernels.append(self.model.terms[term].kernel)
            self.d2.append(float(delta) ** 2)
        return self.keys[key]

    def prior(self, group: int, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """delta^2 k between rows ``X`` (n, F) and ``Y`` (m, F) of ``group``."""
        return self.d2[group] * self.kernels[group](X, Y)


@dataclass
class _Energies:
    """Local energies of atoms as linear functionals of their rows' local energies.

    ``rows[g] = (W, X)`` per group: ``W`` (n, n_rows_g) sparse weights and ``X`` (n_rows_g, F_g)
    the group's rows, so energy ``i`` is ``sum_g sum_r W[i, r] f(X[r])`` (the terms' owner
    weights; every term of an atom in one energy). ``A`` (n, M) = W k_XM L^-T in each set's
    columns and ``B`` (n, M) = W k_XM R^-1, so ``c0(i, j) = prior(i, j) - A_i.A_j + B_i.B_j``.
    """

    rows: dict
    A: np.ndarray
    B: np.ndarray

    @property
    def n(self) -> int:
        return self.A.shape[0]

    @classmethod
    def concatenate(cls, parts: list[_Energies], n_columns: int) -> _Energies:
        """The energies of all ``parts`` in order (each part's rows stay its own)."""
        starts = np.cumsum([0] + [p.n for p in parts])
        rows = {}
        for g in sorted({g for p in parts for g in p.rows}):
            data, row_index, col_index, X, n_rows = [], [], [], [], 0
            for start, p in zip(starts[:-1], parts, strict=True):
                if g in p.rows:
                    W, Xp = p.rows[g]
                    W = W.tocoo()
                    data.append(W.data)
                    row_index.append(W.row + start)
                    col_index.append(W.col + n_rows)
                    X.append(Xp)
                    n_rows += Xp.shape[0]
            W = scipy.sparse.csr_matrix(
                (np.concatenate(data), (np.concatenate(row_index), np.concatenate(col_index))),
                shape=(starts[-1], n_rows),
            )
            rows[g] = (W, np.concatenate(X))
        A = np.concatenate([p.A for p in parts]) if parts else np.zeros((0, n_columns))
        B = np.concatenate([p.B for p in parts]) if parts else np.zeros((0, n_columns))
        return cls(rows, A, B)

    def take(self, index) -> _Energies:
        """The energies ``index`` with only the rows they use."""
        index = np.asarray(index, dtype=np.int64)
        rows = {}
        for g, (W, X) in self.rows.items():
            W = W[index]
            used = np.unique(W.indices)
            if used.size:
                rows[g] = (W[:, used].tocsr(), X[used])
        return _Energies(rows, self.A[index], self.B[index])

    def prior(self, groups: _Groups, other: _Energies) -> np.ndarray:
        """Prior covariance (self.n, other.n) of these energies with ``other``'s."""
        out = np.zeros((self.n, other.n))
        for g, (W_other, X_other) in other.rows.items():
            if g in self.rows:
                W, X = self.rows[g]
                out += W @ (W_other @ groups.prior(g, X, X_other).T).T
        return out

    def prior_diagonal(self, groups: _Groups, block_rows: int = 2048) -> np.ndarray:
        """Prior variances (n,), over blocks of consecutive energies using about ``block_rows``
        rows each: memory O(block_rows^2), time linear in the number of energies."""
        out = np.zeros(self.n)
        used = np.cumsum(sum(np.diff(W.indptr) for W, _ in self.rows.values()))
        start = 0
        while start < self.n:
            before = used[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(used, before + block_rows, side="right")))
            block = self.take(np.arange(start, stop))
            out[start:stop] = np.diag(block.prior(groups, block))
            start = stop
        return out

    def column(self, groups: _Groups, j: int) -> np.ndarray:
        """``c0(every energy, energy j)``."""
        one = self.take([j])
        return self.prior(groups, one)[:, 0] - self.A @ self.A[j] + self.B @ self.B[j]


def _frame_energies(model, groups: _Groups, atoms) -> tuple[_Energies, np.ndarray]:
    """The local energies of a frame's atoms and their posterior variances (n_atoms,)."""
    context = StructureContext(atoms)
    context.neighbors(max(term.cutoff for term in model.terms))
    context.check_no_overlap()
    n_atoms = len(atoms)
    K = np.zeros((n_atoms, model.alpha.size))  # W k_XM, delta^2 included
    rows_by_group = {}
    for t, term in enumerate(model.terms):
        rows = term.rows(atoms, gradients=False, context=context)
        W = scipy.sparse.csr_matrix(
            (rows.owner_weights, (rows.owner_atoms, rows.owner_rows)),
            shape=(n_atoms, rows.n_rows),
        )
        for kind in np.unique(rows.kinds):
            selected = np.nonzero(rows.kinds == kind)[0]
            X = rows.X[selected]
            W_kind = W[:, selected].tocsr()
            rows_by_group[groups.index(t, kind)] = (W_kind, X)
            s = groups.sets.get((t, int(kind)))
            if s is not None:
                K[:, s.columns] += W_kind @ (s.delta**2 * term.kernel(X, s.points))
    R = model.R  # first: completes the sparse sets' factors of an imported model
    A = np.zeros_like(K)
    for s in model.sparse_sets:
        A[:, s.columns] = scipy.linalg.solve_triangular(
            s.factor, K[:, s.columns].T, lower=True, check_finite=False
        ).T
    B = scipy.linalg.solve_triangular(R, K.T, trans="T", lower=False, check_finite=False)
    energies = _Energies(rows_by_group, A, np.ascontiguousarray(B.T))
    variance = energies.prior_diagonal(groups) - np.einsum("ij,ij->i", A, A)
    variance += np.einsum("ij,ij->i", energies.B, energies.B)
    return energies, np.maximum(variance, 0.0)


def _candidates(energies: _Energies, variance, groups: _Groups, r: int, noise2: float):
    """Up to ``r`` atoms spanning the frame's posterior covariance (pivoted Cholesky)."""
    residual = variance.copy()
    factor = np.zeros((residual.size, r))
    picked: list[int] = []
    for k in range(min(r, residual.size)):
        j = int(np.argmax(residual))  # first maximum: deterministic
        if residual[j] <= noise2:
            break
        column = energies.column(groups, j) - factor[:, :k] @ factor[j, :k]
        factor[:, k] = column / np.sqrt(residual[j])
        residual -= factor[:, k] ** 2
        residual[j] = 0.0
        picked.append(j)
    return np.asarray(picked, dtype=np.int64)


def _check_pool(model, pool) -> list:
    model._check_fitted()
    pool = list(pool)
    for index, atoms in enumerate(pool):
        if not hasattr(atoms, "numbers") or not hasattr(atoms, "cell"):
            raise TypeError(f"pool frame {index} is not an ase.Atoms object: {type(atoms)!r}")
        numbers = as_atomic_numbers(atoms.numbers, minimum=0)
        unknown = sorted({chemical_symbols[z] for z in numbers} - set(model.e0))
        if unknown:
            raise ValueError(
                f"pool frame {index}: species {unknown} are not in the model "
                f"(trained on {model.species})"
            )
    return pool


def select_frames(
    model,
    pool,
    n: int,
    *,
    noise: float | None = None,
    environments: int = 8,
    progress: bool = False,
) -> Selection:
    """Choose ``n`` frames of ``pool`` by greedy information gain; see the module docstring.

    Parameters
    ----------
    model : gapx.GAP
        A fitted model.
    pool : sequence of ase.Atoms
        Candidate frames (labels, if any, are ignored).
    n : int
        Number of frames to choose, ``1 <= n <= len(pool)``.
    noise : float, optional
        Standard deviation (eV) with which labelling a frame is taken to pin down each of its
        local energies; default the model's ``sigma_energy``. Smaller values make a chosen
        frame suppress its near-duplicates more strongly.
    environments : int
        Candidate atoms per frame (``r``); more describe large, varied frames better.
    progress : bool
        Show a progress bar while the pool is summarised.

    Returns
    -------
    Selection
        Indices in the order chosen, their gains and the pool's gains and largest stds.
    """
    pool = _check_pool(model, pool)
    n_pool = len(pool)
    if isinstance(n, bool) or int(n) != n or not 1 <= int(n) <= n_pool:
        raise ValueError(f"n must be an integer between 1 and the pool size {n_pool}, got {n!r}")
    n = int(n)
    r = positive_integer("environments", environments)
    sigma = model.sigma_energy if noise is None else positive_number("noise", noise)
    noise2 = float(sigma) ** 2
    groups = _Groups(model)

    # Each frame summarised by its candidate rows; ``slots`` maps them into ``candidates``.
    slots = np.full((n_pool, r), -1, dtype=np.int64)
    blocks = np.zeros((n_pool, r, r))
    max_std = np.zeros(n_pool)
    parts = []
    n_candidates = 0
    bar = tqdm(pool, desc="select", unit="frame", disable=not progress, leave=False)
    for f, atoms in enumerate(bar):
        energies, variance = _frame_energies(model, groups, atoms)
        max_std[f] = float(np.sqrt(variance.max())) if variance.size else 0.0
        picked = _candidates(energies, variance, groups, r, noise2)
        if picked.size == 0:
            continue
        chosen = energies.take(picked)
        block = chosen.prior(groups, chosen) - chosen.A @ chosen.A.T + chosen.B @ chosen.B.T
        blocks[f, : picked.size, : picked.size] = 0.5 * (block + block.T)
        slots[f, : picked.size] = np.arange(n_candidates, n_candidates + picked.size)
        n_candidates += picked.size
        parts.append(chosen)
    candidates = _Energies.concatenate(parts, model.alpha.size)

    gains = _gains(blocks, noise2)
    initial = gains.copy()
    V = np.zeros((candidates.n, n * r))
    n_observed = 0
    order, scores = [], []
    available = np.ones(n_pool, dtype=bool)
    for _ in range(n):
        masked = np.where(available, gains, -np.inf)
        best = masked.max()
        f = int(np.nonzero(masked >= best - TIE_RTOL * max(abs(best), 1.0))[0][0])
        order.append(f)
        scores.append(float(gains[f]))
        available[f] = False
        for o in slots[f][slots[f] >= 0]:
            col = candidates.column(groups, int(o)) - V[:, :n_observed] @ V[o, :n_observed]
            v = col / np.sqrt(max(col[o], 0.0) + noise2)
            V[:, n_observed] = v
            n_observed += 1
            vf = np.where(slots >= 0, v[np.maximum(slots, 0)], 0.0)
            blocks -= vf[:, :, None] * vf[:, None, :]
        gains = _gains(blocks, noise2)
    return Selection(
        indices=np.asarray(order, dtype=np.int64),
        scores=np.asarray(scores),
        gains=initial,
        max_std=max_std,
    )


def _gains(blocks: np.ndarray, noise2: float) -> np.ndarray:
    """``0.5 log det(I + C / noise^2)`` of each (r, r) block (padding rows are zero)."""
    eig = np.linalg.eigvalsh(0.5 * (blocks + blocks.transpose(0, 2, 1)))
    return 0.5 * np.sum(np.log1p(np.maximum(eig, 0.0) / noise2), axis=1)


def select(model, pool, n: int, *, noise: float | None = None, environments: int = 8) -> np.ndarray:
    """Indices (n,) of the ``n`` frames of ``pool`` that would teach ``model`` the most.

    Batch-diverse: frames are chosen greedily by information gain under the model's GP
    posterior, each conditioned on the frames chosen before it, so near-duplicates are not all
    chosen. Returned in the order chosen (most informative first); deterministic, ties broken
    by pool index. See :func:`select_frames` for the parameters and
    :mod:`gapx.learning.selection` for the criterion and its cost.
    """
    return select_frames(model, pool, n, noise=noise, environments=environments).indices
