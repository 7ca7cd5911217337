"""Electrostatics of fixed point charges: Ewald summation for periodic cells, direct sum otherwise.

Conventions
-----------
Energies in eV, lengths in Å, charges in units of the elementary charge; the Coulomb constant is
``ase.units.Hartree * ase.units.Bohr`` (e²/4πε₀ ≈ 14.399645 eV·Å). The stress is
σ = (1/V) ∂E/∂ε in ASE's Voigt order (xx, yy, zz, yz, xz, xy), positive when tensile; the virial
is W = −V σ (eV), as in extxyz files.

The Ewald split of a fully periodic cell with volume V, charges q_i and splitting parameter α:

    E_real  = (k_e/2) Σ_i Σ_{j,n}' q_i q_j erfc(α r_ijn) / r_ijn             (r_ijn < r_c)
    E_recip = (2π k_e / V) Σ_{0<|k|<k_c} exp(−k²/4α²)/k² |S(k)|²,  S(k) = Σ_j q_j exp(i k·r_j)
    E_self  = −k_e α/√π Σ_i q_i²
    E_bg    = −k_e π Q² / (2 V α²),  Q = Σ_i q_i

E_bg is the energy of a uniform neutralising background, needed (and only allowed with
``background=True``) when Q ≠ 0; without it the energy of a charged periodic cell is infinite.

Per-atom energies split each term naturally: half of every real-space pair energy to each of
its atoms, q_i Re[exp(i k·r_i) S*(k)] of each reciprocal term to atom i, the self term to its
own atom and the background in proportion to q_i. Atom i then gets ½ q_i times the
electrostatic potential at r_i, which does not depend on α; the energies sum to the total.

A non-periodic system is summed directly, E = (k_e/2) Σ_{i≠j} q_i q_j / r_ij, over blocks of
rows of the pair matrix (O(N²) time, O(N) memory). Mixed periodicity is refused.
"""

from __future__ import annotations

import math

import numpy as np
from ase.data import atomic_numbers, chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress
from ase.units import Bohr, Hartree
from scipy.special import erfc
from threadpoolctl import threadpool_limits

from .neighbors import OVERLAP_DISTANCE, StructureContext
from .validation import as_atomic_numbers, described_settings, finite_number, positive_number

COULOMB = Hartree * Bohr  # e^2 / (4 pi eps0) in eV Å
NEUTRALITY_TOL = 1e-8  # |sum of charges| below this counts as neutral
# w in α = √π (w N/V²)^{1/6}. The total cost is lowest near w = 2 c_pair / c_k, with c_pair the
# cost of one real-space pair of the full list (≈ 100 ns here, mostly the neighbour list) and c_k
# that of one (atom, half-space k vector) term (≈ 12 ns): w ≈ 17. It is flat from 10 to 40 on
# 10 648 NaCl ions; 40 is taken because it halves the neighbour-list memory relative to 17.
REAL_TO_RECIPROCAL_COST = 40.0
# Largest full neighbour list the default alpha allows (about 60 bytes per pair).
MAX_PAIRS = 2.5e7
# Pairs per block of the real-space sum: temporaries stay in cache (several times faster).
PAIR_BLOCK = 1 << 15
# Elements per temporary (chunk x n_atoms) array in the reciprocal and direct sums; small enough
# to stay in cache (2^17 is twice as fast as 2^21 on 10 648 ions).
CHUNK_ELEMENTS = 1 << 17


