"""Ewald sums against Madelung constants, direct sums and finite differences; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, make_supercell
from finite_differences import check_position_gradients, check_strain_gradients
from scipy.spatial.distance import pdist
from structures import random_structure, random_triclinic_cell

import gapx
from gapx.ewald import COULOMB

NACL = {"Na": 1.0, "Cl": -1.0}
# Madelung constants referred to the nearest-neighbour distance, E = −M k_e q² N_pairs / r_nn
# (e.g. Zucker, J. Phys. A 8, 1734 (1975); Kittel's tables round them to 7 digits).
MADELUNG = {
    "rocksalt": 1.747564594633,
    "cesiumchloride": 1.762674773070,
    "zincblende": 1.638055053388,
}
MADELUNG_RTOL = 1e-6  # at the default accuracy 1e-6
MADELUNG_RTOL_TIGHT = 1e-10  # at accuracy 1e-13
ALPHA_RTOL = 1e-6  # energy change between splitting parameters: the requested accuracy
FD_ACCURACY = 1e-12  # Ewald accuracy for finite differences: cutoff jumps far below FD noise
FD_RTOL = 1e-6
DIRECT_RTOL = 1e-12
SHEAR = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1]])  # a triclinic supercell of any lattice


def crystal(structure: str, variant: str) -> tuple[Atoms, float, dict]:
    """(atoms, nearest-neighbour distance, charges) for a binary crystal in one cell variant."""
    symbols, a = {"rocksalt": ("NaCl", 5.64), "cesiumchloride": ("CsCl", 4.12),
                  "zincblende": ("ZnS", 5.41)}[structure]  # fmt: skip
    atoms = bulk(symbols, structure, a=a, cubic=variant == "conventional")
    if variant == "sheared":
        atoms = make_supercell(atoms, SHEAR)
    r_nn = {"rocksalt": a / 2, "cesiumchloride": a * 3**0.5 / 2, "zincblende": a * 3**0.5 / 4}
    cation, anion = sorted(set(atoms.get_chemical_symbols()), key=symbols.index)
    return atoms, r_nn[structure], {cation: 2.0, anion: -2.0}


def madelung(atoms, r_nn, ewald) -> float:
    result = ewald.calculate(atoms)
    return -result["energy"] * r_nn / (COULOMB * 4.0 * len(atoms) / 2)


@pytest.mark.parametrize("structure", sorted(MADELUNG))
@pytest.mark.parametrize("variant", ["conventional", "primitive", "sheared"])
def test_madelung_constants(structure, variant):
    atoms, r_nn, charges = crystal(structure, variant)
    if variant != "conventional":
        assert not np.allclose(atoms.cell.angles(), 90.0) or structure == "cesiumchloride"
    value = madelung(atoms, r_nn, gapx.Ewald(charges))
    assert abs(value / MADELUNG[structure] - 1) < MADELUNG_RTOL
    tight = madelung(atoms, r_nn, gapx.Ewald(charges, accuracy=1e-13))
    assert abs(tight / MADELUNG[structure] - 1) < MADELUNG_RTOL_TIGHT


def test_perfect_crystal_has_no_forces_and_equal_site_energies():
    atoms, _, charges = crystal("rocksalt", "sheared")
    result = gapx.Ewald(charges).calculate(atoms)
    assert np.max(np.abs(result["forces"])) < 1e-10
    np.testing.assert_allclose(result["energies"], result["energy"] / len(atoms), rtol=1e-9)
    # Cubic symmetry: isotropic stress, positive (the point-charge lattice pulls inwards).
    np.testing.assert_allclose(result["stress"][:3], result["stress"][0], rtol=1e-6)
    assert result["stress"][0] > 0
    assert np.max(np.abs(result["stress"][3:])) < 1e-9 * result["stress"][0]


def random_ionic(rng, n_pairs=4, cell=None) -> Atoms:
    atoms = random_structure(rng, ["Na", "Cl"], 2 * n_pairs, cell=cell, min_distance=1.5)
    atoms.rattle(0.01, seed=int(rng.integers(1 << 30)))
    return atoms


def test_energy_independent_of_splitting_parameter(rng):
    atoms = random_ionic(rng, 6)
    reference = gapx.Ewald(NACL, accuracy=1e-14).calculate(atoms)
    default = gapx.Ewald(NACL).calculate(atoms)
    for factor in (0.5, 1.0, 2.0):
        result = gapx.Ewald(NACL, alpha=factor * default["alpha"]).calculate(atoms)
        assert result["alpha"] == pytest.approx(factor * default["alpha"])
        assert abs(result["energy"] / reference["energy"] - 1) < ALPHA_RTOL
        # Per-atom energies are ½ q_i × potential at r_i: also independent of the split.
        site_scale = np.max(np.abs(reference["energies"]))
        assert np.max(np.abs(result["energies"] - reference["energies"])) < 1e-6 * site_scale
        force_scale = np.max(np.abs(reference["forces"]))
        assert np.max(np.abs(result["forces"] - reference["forces"])) < 5e-6 * force_scale
        stress_scale = np.max(np.abs(reference["stress"]))
        assert np.max(np.abs(result["stress"] - reference["stress"])) < 5e-5 * stress_scale
    # The split itself moves energy between the terms by orders of magnitude more than that.
    assert default["real_cutoff"] == pytest.approx(np.sqrt(-np.log(1e-6)) / default["alpha"])
    assert default["reciprocal_cutoff"] == pytest.approx(
        2 * np.sqrt(-np.log(1e-6)) * default["alpha"]
    )
    assert default["n_kvectors"] > 0


def stress_matrix(voigt):
    xx, yy, zz, yz, xz, xy = voigt
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def check_derivatives(ewald, atoms):
    def energy(a):
        return ewald.calculate(a)["energy"]

    check_position_gradients(energy, lambda a: -ewald.calculate(a)["forces"], atoms, rtol=FD_RTOL)
    check_strain_gradients(
        energy,
        lambda a: stress_matrix(ewald.calculate(a)["stress"]) * a.get_volume(),
        atoms,
        rtol=FD_RTOL,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forces_and_stress_match_finite_differences(seed):
    rng = np.random.default_rng(seed)
    atoms = random_ionic(rng, 4)
    default_alpha = gapx.Ewald(NACL).calculate(atoms)["alpha"]
    # A fixed alpha: the default one depends on the volume, which strain changes.
    check_derivatives(gapx.Ewald(NACL, accuracy=FD_ACCURACY, alpha=default_alpha), atoms)


def test_pair_cap_shortens_the_real_space_cutoff(rng, monkeypatch):
    atoms = random_ionic(rng, 4)
    free = gapx.Ewald(NACL).calculate(atoms)
    monkeypatch.setattr(gapx.ewald, "MAX_PAIRS", 40)
    capped = gapx.Ewald(NACL).calculate(atoms)
    pairs = len(atoms) ** 2 * 4 * np.pi / 3 * capped["real_cutoff"] ** 3 / atoms.get_volume()
    assert pairs == pytest.approx(40)
    assert capped["real_cutoff"] < 0.8 * free["real_cutoff"]
    assert capped["n_kvectors"] > free["n_kvectors"]
    assert capped["energy"] == pytest.approx(free["energy"], rel=ALPHA_RTOL)


def test_stress_sign_matches_ase_numerical_stress(rng):
    from ase.calculators.calculator import Calculator, all_changes
    from ase.calculators.fd import calculate_numerical_stress

    ewald = gapx.Ewald(NACL, accuracy=FD_ACCURACY, alpha=0.5)

    class EwaldCalculator(Calculator):
        implemented_properties = ["energy", "free_energy", "stress"]

        def calculate(self, atoms=None, properties=None, system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            result = ewald.calculate(self.atoms)
            self.results = {
                "energy": result["energy"],
                "free_energy": result["energy"],
                "stress": result["stress"],
            }

    atoms = random_ionic(rng, 3)
    atoms.calc = EwaldCalculator()
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    analytic = atoms.get_stress()
    assert np.max(np.abs(analytic)) > 1e-4
    np.testing.assert_allclose(
        analytic, numerical, rtol=1e-6, atol=1e-6 * np.max(np.abs(numerical))
    )


def test_charged_cell_with_background():
    rng = np.random.default_rng(5)
    atoms = random_ionic(rng, 3)
    charges = np.linspace(-1.0, 1.5, len(atoms))  # net charge 1.5 e
    atoms.arrays["charges"] = charges
    with pytest.raises(ValueError, match=r"net charge of 1\.5 e.*background=True"):
        gapx.Ewald(None).calculate(atoms)
    reference = gapx.Ewald(None, accuracy=1e-14, background=True).calculate(atoms)
    np.testing.assert_allclose(reference["charges"], charges)
    for factor in (0.5, 2.0):
        alpha = factor * reference["alpha"]
        result = gapx.Ewald(None, background=True, alpha=alpha).calculate(atoms)
        assert abs(result["energy"] / reference["energy"] - 1) < ALPHA_RTOL
    check_derivatives(
        gapx.Ewald(None, accuracy=FD_ACCURACY, background=True, alpha=reference["alpha"]), atoms
    )


def test_per_atom_energies_sum_to_total(rng):
    atoms = random_ionic(rng, 5)
    result = gapx.Ewald(NACL).calculate(atoms)
    assert result["energies"].shape == (len(atoms),)
    assert np.sum(result["energies"]) == pytest.approx(result["energy"], rel=1e-12)
    assert np.ptp(result["energies"]) > 0.1  # a disordered cell: sites differ


def test_invariances(rng):
    atoms = random_ionic(rng, 4)
    ewald = gapx.Ewald(NACL, accuracy=1e-10)
    base = ewald.calculate(atoms)

    moved = atoms.copy()
    moved.positions += rng.normal(size=3) * 3.0
    shifted = ewald.calculate(moved)
    assert shifted["energy"] == pytest.approx(base["energy"], rel=1e-9)
    np.testing.assert_allclose(shifted["forces"], base["forces"], atol=1e-8)

    wrapped = atoms.copy()
    wrapped.positions += atoms.cell.array[0] * 2 - atoms.cell.array[2]
    np.testing.assert_allclose(ewald.calculate(wrapped)["energies"], base["energies"], atol=1e-8)

    order = rng.permutation(len(atoms))
    permuted = ewald.calculate(atoms[order])
    np.testing.assert_allclose(permuted["energies"], base["energies"][order], atol=1e-8)
    np.testing.assert_allclose(permuted["forces"], base["forces"][order], atol=1e-8)

    supercell = ewald.calculate(atoms * (2, 1, 2))
    assert supercell["energy"] == pytest.approx(4 * base["energy"], rel=1e-8)
    np.testing.assert_allclose(supercell["stress"], base["stress"], rtol=1e-6, atol=1e-10)


def test_sum_by_centre_handles_empty_and_unsorted_groups(rng):
    n_atoms = 7
    centres = np.sort(rng.choice([0, 2, 3, 6], size=40))  # atoms 1, 4, 5 have no pairs
    values = rng.normal(size=(40, 4))
    expected = np.zeros((n_atoms, 4))
    np.add.at(expected, centres, values)
    np.testing.assert_allclose(gapx.ewald._sum_by_centre(centres, values, n_atoms), expected)
    order = rng.permutation(40)
    unsorted = gapx.ewald._sum_by_centre(centres[order], values[order], n_atoms)
    np.testing.assert_allclose(unsorted, expected)


def test_blocks_of_pairs_and_k_vectors_give_the_same_sums(rng, monkeypatch):
    atoms = random_ionic(rng, 4)
    whole = gapx.Ewald(NACL).calculate(atoms)
    # Blocks that split the pairs of one centre and the k vectors into many pieces.
    monkeypatch.setattr(gapx.ewald, "PAIR_BLOCK", 37)
    monkeypatch.setattr(gapx.ewald, "CHUNK_ELEMENTS", 5 * len(atoms))
    blocked = gapx.Ewald(NACL).calculate(atoms)
    assert blocked["energy"] == pytest.approx(whole["energy"], rel=1e-13)
    np.testing.assert_allclose(blocked["energies"], whole["energies"], atol=1e-11)
    np.testing.assert_allclose(blocked["forces"], whole["forces"], atol=1e-11)
    np.testing.assert_allclose(blocked["stress"], whole["stress"], atol=1e-13)


def test_atoms_without_real_space_neighbours():
    # A short real-space cutoff (large alpha) leaves the lone ion with no pair at all.
    atoms = Atoms(
        "NaClNaCl",
        positions=[[1, 1, 1], [3.4, 1, 1], [9, 9, 9], [1, 9, 5]],
        cell=np.diag([12.0, 12.5, 13.0]),
        pbc=True,
    )
    reference = gapx.Ewald(NACL, accuracy=1e-12).calculate(atoms)
    short = gapx.Ewald(NACL, accuracy=1e-12, alpha=2.0).calculate(atoms)
    assert short["real_cutoff"] < 3.0
    assert short["energy"] == pytest.approx(reference["energy"], rel=1e-10)
    np.testing.assert_allclose(short["energies"], reference["energies"], atol=1e-9)
    np.testing.assert_allclose(short["forces"], reference["forces"], atol=1e-9)


def test_charges_from_arrays_match_table(rng):
    atoms = random_ionic(rng, 3)
    from_table = gapx.Ewald(NACL).calculate(atoms)
    atoms.arrays["charges"] = np.where(atoms.numbers == 11, 1.0, -1.0)
    from_arrays = gapx.Ewald().calculate(atoms)
    assert from_arrays["energy"] == from_table["energy"]
    without = random_ionic(rng, 3)
    without.set_initial_charges(np.where(without.numbers == 11, 1.0, -1.0))
    assert gapx.Ewald().calculate(without)["energy"] == pytest.approx(
        gapx.Ewald(NACL).calculate(without)["energy"]
    )


def nacl_cluster(repeat: int) -> Atoms:
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True) * (repeat, repeat, repeat)
    atoms.rattle(0.05, seed=repeat)
    atoms.pbc = False
    return atoms


def test_cluster_matches_direct_sum():
    atoms = nacl_cluster(5)  # 1000 ions
    charges = np.where(atoms.numbers == 11, 1.0, -1.0)
    result = gapx.Ewald(NACL).calculate(atoms)
    assert result["method"] == "direct"
    products = pdist(charges[:, None], lambda a, b: a[0] * b[0])
    reference = COULOMB * np.sum(products / pdist(atoms.positions))
    assert result["energy"] == pytest.approx(reference, rel=DIRECT_RTOL)
    assert np.sum(result["energies"]) == pytest.approx(result["energy"], rel=1e-12)


def test_cluster_blocks_and_derivatives(monkeypatch):
    small = nacl_cluster(2)
    whole = gapx.Ewald(NACL).calculate(small)
    monkeypatch.setattr(gapx.ewald, "CHUNK_ELEMENTS", 7 * len(small))  # force several blocks
    blocked = gapx.Ewald(NACL).calculate(small)
    assert blocked["energy"] == pytest.approx(whole["energy"], rel=1e-13)
    np.testing.assert_allclose(blocked["forces"], whole["forces"], atol=1e-12)
    small.cell = np.diag([12.0, 13.0, 14.0])  # a volume for the stress of a finite system
    check_derivatives(gapx.Ewald(NACL), small)


def test_cluster_is_the_limit_of_a_large_periodic_box():
    cluster = nacl_cluster(2)
    direct = gapx.Ewald(NACL).calculate(cluster)["energy"]
    charges = np.where(cluster.numbers == 11, 1.0, -1.0)
    errors = []
    for length in (40.0, 80.0):
        boxed = cluster.copy()
        boxed.cell = np.eye(3) * length
        boxed.pbc = True
        boxed.center()
        dipole = charges @ boxed.positions
        # Tin-foil Ewald to vacuum boundary conditions: + 2π k_e |D|² / 3V.
        periodic = gapx.Ewald(NACL, accuracy=1e-10).calculate(boxed)["energy"]
        periodic += 2 * np.pi * COULOMB * (dipole @ dipole) / (3 * length**3)
        errors.append(abs(periodic / direct - 1))
    assert errors[1] < 1e-6
    assert errors[1] < errors[0] / 10  # converging (images interact as quadrupoles)


def test_serialisation_round_trip():
    ewald = gapx.Ewald({"Na": 0.8, "Cl": -0.8}, accuracy=1e-7, background=True, alpha=0.3)
    data = json.loads(json.dumps(ewald.to_dict()))
    again = gapx.Ewald.from_dict(data)
    assert again == ewald
    assert again.charges == {"Na": 0.8, "Cl": -0.8}
    assert (again.accuracy, again.background, again.alpha) == (1e-7, True, 0.3)
    assert repr(again) == repr(ewald)
    assert "accuracy=1e-07" in repr(ewald)
    assert gapx.Ewald.from_dict(gapx.Ewald().to_dict()) == gapx.Ewald()
    with pytest.raises(ValueError, match="unknown Ewald settings"):
        gapx.Ewald.from_dict({"type": "Ewald", "cutoff": 3.0})
    with pytest.raises(ValueError, match="not an Ewald description"):
        gapx.Ewald.from_dict({"type": "SOAP"})


def test_bad_settings():
    with pytest.raises(ValueError, match="'Xx' is not a chemical symbol"):
        gapx.Ewald({"Xx": 1.0})
    with pytest.raises(ValueError, match="charge of Na must be finite"):
        gapx.Ewald({"Na": float("nan"), "Cl": -1.0})
    with pytest.raises(ValueError, match=r"accuracy must be in \(0, 1\)"):
        gapx.Ewald(NACL, accuracy=1.5)
    with pytest.raises(ValueError, match="alpha must be positive and finite"):
        gapx.Ewald(NACL, alpha=-1.0)
    with pytest.raises(TypeError, match="charges must be a dict"):
        gapx.Ewald([1.0, -1.0])


def test_bad_structures(rng):
    atoms = random_ionic(rng, 2)
    with pytest.raises(ValueError, match=r"no charge given for species \['K'\]"):
        gapx.Ewald(NACL).calculate(atoms + Atoms("K", positions=[[0.3, 0.2, 0.1]]))
    with pytest.raises(ValueError, match="neither"):
        gapx.Ewald().calculate(atoms)
    slab = atoms.copy()
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match="mixed periodicity"):
        gapx.Ewald(NACL).calculate(slab)
    broken = atoms.copy()
    broken.positions[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gapx.Ewald(NACL).calculate(broken)
    flat = atoms.copy()
    flat.cell[2] = flat.cell[0] + flat.cell[1]
    with pytest.raises(ValueError, match="degenerate cell"):
        gapx.Ewald(NACL).calculate(flat)
    for pbc in (True, False):
        close = atoms.copy()
        close.positions[1] = close.positions[0] + [0.05, 0.0, 0.0]
        close.pbc = pbc
        with pytest.raises(ValueError, match="overlapping atoms"):
            gapx.Ewald(NACL).calculate(close)


def test_triclinic_cell_builder_is_skewed(rng):
    # Guards the premise of the derivative tests: random cells are far from orthorhombic.
    angles = Atoms(cell=random_triclinic_cell(rng)).cell.angles()
    assert np.max(np.abs(angles - 90.0)) > 5.0
