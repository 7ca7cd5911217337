"""What the sparse GP needs from a descriptor: rows, owners, kinds, gradients, and a kernel.

A *term* of a GAP model turns a structure into rows of features. Each row carries a local energy
``eps(x) = sum_m alpha_m delta^2 k(x, x_m)``; the total energy of the structure is the sum of its
rows' local energies. A row belongs to a *kind* (for SOAP the atomic number of its centre, as
QUIP's ``add_species``; for the two-body term the species pair); rows of different kinds never
share sparse points, i.e. their kernel is zero. Each row's local energy is attributed to atoms
through ``owners``: SOAP rows belong to their centre, two-body rows half to each atom of the pair.

Descriptors written elsewhere (``gapx.SOAP``) need not know this module: :class:`SOAPTerm` adapts
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DescriptorGradients:
    """Sparse derivatives of descriptor rows.

    Attributes
    ----------
    pairs : (n_grad, 2) int64
        ``[row, atom]``: ``values[g]`` is the derivative of row ``pairs[g, 0]`` with respect to the
        position of atom ``pairs[g, 1]``; one entry per distinct (row, atom).
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


class SOAPTerm:
    """Adapter presenting a ``gapx.SOAP`` descriptor as a GP term.

    SOAP rows are atoms (owner: the centre, weight 1), the kind is the centre's atomic number, and
    the kernel is the dot product ``(x . y)^zeta`` of its unit-normalised rows. Position and strain
    gradients come from ``SOAP.compute(..., gradients=True)`` whose ``pairs`` are already
    ``[centre, atom]``; forces at prediction go through ``SOAP.backpropagate`` (C++, no stored
    gradients).
    """

    type_name = "soap"

    def __init__(self, soap):
        from ..kernels import DotProduct

        self.descriptor = soap
        # SOAP rows are unit-normalised already: normalising again in the kernel changes nothing
        # but costs time, so the plain dot product is used.
        self.kernel = DotProduct(zeta=soap.zeta, normalise=False)

    @property
    def delta(self) -> float:
        return float(self.descriptor.delta)

    @property
    def n_sparse(self) -> int:
        return int(self.descriptor.n_sparse)

    @property
    def sparse_method(self) -> str:
        return str(self.descriptor.sparse_method)

    @property
    def cutoff(self) -> float:
        return float(self.descriptor.cutoff)

    @property
    def n_features(self) -> int:
        return int(self.descriptor.n_features)

    def describe_kind(self, kind: int) -> str:
        from ase.data import chemical_symbols

        return f"soap[{chemical_symbols[int(kind)]}]"

    def rows(self, atoms, gradients: bool = False) -> TermRows:
        n_atoms = len(atoms)
        index = np.arange(n_atoms, dtype=np.int64)
        grads = None
        if gradients:
            X, dX = self.descriptor.compute(atoms, gradients=True)
            grads = DescriptorGradients(
                pairs=np.asarray(dX.pairs, dtype=np.int64),
                values=np.asarray(dX.values),
                strain=np.asarray(dX.strain),
            )
        else:
            X = self.descriptor.compute(atoms)
        return TermRows(
            X=np.asarray(X),
            kinds=np.asarray(atoms.numbers, dtype=np.int64),
            owner_rows=index,
            owner_atoms=index,
            owner_weights=np.ones(n_atoms),
            gradients=grads,
        )

    def backpropagate(self, atoms, rows: TermRows, dE_dX: np.ndarray):
        """dE/dr (n_atoms, 3) and dE/deps (3, 3) from dE/dX (n_atoms, F), in C++."""
        dE_dr, dE_dstrain = self.descriptor.backpropagate(atoms, np.ascontiguousarray(dE_dX))
        return np.asarray(dE_dr), np.asarray(dE_dstrain)

    def to_dict(self) -> dict:
        return {"type": self.type_name, "params": self.descriptor.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> SOAPTerm:
        from .soap import SOAP

        return cls(SOAP.from_dict(data["params"]))


def as_term(obj):
    """Return a GP term for ``obj``: terms pass through, a ``gapx.SOAP`` gets its adapter."""
    if hasattr(obj, "rows") and hasattr(obj, "kernel"):
        return obj
    if type(obj).__name__ == "SOAP" and hasattr(obj, "compute"):
        return SOAPTerm(obj)
    raise TypeError(
        f"a GAP term must be gapx.TwoBody, gapx.SOAP or provide rows()/kernel, got {type(obj)!r}"
    )