class Ewald:
    """Coulomb energy, forces and stress of fixed point charges.

    Parameters
    ----------
    charges : dict[str, float] or None
        Charge (units of e) per chemical symbol, e.g. ``{"Na": 1.0, "Cl": -1.0}``. With ``None``
        the charges are read per atom from ``atoms.arrays["charges"]`` (or, failing that, ASE's
        ``atoms.arrays["initial_charges"]``).
    accuracy : float
        Target relative accuracy in (0, 1). Both cutoffs are chosen so that the Gaussian tails
        neglected at them, exp(−α² r_c²) and exp(−k_c²/4α²), equal ``accuracy``.
    background : bool
        Add a uniform neutralising background to a periodic cell with a net charge. Without it, a
        non-neutral periodic cell raises ``ValueError``.
    alpha : float or None
        Splitting parameter in 1/Å. By default it balances the cost of the real-space and
        reciprocal-space sums, α = √π (w N / V²)^{1/6}, which makes the cost O(N^{3/2}); for
        very large cells α grows so that the real-space neighbour list stays below ``MAX_PAIRS``
        pairs (about 1.5 GB).
    """

    def __init__(
        self,
        charges: dict[str, float] | None = None,
        accuracy: float = 1e-6,
        background: bool = False,
        alpha: float | None = None,
    ):
        self._charges = _validate_charge_table(charges)
        try:
            accuracy = float(accuracy)
        except (TypeError, ValueError):
            raise ValueError(f"accuracy must be a number in (0, 1), got {accuracy!r}") from None
        if not (0.0 < accuracy < 1.0):
            raise ValueError(f"accuracy must be in (0, 1), got {accuracy!r}")
        self._accuracy = accuracy
        if not isinstance(background, (bool, np.bool_)):
            raise TypeError(f"background must be a bool, got {background!r}")
        self._background = bool(background)
        self._alpha = None if alpha is None else positive_number("alpha", alpha)

    @property
    def charges(self) -> dict[str, float] | None:
        """Charge per chemical symbol (a copy), or None when charges come from the atoms."""
        return None if self._charges is None else dict(self._charges)

    @property
    def accuracy(self) -> float:
        return self._accuracy

    @property
    def background(self) -> bool:
        return self._background

    @property
    def alpha(self) -> float | None:
        return self._alpha

    def __repr__(self) -> str:
        return (
            f"Ewald(charges={self._charges!r}, accuracy={self._accuracy!r}, "
            f"background={self._background!r}, alpha={self._alpha!r})"
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, Ewald):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable-looking charge table: not hashable

    type_name = "ewald"

    def to_dict(self) -> dict:
        """JSON-safe settings; ``Ewald.from_dict(ew.to_dict())`` rebuilds an equal object."""
        return {
            "type": self.type_name,
            "charges": self.charges,
            "accuracy": self._accuracy,
            "background": self._background,
            "alpha": self._alpha,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Ewald:
        """Inverse of :meth:`to_dict`."""
        # "Ewald" is how format-1 model files spelled the type.
        data = described_settings(data, (cls.type_name, "Ewald"), "Ewald")
        unknown = set(data) - {"charges", "accuracy", "background", "alpha"}
        if unknown:
            raise ValueError(f"unknown Ewald settings: {sorted(unknown)}")
        return cls(
            charges=data.get("charges"),
            accuracy=data.get("accuracy", 1e-6),
            background=data.get("background", False),
            alpha=data.get("alpha"),
        )

    def atom_charges(self, atoms) -> np.ndarray:
        """Per-atom charges (n_atoms,) in e, from the charge table or from the atoms."""
        if self._charges is None:
            for key in ("charges", "initial_charges"):
                if key in atoms.arrays:
                    charges = np.array(atoms.arrays[key], dtype=np.float64).reshape(-1)  # a copy
                    break
            else:
                raise ValueError(
                    "Ewald(charges=None) reads per-atom charges from atoms.arrays['charges'] "
                    "(or 'initial_charges'), but the atoms have neither"
                )
            if charges.shape != (len(atoms),):
                raise ValueError(f"per-atom charges must have shape ({len(atoms)},)")
            if not np.all(np.isfinite(charges)):
                raise ValueError("per-atom charges contain NaN or infinite values")
            return charges
        symbols = np.array(
            [chemical_symbols[z] for z in as_atomic_numbers(atoms.numbers, minimum=0)]
        )
        unique = np.unique(symbols)
        missing = [str(s) for s in unique if s not in self._charges]
        if missing:
            raise ValueError(
                f"no charge given for species {missing}; charges are set for "
                f"{sorted(self._charges)}"
            )
        table = np.array([self._charges[s] for s in unique])
        return table[np.searchsorted(unique, symbols)]

    def calculate(self, atoms, *, n_threads: int | None = None, context=None) -> dict:
        """Electrostatic energy, per-atom energies, forces and stress of ``atoms``.

        Parameters
        ----------
        atoms : ase.Atoms
            Fully periodic (any triclinic cell) or fully non-periodic; not modified.
        n_threads : int, optional
            Threads for the C++ neighbour list (default: OpenMP's).
        context : gapx.neighbors.StructureContext, optional
            The context of ``atoms`` (its neighbour lists are shared with the model's terms);
            ``n_threads`` is then the context's.

        Returns
        -------
        dict
            ``energy`` (float, eV), ``energies`` (n_atoms,) eV summing to the energy, ``forces``
            (n_atoms, 3) eV/Å, ``stress`` (6,) eV/Å³ and ``virial`` (3, 3) eV (for a
            non-periodic system only when its cell has a volume), ``charges`` (n_atoms,) e,
            ``method`` ("ewald" or "direct") and the parameters used: ``alpha`` (1/Å),
            ``real_cutoff`` (Å), ``reciprocal_cutoff`` (1/Å), ``kmax`` (largest |index| of the
            k vectors along each reciprocal vector) and ``n_kvectors`` (half space).
        """
        if context is None:
            context = StructureContext(atoms, n_threads=n_threads)
        positions, cell, pbc = context.positions, context.cell, context.pbc
        charges = self.atom_charges(atoms)
        if any(pbc) and not all(pbc):
            raise ValueError(
                f"Ewald handles fully periodic or fully non-periodic systems, got pbc={pbc}: "
                "mixed periodicity (slabs, wires) is not supported"
            )
        # The matrix products here are small and memory-bound: BLAS threads only add overhead
        # (ten times the run time for 64 ions on a loaded two-core machine), so use one.
        with threadpool_limits(limits=1, user_api="blas"):
            if all(pbc):
                return self._periodic(context, charges)
            return _direct(positions, cell, charges)

    def choose_parameters(self, n_atoms: int, volume: float) -> tuple[float, float, float]:
        """(alpha 1/Å, real cutoff Å, reciprocal cutoff 1/Å) for a periodic cell."""
        p = math.sqrt(-math.log(self._accuracy))
        if self._alpha is not None:
            alpha = self._alpha
        else:
            # Real-space cost ~ N ρ r_c³ ∝ N²/(V α³), reciprocal ~ N V k_c³ ∝ N V α³: equal at
            # α⁶ ∝ N/V² (Perram, Petersen & de Leeuw 1988), so the total is O(N^{3/2}).
            alpha = math.sqrt(math.pi) * (REAL_TO_RECIPROCAL_COST * n_atoms / volume**2) ** (1 / 6)
            # The neighbour list holds N² (4π/3) r_c³ / V pairs, O(N^{3/2}): past MAX_PAIRS,
            # shorten r_c (more k vectors, slower) so memory stays bounded.
            max_cutoff = (MAX_PAIRS * volume / (n_atoms**2 * 4 * math.pi / 3)) ** (1 / 3)
            alpha = max(alpha, p / max_cutoff)
        return alpha, p / alpha, 2.0 * p * alpha

    def _periodic(self, context, charges) -> dict:
        positions, cell = context.positions, context.cell
        n_atoms = len(positions)
        volume = abs(np.linalg.det(cell))
        total_charge = float(charges.sum())
        if abs(total_charge) > NEUTRALITY_TOL and not self._background:
            raise ValueError(
                f"the periodic cell has a net charge of {total_charge:.6g} e: its Ewald energy "
                "is infinite; use Ewald(..., background=True) to add a neutralising background"
            )
        alpha, r_cut, k_cut = self.choose_parameters(max(n_atoms, 1), volume)
        energies = np.zeros(n_atoms)
        forces = np.zeros((n_atoms, 3))
        de_dstrain = np.zeros((3, 3))
        kmax = (0, 0, 0)
        n_kvectors = 0
        if n_atoms > 0:
            _real_space(context.neighbors(r_cut), charges, alpha, energies, forces, de_dstrain)
            kmax, n_kvectors = _reciprocal_space(
                positions, cell, charges, alpha, k_cut, energies, forces, de_dstrain
            )
            # Self term: each Gaussian's interaction with its own point charge, per atom.
            energies -= COULOMB * alpha / math.sqrt(math.pi) * charges**2
            if self._background:
                # −k_e π Q²/(2Vα²), spread over atoms in proportion to their charge; ∝ 1/V.
                background = -COULOMB * math.pi * total_charge / (2 * volume * alpha**2) * charges
                energies += background
                de_dstrain -= np.eye(3) * background.sum()
        de_dstrain = 0.5 * (de_dstrain + de_dstrain.T)
        return {
            "energy": float(energies.sum()),
            "energies": energies,
            "forces": forces,
            "stress": full_3x3_to_voigt_6_stress(de_dstrain / volume),
            "virial": -de_dstrain,
            "charges": charges,
            "method": "ewald",
            "alpha": alpha,
            "real_cutoff": r_cut,
            "reciprocal_cutoff": k_cut,
            "kmax": kmax,
            "n_kvectors": n_kvectors,
        }


def _validate_charge_table(charges) -> dict[str, float] | None:
    if charges is None:
        return None
    if not hasattr(charges, "items"):
        raise TypeError(f"charges must be a dict symbol -> charge or None, got {charges!r}")
    table = {}
    for symbol, value in charges.items():
        if not isinstance(symbol, str) or symbol not in atomic_numbers or symbol == "X":
            if isinstance(symbol, (int, np.integer)) and 0 < symbol < len(chemical_symbols):
                symbol = chemical_symbols[symbol]
            else:
                raise ValueError(f"charges: {symbol!r} is not a chemical symbol")
        table[symbol] = finite_number(f"charges: charge of {symbol}", value)
    return table


def _check_distances(min_distance: float) -> None:
    if min_distance < OVERLAP_DISTANCE:
        raise ValueError(
            f"two charges are {min_distance:.3g} Å apart (below {OVERLAP_DISTANCE} Å): overlapping "
            "atoms"
        )


def _real_space(neighbors, charges, alpha, energies, forces, de_dstrain):
    """Add the erfc-screened pair sum over the full neighbour list (each pair seen twice)."""
    i, j, _, d, vectors = neighbors.arrays()
    if len(d) == 0:
        return
    _check_distances(float(d.min()))
    two_over_sqrt_pi = 2 / math.sqrt(math.pi)
    # Blocks of pairs small enough for the cache: every step below is one pass over memory.
    for start in range(0, len(d), PAIR_BLOCK):
        stop = min(start + PAIR_BLOCK, len(d))
        centres, distance, vector = i[start:stop], d[start:stop], vectors[start:stop]
        qq = COULOMB * charges[centres] * charges[j[start:stop]]
        scaled = alpha * distance
        screened = erfc(scaled)
        screened /= distance  # φ(r) = erfc(αr)/r
        # −φ'(r)/r = [erfc(αr)/r + (2α/√π) exp(−α²r²)] / r².
        slope = np.exp(-(scaled * scaled))
        slope *= alpha * two_over_sqrt_pi
        slope += screened
        slope /= distance * distance
        slope *= qq
        per_pair = np.empty((stop - start, 4))
        np.multiply(qq, screened, out=per_pair[:, 0])
        # Each ordered pair (i, j) gives F_i = q_i q_j φ'(d) D/d with D = r_j − r_i + shift;
        # the reverse pair gives atom j its share, so no scatter into j is needed.
        np.multiply(vector, -slope[:, None], out=per_pair[:, 1:])
        low, high = int(centres.min()), int(centres.max()) + 1
        sums = _sum_by_centre(centres - low, per_pair, high - low)
        energies[low:high] += 0.5 * sums[:, 0]
        forces[low:high] += sums[:, 1:]
        # dE/dε_ab = ½ Σ_pairs q_i q_j φ'(d) D_a D_b / d.
        de_dstrain += 0.5 * per_pair[:, 1:].T @ vector


def _sum_by_centre(centres: np.ndarray, values: np.ndarray, n_atoms: int) -> np.ndarray:
    """Sum rows of ``values`` (n_pairs, k) per centre atom -> (n_atoms, k)."""
    out = np.zeros((n_atoms, values.shape[1]))
    if len(centres) > 1 and not np.all(centres[1:] >= centres[:-1]):
        for column in range(values.shape[1]):
            out[:, column] = np.bincount(centres, weights=values[:, column], minlength=n_atoms)
        return out
    # The neighbour list groups pairs by increasing centre: contiguous segments, summed by
    # reduceat (several times faster than bincount). Empty segments are skipped, since
    # reduceat would return a row of the next segment for them.
    atoms = np.arange(n_atoms)
    starts = np.searchsorted(centres, atoms)
    present = np.searchsorted(centres, atoms, side="right") > starts
    out[present] = np.add.reduceat(values, starts[present], axis=0)
    return out


def _kvector_indices(cell, k_cut):
    """Integer (h, k, l) of the half space of k vectors with 0 < |k| < k_cut, and the k vectors."""
    reciprocal = 2 * math.pi * np.linalg.inv(cell).T  # rows b_a with a_a·b_b = 2π δ_ab
    # |h_a| = |k·a_a|/2π ≤ k_cut |a_a| / 2π.
    kmax = np.floor(k_cut * np.linalg.norm(cell, axis=1) / (2 * math.pi)).astype(int)
    h = np.arange(0, kmax[0] + 1)
    k = np.arange(-kmax[1], kmax[1] + 1)
    l = np.arange(-kmax[2], kmax[2] + 1)  # noqa: E741
    grid = np.stack(np.meshgrid(h, k, l, indexing="ij"), axis=-1).reshape(-1, 3)
    # Half space: h > 0, or h = 0 and k > 0, or h = k = 0 and l > 0 (k and −k give equal terms).
    h_pos, k_pos, l_pos = (grid[:, a] > 0 for a in range(3))
    h_zero, k_zero = grid[:, 0] == 0, grid[:, 1] == 0
    half = h_pos | (h_zero & k_pos) | (h_zero & k_zero & l_pos)
    grid = grid[half]
    kvectors = grid @ reciprocal
    inside = np.einsum("ij,ij->i", kvectors, kvectors) < k_cut * k_cut
    return grid[inside], kvectors[inside], tuple(int(m) for m in kmax)


def _reciprocal_space(positions, cell, charges, alpha, k_cut, energies, forces, de_dstrain):
    """Add the smooth long-range part, summed over the half space of k vectors (twice each)."""
    n_atoms = len(positions)
    volume = abs(np.linalg.det(cell))
    indices, kvectors, kmax = _kvector_indices(cell, k_cut)
    if len(indices) == 0:
        return kmax, 0
    # exp(i k·r_j) = Π_a exp(2πi h_a s_ja) with fractional coordinates s: tabulate each factor
    # per atom once, then each k vector costs products and gathers instead of sin/cos.
    fractional = positions @ np.linalg.inv(cell)
    # Layout (k, atom): gathering whole rows is a memcpy, gathering columns is not.
    phases = [
        np.exp(2j * math.pi * np.arange(-kmax[a], kmax[a] + 1)[:, None] * fractional[:, a])
        for a in range(3)
    ]  # phases[a][m + kmax[a], j] = exp(2πi m s_ja)
    # Group k vectors by their (h, k) column: one product per column, gathered per k vector.
    columns, column_of = np.unique(indices[:, :2], axis=0, return_inverse=True)
    column_of = column_of.reshape(-1)
    column_phase = phases[0][columns[:, 0] + kmax[0]] * phases[1][columns[:, 1] + kmax[1]]
    third = indices[:, 2] + kmax[2]

    k2 = np.einsum("ij,ij->i", kvectors, kvectors)
    # Each half-space k stands for ±k, hence the 2 in the prefactor.
    prefactor = 2 * (2 * math.pi * COULOMB / volume) * np.exp(-k2 / (4 * alpha**2)) / k2
    n_k = len(kvectors)
    chunk = min(n_k, max(1, CHUNK_ELEMENTS // n_atoms))
    # Buffers reused across chunks: fresh large arrays would page-fault on every chunk.
    wave_buffer = np.empty((chunk, n_atoms), dtype=np.complex128)
    factor_buffer = np.empty_like(wave_buffer)
    weighted = np.zeros((4, n_atoms), dtype=np.complex128)
    strain = np.zeros((3, 3))
    for start in range(0, n_k, chunk):
        stop = min(start + chunk, n_k)
        waves = wave_buffer[: stop - start]
        np.take(column_phase, column_of[start:stop], axis=0, out=waves)
        third_factor = factor_buffer[: stop - start]
        np.take(phases[2], third[start:stop], axis=0, out=third_factor)
        waves *= third_factor  # (chunk, n_atoms): exp(i k·r_j)
        structure = waves @ charges  # S(k)
        pre = prefactor[start:stop]
        kv = kvectors[start:stop]
        # E_i = q_i Σ_k pre Re[e^{ik·r_i} S*(k)] sums to Σ_k pre |S|²; its gradient counts |S|²
        # twice: F_i = −∂E/∂r_i = 2 q_i Σ_k pre k Im[e^{ik·r_i} S*(k)].
        coefficients = np.empty((4, stop - start), dtype=np.complex128)
        coefficients[0] = pre * np.conj(structure)
        coefficients[1:] = coefficients[:1] * kv.T
        weighted += coefficients @ waves
        # dE/dε_ab = Σ_k pre |S|² [−δ_ab + 2 k_a k_b (1/4α² + 1/k²)] (S and k·r are invariant).
        power = pre * np.abs(structure) ** 2
        strain -= np.eye(3) * power.sum()
        factor = 2 * power * (1 / (4 * alpha**2) + 1 / k2[start:stop])
        strain += (kv * factor[:, None]).T @ kv
    energies += charges * weighted[0].real
    forces += 2 * charges[:, None] * weighted[1:].imag.T
    de_dstrain += strain
    return kmax, len(kvectors)


def _direct(positions, cell, charges) -> dict:
    """Plain Coulomb sum of a non-periodic system, in row blocks of the pair matrix."""
    n_atoms = len(positions)
    energies = np.zeros(n_atoms)
    forces = np.zeros((n_atoms, 3))
    de_dstrain = np.zeros((3, 3))
    block = max(1, CHUNK_ELEMENTS // max(n_atoms, 1))
    min_distance = math.inf
    for start in range(0, n_atoms, block):
        stop = min(start + block, n_atoms)
        vectors = positions[None, :, :] - positions[start:stop, None, :]  # r_j − r_i
        distance = np.sqrt(np.einsum("ijk,ijk->ij", vectors, vectors))
        rows = np.arange(stop - start)
        distance[rows, rows + start] = np.inf  # no self-interaction
        min_distance = min(min_distance, float(distance.min()))
        inverse = 1.0 / distance
        qq = COULOMB * charges[start:stop, None] * charges[None, :]
        pair_energy = qq * inverse
        energies[start:stop] = 0.5 * pair_energy.sum(axis=1)
        # F_i = Σ_j q_i q_j (r_i − r_j)/r³ = −Σ_j (q_i q_j / r³) D_ij.
        weights = pair_energy * inverse * inverse
        forces[start:stop] = -np.einsum("ij,ijk->ik", weights, vectors)
        flat = vectors.reshape(-1, 3)
        de_dstrain -= 0.5 * (flat * weights.reshape(-1, 1)).T @ flat
    if n_atoms > 1:
        _check_distances(min_distance)
    result = {
        "energy": float(energies.sum()),
        "energies": energies,
        "forces": forces,
        "charges": charges,
        "method": "direct",
        "alpha": None,
        "real_cutoff": None,
        "reciprocal_cutoff": None,
        "kmax": None,
        "n_kvectors": 0,
    }
    volume = abs(np.linalg.det(cell))
    if volume > 0:
        result["stress"] = full_3x3_to_voigt_6_stress(de_dstrain / volume)
        result["virial"] = -de_dstrain
    return result
