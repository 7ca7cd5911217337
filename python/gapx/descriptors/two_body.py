"""Two-body GP term: one row per pair of atoms within the cutoff, as QUIP's ``distance_2b``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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

# "uniform": a grid of distances, QUIP's default for distance_2b.
TWO_BODY_SPARSE_METHODS = ("uniform", *SPARSE_METHODS)

# Kind of a pair row: Z_low * PAIR_KIND_BASE + Z_high (atomic numbers are < 119).
PAIR_KIND_BASE = 1000


def cosine_cutoff(r: np.ndarray, cutoff: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Smooth cutoff f_c(r) and df_c/dr: 1 below ``cutoff - width``, a half cosine down to 0.

    Both f_c and its derivative are continuous and vanish at the cutoff.
    """
    start = cutoff - width
    t = np.clip((r - start) / width, 0.0, 1.0)
    fc = 0.5 * (1.0 + np.cos(np.pi * t))
    dfc = np.where((r > start) & (r < cutoff), -0.5 * np.pi / width * np.sin(np.pi * t), 0.0)
    return fc, dfc


@dataclass(frozen=True, kw_only=True)
class TwoBody:
    """Pair-distance term with a squared-exponential kernel and a smooth cutoff.

    Each unordered pair (i, j, image) with distance r < cutoff is one row with features
    ``(r, f_c(r))``; the kernel between two rows of the same species pair is
    ``f_c(r) f_c(r') exp(-(r - r')^2 / (2 theta^2))`` (times ``delta**2``), zero across species
    pairs. A row's local energy is shared equally by its two atoms.

    Parameters
    ----------
    cutoff : float
        Cutoff radius in Å.
    cutoff_transition_width : float
        Width (Å) of the cosine decay of f_c ending at the cutoff, in (0, cutoff].
    species : list of str or None
        Allowed chemical symbols (any if None); other species raise at compute time.
    delta : float
        Energy scale (eV) of the term.
    theta : float
        Length scale (Å) of the squared-exponential kernel.
    n_sparse : int
        Sparse points per species pair.
    sparse_method : str
        "uniform" (a uniform grid of distances, as QUIP's default for distance_2b), "cur",
        "fps", "random" or "all".
    """

    cutoff: float = 5.0
    cutoff_transition_width: float = 0.5
    species: tuple[str, ...] | None = None
    delta: float = 1.0
    theta: float = 1.0
    n_sparse: int = 20
    sparse_method: str = "uniform"

    type_name = "two_body"

    def __post_init__(self):
        cutoff, width = as_cutoff_and_width(self.cutoff, self.cutoff_transition_width)
        object.__setattr__(self, "cutoff", cutoff)
        object.__setattr__(self, "cutoff_transition_width", width)
        if self.species is not None:
            species = chemical_symbols_list("species", self.species)
            if not species:
                raise ValueError("species must name at least one element")
            object.__setattr__(self, "species", species)
        for name in ("delta", "theta"):
            object.__setattr__(self, name, positive_number(name, getattr(self, name)))
        object.__setattr__(self, "n_sparse", positive_integer("n_sparse", self.n_sparse))
        check_sparse_method(self.sparse_method, TWO_BODY_SPARSE_METHODS)

    @property
    def kernel(self):
        return CutoffWeighted(SquaredExponential(self.theta))

    @property
    def n_features(self) -> int:
        return 2

    def describe_kind(self, kind: int) -> str:
        low, high = divmod(int(kind), PAIR_KIND_BASE)
        return f"two_body[{chemical_symbols[low]}-{chemical_symbols[high]}]"

    def possible_kinds(self, species) -> set[int]:
        """Pair codes of every pair of ``species`` (those allowed, when ``species`` is set)."""
        numbers = sorted(
            atomic_numbers[s] for s in species if self.species is None or s in self.species
        )
        return {a * PAIR_KIND_BASE + b for n, a in enumerate(numbers) for b in numbers[n:]}

    def _check_species(self, numbers: np.ndarray) -> None:
        if self.species is None:
            return
        allowed = {atomic_numbers[s] for s in self.species}
        unknown = sorted({chemical_symbols[z] for z in np.unique(numbers) if z not in allowed})
        if unknown:
            raise ValueError(f"species {unknown} not in this TwoBody's species {self.species}")

    def compute(self, atoms, gradients: bool = False, context=None):
        """Pair rows of ``atoms``.

        Returns
        -------
        X : (n_pairs, 2) float64
            ``(r, f_c(r))`` per unordered pair (i < j, or an atom with its own periodic image
            counted once).
        dX : DescriptorGradients, only with ``gradients=True``
            ``pairs`` rows ``[pair, atom]`` (first the i entries, then the j entries; self-image
            pairs have none since their distance does not depend on positions), ``values``
            (n_grad, 3, 2), ``strain`` (n_pairs, 3, 3, 2).
        """
        rows = self.rows(atoms, gradients=gradients, context=context)
        return (rows.X, rows.gradients) if gradients else rows.X

    def _pairs(self, atoms, context):
        context = StructureContext(atoms) if context is None else context
        i, j, S, d, D = context.neighbors(self.cutoff).arrays()
        # Half list: i < j, or an atom and its own image with a lexicographically positive shift.
        first = np.where(S[:, 0] != 0, S[:, 0], np.where(S[:, 1] != 0, S[:, 1], S[:, 2]))
        keep = (i < j) | ((i == j) & (first > 0))
        return i[keep], j[keep], d[keep], D[keep]

    def rows(self, atoms, gradients: bool = False, context=None) -> TermRows:
        numbers = as_atomic_numbers(atoms.numbers, minimum=0).astype(np.int64)
        self._check_species(numbers)
        i, j, d, D = self._pairs(atoms, context)
        n_pairs = len(i)
        fc, dfc = cosine_cutoff(d, self.cutoff, self.cutoff_transition_width)
        X = np.stack([d, fc], axis=1) if n_pairs else np.zeros((0, 2))
        zi, zj = numbers[i], numbers[j]
        kinds = np.minimum(zi, zj) * PAIR_KIND_BASE + np.maximum(zi, zj)
        index = np.arange(n_pairs, dtype=np.int64)
        grads = None
        if gradients:
            unit = D / d[:, None] if n_pairs else np.zeros((0, 3))
            dfeat_dr = np.stack([np.ones(n_pairs), dfc], axis=1)
            d_dj = unit[:, :, None] * dfeat_dr[:, None, :]
            moving = i != j
            pairs = np.concatenate(
                [np.stack([index, i], axis=1)[moving], np.stack([index, j], axis=1)[moving]]
            )
            values = np.concatenate([-d_dj[moving], d_dj[moving]])
            # d|D|/d eps_ab = D_a D_b / r for D -> (1 + eps) D.
            dr_deps = D[:, :, None] * unit[:, None, :]
            strain = dr_deps[:, :, :, None] * dfeat_dr[:, None, None, :]
            grads = DescriptorGradients(pairs=pairs.astype(np.int64), values=values, strain=strain)
        return TermRows(
            X=X,
            kinds=kinds.astype(np.int64),
            owner_rows=np.concatenate([index, index]),
            owner_atoms=np.concatenate([i, j]).astype(np.int64),
            owner_weights=np.full(2 * n_pairs, 0.5),
            gradients=grads,
        )

    def backpropagate_rows(self, atoms, rows: TermRows, dE_dX: np.ndarray, context=None):
        """dE/dr (n_atoms, 3) and dE/deps (3, 3) from dE/dX (n_pairs, 2)."""
        if rows.gradients is None:
            rows = self.rows(atoms, gradients=True, context=context)
        return gradient_backpropagate(rows, dE_dX, len(atoms))

    def gradient_bytes(self, context) -> float:
        """Per pair row (half the full list): two position entries and a strain block."""
        n_rows = 0.5 * float(neighbour_counts(context, self.cutoff).sum())
        return 8.0 * self.n_features * (2 * 3 + 9) * n_rows

    def max_sparse_points(self, atoms_per_species: dict[str, int]) -> int:
        n_species = len(atoms_per_species)
        return self.n_sparse * n_species * (n_species + 1) // 2

    def select_sparse(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sparse pair rows; "uniform": ``n_sparse`` distances evenly spanning those of ``X``."""
        if self.sparse_method != "uniform":
            return select_sparse(X, self.n_sparse, self.sparse_method, rng)
        grid = np.linspace(X[:, 0].min(), X[:, 0].max(), self.n_sparse)
        fc, _ = cosine_cutoff(grid, self.cutoff, self.cutoff_transition_width)
        return np.stack([grid, fc], axis=1)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["species"] = None if self.species is None else list(self.species)
        return {"type": self.type_name, **data}

    @classmethod
    def from_dict(cls, data: dict) -> TwoBody:
        return cls(**described_settings(data, (cls.type_name,), "TwoBody"))
