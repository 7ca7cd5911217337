"""Three-body term: QUIP's angle_3b element by element, exact gradients, invariances, a fitted
model's forces and stress, and gap_fit's angle_3b models reproduced from their sparse points."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial.transform
from ase import Atoms
from finite_differences import (
    assert_gradients_close,
    numerical_position_gradient,
    numerical_strain_gradient,
)
from structures import random_cu_al_cells, random_structure, random_triclinic_cell

import gapx
from gapx.descriptors.three_body import triplet_kind
from gapx.terms import gradient_backpropagate

CUTOFF = 3.3
WIDTH = 0.8
QUIP_TOL = 1e-12
# (Z, Z1, Z2) filters; 0 is QUIP's "any species".
FILTERS = [(14, 14, 14), (14, 14, 8), (8, 14, 8), (8, 8, 8), (0, 0, 0), (14, 0, 8)]


def _cluster(rng):
    return Atoms("SiOOSiOSi", positions=rng.uniform(0, 4, (6, 3)), cell=[30] * 3, pbc=False)


def _periodic(rng):
    cell = np.array([[3.6, 0.0, 0.0], [0.4, 3.8, 0.0], [0.3, -0.2, 4.0]])
    return random_structure(rng, ["Si", "O"], 4, cell=cell, min_distance=1.2)


def _silicon(rng):
    # A small cell: every atom sees several images of itself and of the other atom.
    return random_structure(rng, ["Si"], 2, cell=random_triclinic_cell(rng, 2.8), min_distance=1.5)


def _dense_gradients(rows, n_atoms):
    """(n_rows, n_atoms, 3, F) from the sparse entries, checking they are distinct."""
    grads = rows.gradients
    assert len(np.unique(grads.pairs, axis=0)) == len(grads.pairs)
    dense = np.zeros((rows.n_rows, n_atoms, 3, rows.X.shape[1]))
    for (row, atom), value in zip(grads.pairs, grads.values, strict=True):
        dense[row, atom] = value
    return dense


def _quip_rows(result, n_atoms):
    """quippy's rows with the covariance cutoff appended, their centres, dense gradients."""
    X = np.c_[result["data"], result["covariance_cutoff"]]
    dense = np.zeros((X.shape[0], n_atoms, 3, X.shape[1]))
    # Three gradient entries per row (centre, j, k), in row order.
    for e, (_, atom) in enumerate(result["grad_index_0based"]):
        dense[e // 3, atom, :, :3] += result["grad_data"][e]
        dense[e // 3, atom, :, 3] += result["grad_covariance_cutoff"][e]
    return X, np.asarray(result["ci"]) - 1, dense


def _canonical(centres, X):
    """Row order by centre, then features (rounded: both sides sort the same way)."""
    return np.lexsort(np.c_[centres, np.round(X, 9)].T[::-1])


@pytest.mark.parametrize("make", [_cluster, _periodic, _silicon])
@pytest.mark.parametrize(("Z", "Z1", "Z2"), FILTERS)
def test_rows_and_gradients_equal_quippy(make, Z, Z1, Z2):
    descriptors = pytest.importorskip("quippy.descriptors")
    atoms = make(np.random.default_rng(3))
    quip = descriptors.Descriptor(
        f"angle_3b cutoff={CUTOFF} cutoff_transition_width={WIDTH} Z={Z} Z1={Z1} Z2={Z2}"
    ).calc(atoms, grad=True)
    term = gapx.ThreeBody(cutoff=CUTOFF, cutoff_transition_width=WIDTH, Z=Z, Z1=Z1, Z2=Z2)
    rows = term.rows(atoms, gradients=True)
    if "grad_index_0based" not in quip:  # quippy returns no arrays without a triplet
        assert rows.n_rows == 0
        assert not (Z == Z1 == Z2 == 0)
        return
    X, centres, dense = _quip_rows(quip, len(atoms))
    assert rows.n_rows == X.shape[0] > 0
    q, g = _canonical(centres, X), _canonical(rows.owner_atoms, rows.X)
    np.testing.assert_array_equal(rows.owner_atoms[g], centres[q])
    np.testing.assert_allclose(rows.X[g], X[q], rtol=0, atol=QUIP_TOL)
    if Z == Z1 == Z2 == 0:
        assert np.ptp(X[:, 3]) > 0  # some cutoff weights are inside the transition
    np.testing.assert_allclose(
        _dense_gradients(rows, len(atoms))[g], dense[q], rtol=0, atol=QUIP_TOL
    )


def test_kinds_owners_and_filters(rng):
    atoms = random_structure(rng, ["H", "O", "O"], 6, cell=random_triclinic_cell(rng, 4.0))
    term = gapx.ThreeBody(cutoff=3.0)
    rows = term.rows(atoms)
    assert set(rows.kinds) <= term.possible_kinds(["H", "O"])
    assert len(set(rows.kinds)) >= 4
    assert len(term.possible_kinds(["H", "O"])) == 2 * 3
    np.testing.assert_array_equal(rows.owner_rows, np.arange(rows.n_rows))
    np.testing.assert_allclose(rows.owner_weights, 1.0)
    water = triplet_kind(8, 1, 1)
    assert water == 8_001_001
    assert term.describe_kind(water) == "three_body[H-O-H]"
    only = gapx.ThreeBody(cutoff=3.0, Z="O", Z1="H", Z2="H")
    assert only.possible_kinds(["H", "O"]) == {water}
    assert set(only.rows(atoms).kinds) == {water}
    assert only.max_sparse_points({"H": 2, "O": 4}) == only.n_sparse
    assert term.max_sparse_points({"H": 2, "O": 4}) == 6 * term.n_sparse


def test_position_and_strain_gradients(rng):
    term = gapx.ThreeBody(cutoff=3.4, cutoff_transition_width=1.2)
    atoms = random_structure(rng, ["Si", "C"], 3, cell=random_triclinic_cell(rng, 3.2))
    X, dX = term.rows(atoms, gradients=True).X, term.rows(atoms, gradients=True).gradients
    assert X.shape[0] > 50

    def compute(a):
        return term.rows(a).X

    numeric = numerical_position_gradient(compute, atoms, 1e-6)
    dense = np.moveaxis(_dense_gradients(term.rows(atoms, gradients=True), len(atoms)), 0, 2)
    assert_gradients_close(dense, numeric, rtol=1e-6)
    numeric = numerical_strain_gradient(compute, atoms, 1e-6)
    assert_gradients_close(np.moveaxis(dX.strain, 0, 2), numeric, rtol=1e-6)


def test_backpropagation_without_stored_gradients(rng):
    """The lean path (dE/d distances per triplet) equals the contraction of stored gradients."""
    term = gapx.ThreeBody(cutoff=3.4, Z1="Si")
    atoms = random_structure(rng, ["Si", "C"], 5, cell=random_triclinic_cell(rng, 3.5))
    rows = term.rows(atoms, gradients=True)
    dE_dX = rng.normal(size=rows.X.shape)
    expected = gradient_backpropagate(rows, dE_dX, len(atoms))
    lean = term.backpropagate_rows(atoms, term.rows(atoms), dE_dX)
    for got, want in zip(lean, expected, strict=True):
        assert np.max(np.abs(want)) > 1.0
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.max(np.abs(want)))


def _sorted_rows(term, atoms):
    rows = term.rows(atoms)
    order = np.lexsort(np.c_[rows.kinds, rows.X].T[::-1])
    return rows.X[order]


def test_invariant_under_rotation_translation_and_permutation(rng):
    term = gapx.ThreeBody(cutoff=3.5)
    atoms = random_structure(rng, ["Si", "C"], 6, cell=random_triclinic_cell(rng, 4.5))
    reference = _sorted_rows(term, atoms)
    rotation = scipy.spatial.transform.Rotation.random(random_state=4).as_matrix()
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    turned.positions = atoms.positions @ rotation.T + np.array([0.3, -1.2, 7.0])
    permuted = atoms[rng.permutation(len(atoms))]
    wrapped = atoms.copy()
    wrapped.wrap()
    for other in (turned, permuted, wrapped):
        np.testing.assert_allclose(_sorted_rows(term, other), reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "term",
    [
        gapx.ThreeBody(cutoff=3.4),
        gapx.ThreeBody(cutoff=3.4, Z="Si"),
        gapx.TwoBody(cutoff=3.4),
        gapx.SOAP(species=["Si", "C"], cutoff=3.4, n_max=3, l_max=2),
    ],
    ids=lambda t: t.type_name,
)
def test_gradient_bytes_bound_the_gradients(term, rng):
    """The fit plans its blocks by each term's own count: at least what the gradients take
    (three-body: quadratic in the neighbours), and not far above it."""
    from gapx.neighbors import StructureContext

    atoms = random_structure(rng, ["Si", "C"], 6, cell=random_triclinic_cell(rng, 4.5))
    grads = term.rows(atoms, gradients=True).gradients
    held = grads.values.nbytes + grads.strain.nbytes
    estimate = term.gradient_bytes(StructureContext(atoms))
    assert held > 0
    limit = 4.0 if term.type_name == "three_body" and term.Z else 1.5  # filters: an upper bound
    assert held <= estimate <= limit * held


def test_selection_skips_duplicate_rows(rng):
    term = gapx.ThreeBody(cutoff=3.5, n_sparse=10_000, sparse_method="random")
    atoms = random_structure(rng, ["Si"], 6, cell=np.eye(3) * 3.0, pbc=False)
    X = term.rows(atoms).X
    chosen = term.select_sparse(X, np.random.default_rng(0))
    assert 2 * len(chosen) == len(X)  # each triplet is a row as (j, k) and as (k, j)


def test_round_trip_and_bad_parameters():
    term = gapx.ThreeBody(cutoff=4.0, Z="Si", Z2=8, theta=(1.0, 0.5, 2.0), n_sparse=7)
    assert (term.Z, term.Z1, term.Z2) == (14, None, 8)
    assert gapx.ThreeBody.from_dict(term.to_dict()) == term
    assert gapx.ThreeBody(theta=0.7).theta == (0.7, 0.7, 0.7)
    assert gapx.ThreeBody(Z=0) == gapx.ThreeBody()
    with pytest.raises(ValueError, match="cutoff_transition_width"):
        gapx.ThreeBody(cutoff=2.0, cutoff_transition_width=3.0)
    with pytest.raises(ValueError, match="theta"):
        gapx.ThreeBody(theta=(1.0, 2.0))
    with pytest.raises(ValueError, match=r"theta\[1\]"):
        gapx.ThreeBody(theta=(1.0, -2.0, 1.0))
    with pytest.raises(ValueError, match="Z1"):
        gapx.ThreeBody(Z1="Xx")
    with pytest.raises(ValueError, match="Z2 must be"):
        gapx.ThreeBody(Z2=False)
    with pytest.raises(ValueError, match="Z"):
        gapx.ThreeBody(Z=200)
    with pytest.raises(ValueError, match="sparse_method"):
        gapx.ThreeBody(sparse_method="uniform")


# ------------------------------------------------------------------------------------------
# A fitted model with two-, three-body and SOAP terms
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_model():
    frames = random_cu_al_cells(np.random.default_rng(5), 8)
    model = gapx.GAP(
        [
            gapx.TwoBody(cutoff=3.5, n_sparse=8, delta=0.5),
            gapx.ThreeBody(cutoff=3.2, n_sparse=12, delta=0.2, theta=(1.0, 0.7, 1.5)),
            gapx.SOAP(species=["Al", "Cu"], cutoff=3.5, n_max=3, l_max=2, delta=0.3, n_sparse=10),
        ],
        sigma_energy=0.002,
        sigma_force=0.05,
        verbose=False,
    )
    model.fit(frames)
    probe = random_cu_al_cells(np.random.default_rng(6), 1)[0]
    return model, probe


def test_mixed_model_forces_and_stress_are_exact(mixed_model):
    model, probe = mixed_model
    three = [s for s in model.sparse_sets if s.term == 1]
    assert len(three) == 6  # Cu and Al centres, three neighbour pairs each

    def energy(a):
        return model.predict(a, std=False)["energy"]

    out = model.predict(probe, std=False)
    numeric = numerical_position_gradient(energy, probe, 1e-5)
    assert_gradients_close(-out["forces"], numeric, rtol=1e-6)
    numeric = numerical_strain_gradient(energy, probe, 1e-5)
    numeric = 0.5 * (numeric + numeric.T)
    stress = out["stress"]
    voigt = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
    expected = np.array([numeric[a, b] for a, b in voigt]) / probe.get_volume()
    assert_gradients_close(stress, expected, rtol=1e-6)


def test_energy_is_smooth_where_a_neighbour_leaves_the_cutoff(mixed_model):
    """A neighbour crossing the three-body cutoff (inside the other terms' cutoffs): the energy
    across it is the first-order Taylor expansion from the force at the cutoff. The energy is
    C^1 (the cosine cutoff's second derivative jumps there, as QUIP's), so the remainder is
    O(h^2) ~ 1e-7; a jump in the energy would leave O(1), one in the force O(h)."""
    model, _ = mixed_model
    cutoff, h = model.terms[1].cutoff, 1e-4
    direction = np.array([0.6, 0.8, 0.0])

    def trimer(r):
        return Atoms("CuAlCu", positions=[[0, 0, 0], [2.4, 0, 0], r * direction])

    three_body = model.terms[1]
    assert three_body.rows(trimer(cutoff - h)).n_rows > three_body.rows(trimer(cutoff + h)).n_rows
    inside, outside = (model.predict(trimer(cutoff + s), std=False)["energy"] for s in (-h, h))
    slope = -model.predict(trimer(cutoff), std=False)["forces"][2] @ direction
    assert abs(slope) > 1e-2
    assert abs(outside - inside - 2 * h * slope) < 1e-6


def test_mixed_model_round_trip_and_stds(mixed_model, tmp_path):
    model, probe = mixed_model
    path = tmp_path / "model.gapx"
    model.save(path)
    loaded = gapx.load(path)
    assert loaded.terms[1] == model.terms[1]
    before, after = model.predict(probe), loaded.predict(probe)
    for key in ("energy", "forces", "stress", "energy_std", "forces_std", "stress_std"):
        np.testing.assert_array_equal(after[key], before[key])
    assert np.all(before["forces_std"] > 0)


# ------------------------------------------------------------------------------------------
# gap_fit's angle_3b models
# ------------------------------------------------------------------------------------------


def _gap_fit(tmp_path, frames, descriptor: str):
    """Fit an angle_3b model with gap_fit (quippy-ase's binary); returns the XML path."""
    import subprocess
    from pathlib import Path

    from ase.io import write

    quippy = pytest.importorskip("quippy")
    binary = Path(quippy.__file__).parent / "gap_fit"
    if not binary.exists():
        pytest.skip("quippy-ase has no gap_fit binary")
    write(tmp_path / "train.xyz", frames, format="extxyz")
    xml = tmp_path / "gap.xml"
    subprocess.run(
        [
            str(binary),
            f"at_file={tmp_path / 'train.xyz'}",
            f"gap={{{descriptor}}}",
            "default_sigma={0.005 0.1 0.1 0.0}",
            "e0={Cu:-0.3:Al:0.2}",
            f"gp_file={xml}",
            "energy_parameter_name=energy",
            "force_parameter_name=forces",
            "sparse_jitter=1e-8",
            "rnd_seed=1",
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
        timeout=120,
    )
    return xml


def test_gap_fit_angle_3b_model_is_reproduced(tmp_path):
    potential = pytest.importorskip("quippy.potential")
    rng = np.random.default_rng(11)
    frames = random_cu_al_cells(rng, 6)
    xml = _gap_fit(
        tmp_path,
        frames,
        "angle_3b cutoff=3.2 cutoff_transition_width=0.7 n_sparse=10 covariance_type=ard_se "
        "delta=0.4 theta_uniform=1.3 sparse_method=random add_species=T",
    )
    model = gapx.from_quip(xml)
    # one block per (centre, neighbour pair) of Cu and Al, all kinds of one term
    (term,) = model.terms
    assert isinstance(term, gapx.ThreeBody)
    assert term.theta == (1.3, 1.3, 1.3)
    kinds = [triplet_kind(c, a, b) for c in (13, 29) for a, b in ((13, 13), (13, 29), (29, 29))]
    assert sorted(s.kind for s in model.sparse_sets) == kinds
    calculator = potential.Potential(param_filename=str(xml))
    tests = random_cu_al_cells(np.random.default_rng(12), 4)
    cluster = random_structure(
        rng, ["Cu", "Al"], 6, cell=np.eye(3) * 3.5, pbc=False, min_distance=2
    )
    assert term.rows(cluster).n_rows > 0
    for atoms in [*tests, cluster]:
        quip = atoms.copy()
        quip.calc = calculator
        ours = model.predict(atoms, std=False)
        assert np.max(np.abs(ours["forces"])) > 1e-2
        assert abs(ours["energy"] - quip.get_potential_energy()) < 1e-6
        np.testing.assert_allclose(ours["forces"], quip.get_forces(), rtol=0, atol=1e-6)
        if atoms.pbc.all():
            virial = -ours["stress"] * atoms.get_volume()
            np.testing.assert_allclose(
                virial, -quip.get_stress() * atoms.get_volume(), rtol=0, atol=1e-5
            )
