"""SOAP: power spectrum hyperparameters, the wrapper around the C++ core, and its GP term."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from .. import _core
from ..gp.selection import check_sparse_method, select_sparse
from ..kernels import DotProduct
from ..terms import DescriptorGradients, TermRows, neighbour_counts
from ..validation import (
    as_cutoff_and_width,
    atoms_arrays,
    chemical_symbols_list,
    described_settings,
    finite_number,
    positive_integer,
    positive_number,
)

#: cutoff_transition_width when none is given: gapx's 1 Å, and QUIP's 0.5 Å with QUIP's basis.
_DEFAULT_TRANSITION_WIDTH = {"gto": 1.0, "quip": 0.5}

#: Settings of how a SOAP runs, not of what it computes: not compared, not serialised.
_RUNTIME_SETTINGS = ("n_threads",)


@dataclass(frozen=True)
class SOAP:
    """Smooth Overlap of Atomic Positions: the normalised power spectrum of each atom.

    The neighbour density of each centre, per neighbour species, is a sum of Gaussians of width
    ``atom_sigma`` weighted by QUIP's cosine cutoff (falling from 1 to 0 over the last
    ``cutoff_transition_width`` Å), plus ``central_weight`` times the centre's own Gaussian. It is
    expanded in ``n_max`` orthonormalised Gaussian-type radial functions and real spherical
    harmonics up to ``l_max``; the power spectrum
    ``p[u, v, l] = kappa_uv (2l+1)^(-1/2) sum_m c[u, lm] c[v, lm]`` over channel pairs u <= v
    (u = species index * n_max + n, kappa = sqrt(2) off the diagonal) is normalised to unit
    length. Feature order: u outer, v >= u, l inner.

    ``zeta``, ``delta``, ``n_sparse`` and ``sparse_method`` are the GP settings of this term
    (as in QUIP's gap string); the descriptor itself does not use them.

    Parameters
    ----------
    species : sequence of str or int
        Chemical symbols or atomic numbers; stored sorted by atomic number for the GTO basis,
        in the order given for the QUIP basis (QUIP's ``species_Z`` order fixes its channels).
    cutoff : float
        Cutoff radius r_c in Å.
    n_max, l_max : int
        Number of radial functions (>= 1) and largest angular momentum (0 <= l_max <= 30).
    atom_sigma : float
        Gaussian width of each atom's density, Å.
    cutoff_transition_width : float or None
        Width of the cosine transition, 0 < width <= cutoff, Å; None: 1.0 for the GTO basis,
        QUIP's default 0.5 for the QUIP basis.
    central_weight : float
        Weight of the centre's own Gaussian in the density of its species.
    zeta, delta : float
        Kernel exponent and energy scale of the GP term (> 0).
    n_sparse : int
        Number of sparse points (>= 1).
    sparse_method : {"cur", "random", "fps", "all"}
        Sparse-point selection.
    radial_basis : {"gto", "quip"}
        ``"gto"`` (default): the orthonormalised Gaussian-type orbitals below. ``"quip"``: QUIP's
        equispaced Gaussians (its default ``soap`` basis, see below), with which the descriptor
        equals quippy's element by element, in QUIP's order (:attr:`quip_order`).
    n_threads : int or None
        OpenMP threads; None uses OpenMP's default (``OMP_NUM_THREADS``). A runtime setting, not
        part of the descriptor: it is not compared (``==``), not in :meth:`to_dict` and so not in
        model files (an ``n_threads`` in an old file is ignored), but copies and pickles (dask
        workers) keep it. The C++ core refuses more than max(256, 4 x processors).

    Notes
    -----
    Radial basis: Gaussian-type orbitals r^n exp(-r^2 / 2 s_n^2), s_n = cutoff max(sqrt(n), 1) /
    n_max, Löwdin-orthonormalised (in double-double arithmetic: their overlap matrix has a
    condition number of 1e16 at n_max = 12). The family is complete, so the kernel converges to
    the basis-independent SOAP as n_max grows. The exact radial integral of a Gaussian
    (modified spherical Bessel functions) is tabulated once per (cutoff, n_max, l_max,
    atom_sigma) by quadrature and interpolated with cubic Hermite splines (~1e-11 relative), since
    evaluating it per pair would cost far more than everything else. Everything per centre runs
    in C++ with OpenMP over centres and the GIL released.

    QUIP basis: the radial density g_l(r) = 4 pi exp(-(d^2 + r^2) / 2 sigma^2) i_l(r d / sigma^2)
    of each neighbour is sampled at r_a = a r_h / n_max, a = 0 .. n_max - 1,
    r_h = cutoff + sigma sqrt(20 ln 10); the samples are read as coefficients of Gaussians
    exp(-(r - r_a)^2 / 2 sigma^2) (collocation matrix G) and projected on their Cholesky-
    orthonormalised combinations (overlap S = L L^T with weight r^2 on [0, inf)):
    c_n = sum_a (L^T G^-1)_na g(r_a), the same matrix for every l; tabulated exactly, divided
    by the envelope sum_a exp(-(d - r_a)^2 / 2 sigma^2) (evaluated exactly per pair) and
    interpolated (cubic Hermite, sigma/1024 grid), so equal to quippy to ~1e-14 per element
    (2e-13 at most over the settings tried) at the cost of the GTO spline.
    QUIP stores the channel pairs in another order and appends a zero (:attr:`quip_order`).
    """

    species: tuple
    cutoff: float = 5.0
    n_max: int = 8
    l_max: int = 6
    atom_sigma: float = 0.5
    cutoff_transition_width: float = 1.0
    central_weight: float = 1.0
    zeta: float = 4.0
    delta: float = 1.0
    n_sparse: int = 1000
    sparse_method: str = "cur"
    radial_basis: str = "gto"
    n_threads: int | None = field(default=None, compare=False)
    _core: object = field(default=None, init=False, repr=False, compare=False)

    def __init__(
        self,
        *,
        species,
        cutoff: float = 5.0,
        n_max: int = 8,
        l_max: int = 6,
        atom_sigma: float = 0.5,
        cutoff_transition_width: float | None = None,
        central_weight: float = 1.0,
        zeta: float = 4.0,
        delta: float = 1.0,
        n_sparse: int = 1000,
        sparse_method: str = "cur",
        radial_basis: str = "gto",
        n_threads: int | None = None,
    ) -> None:
        if radial_basis not in _DEFAULT_TRANSITION_WIDTH:
            raise ValueError(f"radial_basis must be 'gto' or 'quip', got {radial_basis!r}")
        species = [species] if isinstance(species, (str, int, np.integer)) else list(species)
        numbers = [atomic_numbers[s] for s in chemical_symbols_list("species", species)]
        if not numbers:
            raise ValueError("species must name at least one element")
        if len(set(numbers)) != len(species):
            raise ValueError(f"species contains duplicates: {species!r}")
        if radial_basis == "gto":
            numbers = sorted(numbers)
        if cutoff_transition_width is None:
            cutoff_transition_width = _DEFAULT_TRANSITION_WIDTH[radial_basis]
        cutoff, width = as_cutoff_and_width(cutoff, cutoff_transition_width)
        central = finite_number("central_weight", central_weight)
        check_sparse_method(sparse_method)
        if n_threads is not None:
            n_threads = positive_integer("n_threads", n_threads)
        values = {
            "species": tuple(chemical_symbols[z] for z in numbers),
            "cutoff": cutoff,
            "n_max": positive_integer("n_max", n_max),
            "l_max": positive_integer("l_max", l_max, minimum=0),
            "atom_sigma": positive_number("atom_sigma", atom_sigma),
            "cutoff_transition_width": width,
            "central_weight": central,
            "zeta": positive_number("zeta", zeta),
            "delta": positive_number("delta", delta),
            "n_sparse": positive_integer("n_sparse", n_sparse),
            "sparse_method": sparse_method,
            "radial_basis": radial_basis,
            "n_threads": n_threads,
        }
        if values["l_max"] > 30:
            raise ValueError(f"l_max must be at most 30, got {l_max}")
        for name, value in values.items():
            object.__setattr__(self, name, value)
        core = _core.PowerSpectrum(
            cutoff=cutoff,
            n_max=values["n_max"],
            l_max=values["l_max"],
            atom_sigma=values["atom_sigma"],
            transition_width=width,
            central_weight=central,
            species=numbers,
            radial_basis=radial_basis,
        )
        object.__setattr__(self, "_core", core)

    @property
    def numbers(self) -> tuple[int, ...]:
        """Atomic numbers of ``species`` in the species index order (increasing for the GTO
        basis, as given for the QUIP basis)."""
        return tuple(atomic_numbers[s] for s in self.species)

    @property
    def quip_order(self) -> np.ndarray:
        """Permutation from gapx's feature order to QUIP's: ``X[:, quip_order]`` lists the
        features as quippy does (channel pairs u <= v with v outer, u inner, l innermost;
        gapx has u outer). QUIP's vector has one more, constant zero element at the end."""
        n_channels = len(self.species) * self.n_max
        n_l = self.l_max + 1
        offset = {}
        for u in range(n_channels):
            for v in range(u, n_channels):
                offset[u, v] = len(offset) * n_l
        order = [
            offset[u, v] + ell
            for v in range(n_channels)
            for u in range(v + 1)
            for ell in range(n_l)
        ]
        return np.asarray(order, dtype=np.int64)

    @property
    def n_features(self) -> int:
        """Length of each descriptor row: N(N+1)/2 (l_max+1), N = n_species n_max."""
        return int(self._core.n_features)

    type_name = "soap"

    def to_dict(self) -> dict:
        """The descriptor's settings as a JSON-safe dict with ``"type": "soap"`` (``from_dict``
        inverts it); ``n_threads``, a runtime setting, is not among them."""
        out = {"type": self.type_name}
        for f in fields(self):
            if f.name.startswith("_") or f.name in _RUNTIME_SETTINGS:
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SOAP:
        """Rebuild a SOAP from ``to_dict()`` output. An ``n_threads`` (stored by gapx before
        thread counts became a runtime setting) is ignored."""
        settings = described_settings(data, (cls.type_name,), "SOAP")
        for name in _RUNTIME_SETTINGS:
            settings.pop(name, None)
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = set(settings) - known
        if unknown:
            raise ValueError(f"unknown SOAP settings: {sorted(unknown)}")
        return cls(**settings)

    def __reduce__(self):
        # The compiled core is rebuilt from the settings (copy.deepcopy, dask workers); the
        # thread count travels with them.
        return (_rebuild, (self.to_dict(), self.n_threads))

    def _inputs(self, atoms, context):
        """Validated arrays, threads and the shared neighbour list (None: C++ builds one)."""
        if context is None:
            positions, cell, pbc, numbers = atoms_arrays(atoms)
            neighbors = None
        else:
            positions, cell, pbc, numbers = (
                context.positions,
                context.cell,
                context.pbc,
                context.numbers,
            )
            neighbors = context.neighbors(self.cutoff)
        unknown = sorted(set(numbers.tolist()) - set(self.numbers))
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            raise ValueError(
                f"the structure contains {names}, which is not in the SOAP species "
                f"{list(self.species)}"
            )
        threads = 0 if self.n_threads is None else self.n_threads
        return (positions, cell, pbc, numbers), {"n_threads": threads, "neighbors": neighbors}

    def compute(self, atoms, gradients: bool = False, context=None):
        """Normalised SOAP vectors of every atom of ``atoms``.

        Parameters
        ----------
        atoms : ase.Atoms
            Any periodicity and (triclinic) cell; every element must be in ``species``.
        gradients : bool
            Also return the position and strain gradients.
        context : gapx.neighbors.StructureContext, optional
            The context of ``atoms``, whose neighbour list is then used.

        Returns
        -------
        X : (n_atoms, n_features) float64
            Unit-length rows (a centre with an empty density gives a zero row).
        dX : gapx.terms.DescriptorGradients
            Only when ``gradients=True``: sparse ``pairs`` ``[centre i, atom j]`` and ``values``
            ``d x_i / d r_j`` (n_grad, 3, n_features), and ``strain`` (n_atoms, 3, 3,
            n_features); memory linear in the number of pairs.
        """
        arrays, options = self._inputs(atoms, context)
        if not gradients:
            return self._core.compute(*arrays, **options)
        values, pairs, grads, strain = self._core.compute_gradients(*arrays, **options)
        n_features = values.shape[1]
        return values, DescriptorGradients(
            pairs=pairs,
            values=grads.reshape(len(pairs), 3, n_features),
            strain=strain.reshape(len(values), 3, 3, n_features),
        )

    def backpropagate(self, atoms, dE_dX, context=None):
        """Contract an upstream gradient with the descriptor gradients, without storing them.

        Parameters
        ----------
        atoms : ase.Atoms
        dE_dX : (n_atoms, n_features) array
            Derivative of a scalar E with respect to the normalised rows ``X``.
        context : gapx.neighbors.StructureContext, optional
            The context of ``atoms``, whose neighbour list is then used.

        Returns
        -------
        dE_dr : (n_atoms, 3) float64
            ``sum_i dE_dX[i] . dX_i/dr_j`` (forces are ``-dE_dr``).
        dE_dstrain : (3, 3) float64
            ``sum_i dE_dX[i] . dX_i/deps`` (stress is ``dE_dstrain / volume``).
        """
        arrays, options = self._inputs(atoms, context)
        grad = np.ascontiguousarray(dE_dX, dtype=np.float64)
        expected = (len(arrays[0]), self.n_features)
        if grad.shape != expected:
            raise ValueError(f"dE_dX must have shape {expected}, got {grad.shape}")
        if not np.all(np.isfinite(grad)):
            raise ValueError("dE_dX contains NaN or infinite values")
        return self._core.backpropagate(*arrays, grad, **options)

    # The GP term (gapx.terms.Term): rows are atoms owned by their centre, the kind is the
    # centre's atomic number, and the kernel is the dot product of the unit-normalised rows.

    @property
    def kernel(self) -> DotProduct:
        # Rows are unit-normalised already: normalising again in the kernel changes nothing but
        # costs time, so the plain dot product is used.
        return DotProduct(zeta=self.zeta, normalise=False)

    def rows(self, atoms, gradients: bool = False, context=None) -> TermRows:
        n_atoms = len(atoms)
        index = np.arange(n_atoms, dtype=np.int64)
        computed = self.compute(atoms, gradients=gradients, context=context)
        X, grads = computed if gradients else (computed, None)
        return TermRows(
            X=np.asarray(X),
            kinds=np.asarray(atoms.numbers, dtype=np.int64),
            owner_rows=index,
            owner_atoms=index,
            owner_weights=np.ones(n_atoms),
            gradients=grads,
        )

    def backpropagate_rows(self, atoms, rows: TermRows, dE_dX: np.ndarray, context=None):
        """dE/dr (n_atoms, 3) and dE/deps (3, 3) from dE/dX (n_atoms, F), in C++."""
        dE_dr, dE_dstrain = self.backpropagate(atoms, dE_dX, context=context)
        return np.asarray(dE_dr), np.asarray(dE_dstrain)

    def gradient_bytes(self, context) -> float:
        """An entry per centre and neighbour (and the self term), a strain block per centre."""
        n_atoms = len(context.numbers)
        n_pairs = float(neighbour_counts(context, self.cutoff).sum())
        return 8.0 * self.n_features * (3 * (n_atoms + n_pairs) + 9 * n_atoms)

    def max_sparse_points(self, atoms_per_species: dict[str, int]) -> int:
        return sum(
            min(self.n_sparse, count)
            for symbol, count in atoms_per_species.items()
            if symbol in self.species
        )

    def describe_kind(self, kind: int) -> str:
        return f"soap[{chemical_symbols[int(kind)]}]"

    def possible_kinds(self, species) -> set[int]:
        """Atomic numbers of the ``species`` that are SOAP species."""
        return {atomic_numbers[s] for s in species if s in self.species}

    def select_sparse(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return select_sparse(X, self.n_sparse, self.sparse_method, rng)


def _rebuild(settings: dict, n_threads: int | None) -> SOAP:
    """A SOAP from its ``to_dict()`` and its runtime thread count (unpickling)."""
    return SOAP(**{k: v for k, v in settings.items() if k != "type"}, n_threads=n_threads)
