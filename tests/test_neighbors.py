"""The C++ neighbour list against ASE's, on random, skewed and mixed-periodicity systems."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from structures import random_triclinic_cell

import gapx

DISTANCE_TOL = 1e-10
N_RANDOM_SYSTEMS = 60


def pair_table(i, j, S, d, D):
    """Pairs as a dict (i, j, S) -> (d, D), for order-independent comparison."""
    return {
        (int(a), int(b), tuple(int(s) for s in shift)): (dist, vec)
        for a, b, shift, dist, vec in zip(i, j, S, d, D, strict=True)
    }


def assert_same_as_ase(atoms, cutoff):
    ours = pair_table(*gapx.neighbor_list(atoms, cutoff))
    reference = pair_table(*ase_neighbor_list("ijSdD", atoms, cutoff))
    assert ours.keys() == reference.keys()
    for key, (dist, vec) in reference.items():
        assert abs(ours[key][0] - dist) < DISTANCE_TOL
        np.testing.assert_allclose(ours[key][1], vec, atol=DISTANCE_TOL)
    return ours


def shortest_height(cell):
    volume = abs(np.linalg.det(cell))
    return min(
        volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)
    )


def random_system(rng):
    """A random triclinic (sometimes strongly sheared) cell with random pbc and 1-500 atoms."""
    shear = rng.choice([0.1, 0.5, 1.5])
    scale = rng.uniform(3.0, 10.0)
    cell = random_triclinic_cell(rng, scale=scale, shear=shear)
    # Strongly sheared but not nearly flat: ASE's reference needs time and memory that grow
    # without bound as a cell height goes to zero.
    while shortest_height(cell) < 0.3 * scale:
        cell = random_triclinic_cell(rng, scale=scale, shear=shear)
    n_atoms = int(rng.integers(1, 501)) if rng.uniform() < 0.3 else int(rng.integers(1, 60))
    positions = rng.uniform(-0.2, 1.2, (n_atoms, 3)) @ cell  # some atoms outside the cell
    pbc = rng.uniform(size=3) < 0.6
    # ASE's reference becomes very slow for cutoffs far below 1 Å, so keep at least that.
    cutoff = max(rng.uniform(0.2, 3.0) * shortest_height(cell), 1.0)
    # Bound the cost of the reference: the number of pairs grows with density * cutoff^3.
    density = n_atoms / abs(np.linalg.det(cell))
    cutoff = min(cutoff, (20000 / max(n_atoms, 1) / density / 4.2) ** (1 / 3))
    return Atoms("X" * n_atoms, positions=positions, cell=cell, pbc=pbc), cutoff


@pytest.mark.parametrize("seed", range(N_RANDOM_SYSTEMS))
def test_random_triclinic_systems_match_ase(seed):
    atoms, cutoff = random_system(np.random.default_rng(seed))
    assert_same_as_ase(atoms, cutoff)


def test_cutoff_three_times_cell_height_includes_own_images():
    cell = np.array([[2.5, 0.0, 0.0], [1.9, 2.2, 0.0], [0.4, 1.1, 2.6]])
    atoms = Atoms("X2", positions=[[0.1, 0.2, 0.3], [1.2, 0.9, 1.4]], cell=cell, pbc=True)
    cutoff = 3.0 * shortest_height(cell)
    pairs = assert_same_as_ase(atoms, cutoff)
    assert any(i == j for i, j, _ in pairs), "an atom's own images must be listed"


def test_molecule_without_cell():
    rng = np.random.default_rng(3)
    atoms = Atoms("X40", positions=rng.normal(scale=3.0, size=(40, 3)))
    assert_same_as_ase(atoms, 2.5)


def test_crystal_silicon_coordination():
    atoms = bulk("Si", "diamond", a=5.43) * (3, 3, 3)
    i, *_ = gapx.neighbor_list(atoms, 2.5)
    np.testing.assert_array_equal(np.bincount(i), 4)


def test_pairs_grouped_by_centre_and_symmetric():
    rng = np.random.default_rng(7)
    atoms = Atoms("X50", positions=rng.uniform(0, 8, (50, 3)), cell=np.eye(3) * 8, pbc=True)
    i, j, S, d, D = gapx.neighbor_list(atoms, 3.0)
    assert np.all(np.diff(i) >= 0)
    forward = {(a, b, tuple(s)) for a, b, s in zip(i, j, S, strict=True)}
    backward = {(b, a, tuple(-s)) for a, b, s in zip(i, j, S, strict=True)}
    assert forward == backward
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), d, atol=DISTANCE_TOL)
    np.testing.assert_allclose(D, atoms.positions[j] - atoms.positions[i] + S @ atoms.cell.array)


def test_translation_and_wrapping_leave_pairs_unchanged():
    rng = np.random.default_rng(11)
    cell = random_triclinic_cell(rng, scale=7.0, shear=0.8)
    atoms = Atoms("X80", positions=rng.uniform(0, 1, (80, 3)) @ cell, cell=cell, pbc=True)
    cutoff = 3.5
    i, j, S, d, _ = gapx.neighbor_list(atoms, cutoff)
    reference = sorted(zip(i, j, np.round(d, 9), strict=True))

    translated = atoms.copy()
    translated.positions += rng.normal(size=3) * 13.0
    i2, j2, _, d2, _ = gapx.neighbor_list(translated, cutoff)
    assert sorted(zip(i2, j2, np.round(d2, 9), strict=True)) == reference

    wrapped = translated.copy()
    wrapped.wrap()
    i3, j3, _, d3, _ = gapx.neighbor_list(wrapped, cutoff)
    assert sorted(zip(i3, j3, np.round(d3, 9), strict=True)) == reference


def test_thread_count_does_not_change_result():
    rng = np.random.default_rng(5)
    atoms = Atoms("X300", positions=rng.uniform(0, 12, (300, 3)), cell=np.eye(3) * 12, pbc=True)
    one = gapx.neighbor_list(atoms, 3.0, n_threads=1)
    two = gapx.neighbor_list(atoms, 3.0, n_threads=2)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


def test_empty_structure():
    i, j, S, d, D = gapx.neighbor_list(Atoms(), 3.0)
    assert len(i) == len(j) == len(d) == 0
    assert S.shape == (0, 3)
    assert D.shape == (0, 3)


@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    n_atoms=st.integers(1, 30),
    pbc=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    shear=st.floats(0.0, 1.5),
    cutoff_factor=st.floats(0.1, 2.5),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_ase(n_atoms, pbc, shear, cutoff_factor, seed):
    rng = np.random.default_rng(seed)
    cell = random_triclinic_cell(rng, scale=5.0, shear=shear)
    assume(shortest_height(cell) > 1.5)  # see random_system: ASE's cost diverges for flat cells
    positions = rng.uniform(0, 1, (n_atoms, 3)) @ cell
    atoms = Atoms("X" * n_atoms, positions=positions, cell=cell, pbc=pbc)
    assert_same_as_ase(atoms, cutoff_factor * shortest_height(cell))


# ---- bad input -------------------------------------------------------------------------------


def simple_atoms():
    return Atoms("X2", positions=[[0, 0, 0], [1, 1, 1]], cell=np.eye(3) * 4, pbc=True)


@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_cutoff(cutoff):
    with pytest.raises(ValueError, match="cutoff must be positive and finite"):
        gapx.neighbor_list(simple_atoms(), cutoff)


def test_non_numeric_cutoff():
    with pytest.raises(ValueError, match="cutoff must be a number"):
        gapx.neighbor_list(simple_atoms(), "far")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_positions(value):
    atoms = simple_atoms()
    atoms.positions[1, 2] = value
    with pytest.raises(
        ValueError, match=r"positions contain NaN or infinite values \(atoms \[1\]\)"
    ):
        gapx.neighbor_list(atoms, 2.0)


def test_zero_cell_vector_in_periodic_direction():
    atoms = Atoms("X", positions=[[0, 0, 0]], cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]], pbc=True)
    with pytest.raises(ValueError, match=r"cell vector\(s\) \[2\] are zero but periodic"):
        gapx.neighbor_list(atoms, 2.0)


def test_zero_cell_vector_in_open_direction_is_fine():
    atoms = Atoms(
        "X2",
        positions=[[0, 0, 0], [1, 0, 0]],
        cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]],
        pbc=[True, True, False],
    )
    assert_same_as_ase(atoms, 2.0)


def test_linearly_dependent_periodic_vectors():
    cell = [[3, 0, 0], [0, 3, 0], [3, 3, 0]]
    atoms = Atoms("X", positions=[[0, 0, 0]], cell=cell, pbc=True)
    with pytest.raises(ValueError, match="linearly dependent"):
        gapx.neighbor_list(atoms, 2.0)


def test_core_rejects_bad_shapes_and_degenerate_cells():
    core = gapx._core
    cell = np.eye(3) * 4
    with pytest.raises((ValueError, TypeError)):
        core.build_neighbor_list(np.zeros((3, 2)), cell, (True, True, True), 2.0)
    with pytest.raises(ValueError, match="linearly dependent"):
        core.build_neighbor_list(np.zeros((1, 3)), np.zeros((3, 3)) + 1.0, (True, True, True), 2.0)
    with pytest.raises(ValueError, match="positions contain NaN"):
        core.build_neighbor_list(np.full((1, 3), np.nan), cell, (True, True, True), 2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"positions": np.zeros((4, 2))}, r"positions must have shape \(n_atoms, 3\)"),
        ({"cell": np.eye(2)}, r"cell must have shape \(3, 3\)"),
        ({"pbc": [True, False]}, "pbc must be a bool or three bools"),
    ],
)
def test_wrong_array_shapes(kwargs, message):
    from gapx.validation import as_cell, as_pbc, as_positions

    convert = {"positions": as_positions, "cell": as_cell, "pbc": as_pbc}
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError, match=message):
        convert[name](value)


def test_negative_thread_count():
    with pytest.raises(ValueError, match="n_threads must be positive"):
        gapx.neighbor_list(simple_atoms(), 2.0, n_threads=-2)
