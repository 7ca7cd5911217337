"""Three-body GP term: one row per ordered neighbour pair of a centre, as QUIP's ``angle_3b``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from ..gp.selection import SPARSE_METHODS, check_sparse_method, select_sparse
from ..kernels import CutoffWeighted, SquaredExponential
from ..neighbors import StructureContext
from ..terms import DescriptorGradients, TermRows, gradient_backpropagate, neighbour_counts
from ..validation import (
    as_atomic_numbers,
    as_cutoff_and_width,
    chemical_symbols_list,
    described_settings,
    positive_integer,
    positive_number,
)
from .two_body import PAIR_KIND_BASE, cosine_cutoff

# Kind of a triplet row: Z_centre * TRIPLET_KIND_BASE + the pair code of its two neighbours.
TRIPLET_KIND_BASE = PAIR_KIND_BASE * PAIR_KIND_BASE


def triplet_kind(centre, neighbour_1, neighbour_2):
    """Kind code(s) of rows with these atomic numbers (ints or arrays; neighbours in any order),
    e.g. the kind of the sparse set of an imported angle_3b block with Z, Z1, Z2."""
    low, high = np.minimum(neighbour_1, neighbour_2), np.maximum(neighbour_1, neighbour_2)
    return centre * TRIPLET_KIND_BASE + low * PAIR_KIND_BASE + high


# Features before the cutoff weight: r_ij + r_ik, (r_ij - r_ik)^2, r_jk.
N_GEOMETRIC_FEATURES = 3


def _species_filter(name: str, value) -> int | None:
    """An atomic number, or None for any species (QUIP's 0)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a chemical symbol or atomic number, got {value!r}")
    if value is None or (isinstance(value, (int, np.integer)) and value == 0):
        return None
    (symbol,) = chemical_symbols_list(name, [value])
    return atomic_numbers[symbol]


def _matches(z: np.ndarray, wanted: int | None) -> np.ndarray:
    return np.ones(z.shape, dtype=bool) if wanted is None else z == wanted


@dataclass(frozen=True)
class Triplets:
    """The ordered triplets (i; j, k) of a structure: j and k distinct neighbour entries of i.

    ``centres`` (n,) and ``neighbours`` (n, 2) are atom indices; ``vectors`` (n, 3, 3) are the
    three distance vectors of each triplet, i->j, i->k and j->k, ``distances`` (n, 3) their
    lengths; ``ends`` (n, 3, 2) the atoms each vector starts and ends at (periodic images are
    the same atom).
    """

    centres: np.ndarray
    neighbours: np.ndarray
    vectors: np.ndarray
    distances: np.ndarray

    @property
    def ends(self) -> np.ndarray:
        i, j, k = self.centres, self.neighbours[:, 0], self.neighbours[:, 1]
        return np.stack([np.stack([i, j], 1), np.stack([i, k], 1), np.stack([j, k], 1)], 1)


@dataclass(frozen=True, kw_only=True)
class ThreeBody:
    """Triplet term with an ARD squared-exponential kernel and a smooth cutoff (QUIP's
    ``angle_3b`` with ``covariance_type=ard_se``).

    For each centre i and each ordered pair (j, k) of distinct neighbours within the cutoff (both
    (j, k) and (k, j) are rows, as in QUIP; periodic images are distinct neighbours; r_jk may
    exceed the cutoff), the row is ``(r_ij + r_ik, (r_ij - r_ik)^2, r_jk, f_c(r_ij) f_c(r_ik))``
    with ``f_c`` the cosine cutoff of :func:`gapx.descriptors.two_body.cosine_cutoff`. The kernel
    between rows of the same kind is ``w w' exp(-sum_d (x_d - x'_d)^2 / (2 theta_d^2))`` with w
    the cutoff weight (times ``delta**2``); a row's local energy belongs to its centre. Kinds are
    species triplets: the centre's and the unordered pair of its neighbours'
    (:func:`triplet_kind`).

    A gap_fit ``angle_3b`` block (``covariance_type=ard_se``) is the term with the same
    ``cutoff``, ``cutoff_transition_width``, ``Z``, ``Z1``, ``Z2``, ``delta`` (its
    ``signal_variance``) and ``theta``; its sparse points are ``np.c_[sparseX, sparseCutoff]``
    (the last column is the cutoff weight) and its ``alpha`` their weights.
    :func:`gapx.from_quip` reads such blocks (one species triplet each) as the kinds of one
    unfiltered term and :meth:`gapx.GAP.to_quip` writes one block per kind.

    Parameters
    ----------
    cutoff : float
        Cutoff radius (Å) of r_ij and r_ik.
    cutoff_transition_width : float
        Width (Å) of the cosine decay of f_c ending at the cutoff, in (0, cutoff]; 0.5 is
        QUIP's default.
    Z : int, str or None
        Species of the centre (QUIP's ``Z``); None (or 0) for any.
    Z1, Z2 : int, str or None
        Species of the two neighbours, in either order (QUIP's ``Z1``, ``Z2``); None (or 0)
        matches any.
    delta : float
        Energy scale (eV) of the term (QUIP's ``delta``, the GP's ``signal_variance``).
    theta : float or sequence of 3 floats
        Length scales of the three geometric features (Å, Å^2, Å; QUIP's ``theta`` of
        ``ard_se``); one number for all three (``theta_uniform``).
    n_sparse : int
        Sparse points per kind.
    sparse_method : str
        "cur", "fps", "random" or "all"; duplicate rows (each triplet appears as (j, k) and
        (k, j)) are dropped before choosing.
    """

    cutoff: float = 4.0
    cutoff_transition_width: float = 0.5
    Z: int | None = None
    Z1: int | None = None
    Z2: int | None = None
    delta: float = 1.0
    theta: tuple[float, float, float] = (1.0, 1.0, 1.0)
    n_sparse: int = 50
    sparse_method: str = "random"

    type_name = "three_body"

    def __post_init__(self):
        cutoff, width = as_cutoff_and_width(self.cutoff, self.cutoff_transition_width)
        object.__setattr__(self, "cutoff", cutoff)
        object.__setattr__(self, "cutoff_transition_width", width)
        for name in ("Z", "Z1", "Z2"):
            object.__setattr__(self, name, _species_filter(name, getattr(self, name)))
        object.__setattr__(self, "delta", positive_number("delta", self.delta))
        theta = self.theta
        theta = (theta,) * N_GEOMETRIC_FEATURES if np.ndim(theta) == 0 else tuple(theta)
        if len(theta) != N_GEOMETRIC_FEATURES:
            raise ValueError(f"theta must be one length scale or three, got {self.theta!r}")
        theta = tuple(positive_number(f"theta[{d}]", t) for d, t in enumerate(theta))
        object.__setattr__(self, "theta", theta)
        object.__setattr__(self, "n_sparse", positive_integer("n_sparse", self.n_sparse))
        check_sparse_method(self.sparse_method, SPARSE_METHODS)

    @property
    def kernel(self):
        return CutoffWeighted(SquaredExponential(self.theta))

    @property
    def n_features(self) -> int:
        return N_GEOMETRIC_FEATURES + 1

    def describe_kind(self, kind: int) -> str:
        centre, pair = divmod(int(kind), TRIPLET_KIND_BASE)
        low, high = divmod(pair, PAIR_KIND_BASE)
        names = [chemical_symbols[z] for z in (low, centre, high)]
        return f"three_body[{'-'.join(names)}]"

    def _neighbours_match(self, zj: np.ndarray, zk: np.ndarray) -> np.ndarray:
        """Whether neighbour species (j, k) are (Z1, Z2) in either order (None matches any)."""
        return (_matches(zj, self.Z1) & _matches(zk, self.Z2)) | (
            _matches(zk, self.Z1) & _matches(zj, self.Z2)
        )

    def _can_be_neighbour(self, z: np.ndarray) -> np.ndarray:
        return _matches(z, self.Z1) | _matches(z, self.Z2)

    def possible_kinds(self, species) -> set[int]:
        """Codes of every species triplet of ``species`` that this term's filters admit."""
        numbers = sorted(atomic_numbers[s] for s in species)
        pairs = np.array([(a, b) for n, a in enumerate(numbers) for b in numbers[n:]]).reshape(
            -1, 2
        )
        pairs = pairs[self._neighbours_match(pairs[:, 0], pairs[:, 1])]
        centres = [z for z in numbers if self.Z is None or z == self.Z]
        return {int(triplet_kind(c, a, b)) for c in centres for a, b in pairs}

    def triplets(self, atoms, context=None) -> Triplets:
        """Every ordered triplet the filters admit, grouped by increasing centre."""
        numbers = as_atomic_numbers(atoms.numbers, minimum=0).astype(np.int64)
        context = StructureContext(atoms) if context is None else context
        i, j, _, d, D = context.neighbors(self.cutoff).arrays()
        # Entries that can be part of a triplet: centre of species Z, neighbour Z1 or Z2.
        keep = self._can_be_neighbour(numbers[j])
        if self.Z is not None:
            keep &= numbers[i] == self.Z
        i, j, d, D = i[keep], j[keep], d[keep], D[keep]
        # Each entry a paired with every entry b of its centre (the list is grouped by centre).
        counts = np.bincount(i, minlength=len(numbers))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        per_entry = counts[i]
        a = np.repeat(np.arange(len(i)), per_entry)
        first = np.repeat(np.cumsum(per_entry) - per_entry, per_entry)
        b = starts[i[a]] + np.arange(a.size) - first
        pair = (a != b) & self._neighbours_match(numbers[j[a]], numbers[j[b]])
        a, b = a[pair], b[pair]
        jk = D[b] - D[a]
        vectors = np.stack([D[a], D[b], jk], axis=1).reshape(-1, 3, 3)
        distances = np.stack([d[a], d[b], np.linalg.norm(jk, axis=1)], axis=1).reshape(-1, 3)
        return Triplets(
            centres=i[a],
            neighbours=np.stack([j[a], j[b]], 1).reshape(-1, 2),
            vectors=vectors,
            distances=distances,
        )

    def _features(self, triplets: Triplets):
        """Rows (n, 4) and their derivatives (n, 3, 4) with respect to r_ij, r_ik, r_jk."""
        r_ij, r_ik, r_jk = triplets.distances.T
        fc, dfc = cosine_cutoff(
            triplets.distances[:, :2], self.cutoff, self.cutoff_transition_width
        )
        gap = r_ij - r_ik
        X = np.stack([r_ij + r_ik, gap * gap, r_jk, fc[:, 0] * fc[:, 1]], axis=1)
        dX_dr = np.zeros((len(r_ij), 3, 4))
        dX_dr[:, :2, 0] = 1.0
        dX_dr[:, 0, 1] = 2.0 * gap
        dX_dr[:, 1, 1] = -2.0 * gap
        dX_dr[:, 2, 2] = 1.0
        dX_dr[:, 0, 3] = dfc[:, 0] * fc[:, 1]
        dX_dr[:, 1, 3] = fc[:, 0] * dfc[:, 1]
        return X, dX_dr

    def rows(self, atoms, gradients: bool = False, context=None) -> TermRows:
        triplets = self.triplets(atoms, context)
        X, dX_dr = self._features(triplets)
        numbers = np.asarray(atoms.numbers, dtype=np.int64)
        zj, zk = numbers[triplets.neighbours].T
        kinds = triplet_kind(numbers[triplets.centres], zj, zk)
        n_rows = X.shape[0]
        index = np.arange(n_rows, dtype=np.int64)
        return TermRows(
            X=X,
            kinds=kinds.astype(np.int64),
            owner_rows=index,
            owner_atoms=triplets.centres.astype(np.int64),
            owner_weights=np.ones(n_rows),
            gradients=_gradients(triplets, dX_dr) if gradients else None,
        )

    def backpropagate_rows(self, atoms, rows: TermRows, dE_dX: np.ndarray, context=None):
        """dE/dr (n_atoms, 3) and dE/deps (3, 3) from dE/dX (n_rows, 4), through dE/d(r_ij,
        r_ik, r_jk) per triplet (no descriptor gradients are stored)."""
        if rows.gradients is not None:
            return gradient_backpropagate(rows, dE_dX, len(atoms))
        triplets = self.triplets(atoms, context)
        _, dX_dr = self._features(triplets)
        dE_ddist = np.einsum("tvf,tf->tv", dX_dr, dE_dX)
        units = triplets.vectors / triplets.distances[:, :, None]
        pull = dE_ddist[:, :, None] * units  # dE/d(end of each vector)
        ends = triplets.ends
        dE_dr = np.zeros((len(atoms), 3))
        for a in range(3):
            dE_dr[:, a] = np.bincount(
                ends[:, :, 1].ravel(), pull[:, :, a].ravel(), minlength=len(atoms)
            ) - np.bincount(ends[:, :, 0].ravel(), pull[:, :, a].ravel(), minlength=len(atoms))
        # d|v|/d eps_ab = v_a v_b / |v| for v -> (1 + eps) v.
        dE_deps = np.einsum("tva,tvb->ab", triplets.vectors, pull)
        return dE_dr, dE_deps

    def gradient_bytes(self, context) -> float:
        """Per triplet row (c (c - 1) per centre with c neighbours, before the species
        filters): three position entries and a strain block."""
        counts = neighbour_counts(context, self.cutoff).astype(np.float64)
        return 8.0 * self.n_features * (3 * 3 + 9) * float(np.sum(counts * (counts - 1)))

    def max_sparse_points(self, atoms_per_species: dict[str, int]) -> int:
        return self.n_sparse * len(self.possible_kinds(list(atoms_per_species)))

    def select_sparse(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sparse triplet rows of one kind, chosen among its distinct rows."""
        return select_sparse(np.unique(X, axis=0), self.n_sparse, self.sparse_method, rng)

    def to_dict(self) -> dict:
        return {
            "type": self.type_name,
            "cutoff": self.cutoff,
            "cutoff_transition_width": self.cutoff_transition_width,
            "Z": self.Z,
            "Z1": self.Z1,
            "Z2": self.Z2,
            "delta": self.delta,
            "theta": list(self.theta),
            "n_sparse": self.n_sparse,
            "sparse_method": self.sparse_method,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ThreeBody:
        return cls(**described_settings(data, (cls.type_name,), "ThreeBody"))


def _gradients(triplets: Triplets, dX_dr: np.ndarray) -> DescriptorGradients:
    """Position gradients per distinct (row, atom) and strain gradients of triplet rows.

    Each of the three distance vectors moves with its end atom and against its start atom; an
    atom that is two corners of a triplet (a periodic image of itself) gets one merged entry.
    """
    n_rows = dX_dr.shape[0]
    units = triplets.vectors / triplets.distances[:, :, None]
    # (n, vector, 3, F): d X / d(end of the vector).
    along = units[:, :, :, None] * dX_dr[:, :, None, :]
    i, (j, k) = triplets.centres, triplets.neighbours.T
    by_corner = np.stack(
        [-along[:, 0] - along[:, 1], along[:, 0] - along[:, 2], along[:, 1] + along[:, 2]], axis=1
    )
    corners = np.stack([i, j, k], axis=1)
    j_is_i, k_is_i = j == i, k == i
    k_is_j = (k == j) & ~k_is_i
    by_corner[:, 0] += np.where(j_is_i[:, None, None], by_corner[:, 1], 0.0)
    by_corner[:, 0] += np.where(k_is_i[:, None, None], by_corner[:, 2], 0.0)
    by_corner[:, 1] += np.where(k_is_j[:, None, None], by_corner[:, 2], 0.0)
    kept = np.stack([np.ones(n_rows, dtype=bool), ~j_is_i, ~(k_is_i | k_is_j)], axis=1)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64)[:, None], 3, axis=1)
    pairs = np.stack([rows[kept], corners[kept]], axis=1).astype(np.int64)
    strain = np.einsum("tva,tvbf->tabf", triplets.vectors, along)
    return DescriptorGradients(pairs=pairs, values=by_corner[kept], strain=strain)
