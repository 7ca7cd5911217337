"""The term protocol: what a descriptor must provide to be a term of a GAP model.

A *term* turns a structure into rows of features. Each row carries a local energy
``eps(x) = sum_m alpha_m delta^2 k(x, x_m)``; the total energy of the structure is the sum of its
rows' local energies. A row belongs to a *kind* (for SOAP the atomic number of its centre, as
QUIP's ``add_species``; for the two-body term the species pair; for the three-body term the
centre's species and its neighbours' pair); rows of different kinds never share sparse points,
i.e. their kernel is zero. Each row's local energy is attributed to atoms through ``owners``:
SOAP and three-body rows belong to their centre, two-body rows half to each atom of the pair.

:class:`Term` lists what the fit and the prediction use; ``gapx.SOAP``, ``gapx.TwoBody`` and
``gapx.ThreeBody`` implement it, and so must any future term. Nothing in gapx asks a term for
its class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class DescriptorGradients:
    """Sparse derivatives of descriptor rows.

    Attributes
    ----------
    pairs : (n_grad, 2) int64
        ``[row, atom]``: ``values[g]`` is the derivative of row ``pairs[g, 0]`` with respect to the
        position of atom ``pairs[g, 1]``; one entry per distinct (row, atom). For SOAP the row is
        the centre atom: entries are grouped by increasing centre, self term first, then the
        atoms within the cutoff by increasing index (periodic images merged).
    values : (n_grad, 3, n_features) float64
        d X[row] / d r[atom] in 1/Å (feature units per Å).
    strain : (n_rows, 3, 3, n_features) float64
        d X[row] / d eps_ab for the homogeneous deformation r -> (1 + eps) r (cell included).
    """

    pairs: np.ndarray
    values: np.ndarray
    strain: np.ndarray


@dataclass
class TermRows:
    """The rows a term produces for one structure.

    Attributes
    ----------
    X : (n_rows, n_features) float64
        Descriptor rows.
    kinds : (n_rows,) int64
        Kind label of each row; sparse points are selected and used per kind.
    owner_rows, owner_atoms : (n_owned,) int64, owner_weights : (n_owned,) float64
        Local energy of atom ``owner_atoms[o]`` gets ``owner_weights[o]`` times the local energy
        of row ``owner_rows[o]``; the weights of each row sum to one.
    gradients : DescriptorGradients or None
        Present when asked for with ``gradients=True``.
    """

    X: np.ndarray
    kinds: np.ndarray
    owner_rows: np.ndarray
    owner_atoms: np.ndarray
    owner_weights: np.ndarray
    gradients: DescriptorGradients | None = None

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]


@runtime_checkable
class Term(Protocol):
    """What a GAP term provides.

    Attributes: ``type_name`` (its key in :mod:`gapx.serialization`), ``cutoff`` (Å),
    ``delta`` (eV), ``n_sparse`` (sparse points per kind), ``sparse_method``, ``n_features``
    and ``kernel`` (a :mod:`gapx.kernels` object; ``delta**2`` is not part of it).
    """

    type_name: str
    cutoff: float
    delta: float
    n_sparse: int
    sparse_method: str

    @property
    def n_features(self) -> int: ...

    @property
    def kernel(self): ...

    def rows(self, atoms, gradients: bool = False, context=None) -> TermRows:
        """Rows of ``atoms``; ``context`` (a :class:`gapx.neighbors.StructureContext` of these
        atoms) supplies shared neighbour lists."""

    def backpropagate_rows(
        self, atoms, rows: TermRows, dE_dX: np.ndarray, context=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """dE/dr (n_atoms, 3) and dE/deps (3, 3) from dE/dX (n_rows, n_features) of ``rows``."""

    def gradient_bytes(self, context) -> float:
        """Bytes of this term's descriptor gradients (position entries and strain) for the
        structure of ``context`` (a :class:`gapx.neighbors.StructureContext`), from its
        neighbour list alone: the fit plans its blocks of frames with it."""

    def max_sparse_points(self, atoms_per_species: dict[str, int]) -> int:
        """Most sparse points a fit can choose from a data set with these atom counts (the
        fit's memory is planned with it before any descriptor is computed)."""

    def describe_kind(self, kind: int) -> str:
        """A readable name of a kind, e.g. ``soap[Si]``."""

    def possible_kinds(self, species) -> set[int]:
        """Every kind this term's rows can have in structures of ``species`` (chemical
        symbols): a model file's sparse sets must be of these kinds."""

    def select_sparse(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sparse points (n, n_features) of one kind, from its training rows ``X``."""

    def to_dict(self) -> dict: ...


def as_term(obj) -> Term:
    """Return ``obj`` if it implements :class:`Term`, else raise TypeError."""
    if isinstance(obj, Term):
        return obj
    raise TypeError(
        "a GAP term must be gapx.TwoBody, gapx.ThreeBody, gapx.SOAP or implement "
        f"gapx.terms.Term, got {type(obj)!r}"
    )


def neighbour_counts(context, cutoff: float) -> np.ndarray:
    """(n_atoms,) neighbours of each atom within ``cutoff`` (images included) in ``context``."""
    n_atoms = len(context.numbers)
    if n_atoms < 2 and not any(context.pbc):
        return np.zeros(n_atoms, dtype=np.int64)
    return np.bincount(context.neighbors(cutoff).arrays()[0], minlength=n_atoms)


def gradient_backpropagate(
    rows: TermRows, dE_dX: np.ndarray, n_atoms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Contract dE/dX (n_rows, F) with stored gradients: dE/dr (n_atoms, 3) and dE/deps (3, 3)."""
    grads = rows.gradients
    if grads is None:
        raise ValueError("backpropagation needs rows computed with gradients=True")
    per_entry = np.einsum("gaf,gf->ga", grads.values, dE_dX[grads.pairs[:, 0]])
    atoms = grads.pairs[:, 1]
    dE_dr = np.stack(
        [np.bincount(atoms, weights=per_entry[:, a], minlength=n_atoms) for a in range(3)], axis=1
    )
    dE_dstrain = np.einsum("rabf,rf->ab", grads.strain, dE_dX)
    return dE_dr, dE_dstrain
