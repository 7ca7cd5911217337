"""GAP model: fitting accuracy, exact forces and stress, determinism, labels, e0, sigmas."""

from __future__ import annotations

import os

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from finite_differences import (
    assert_gradients_close,
    numerical_position_gradient,
    numerical_strain_gradient,
)
from structures import (
    emt_labelled,
    random_cu_al_cells,
    random_structure,
    random_triclinic_cell,
)

import gapx

DATA = os.path.join(os.path.dirname(__file__), "data")
FD_DELTA = 1e-5
FD_RTOL = 1e-6


def _emt_cu_frames(n, seed):
    """32-atom Cu cells under random (non-symmetric) deformations, rattled, EMT-labelled."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        frames.append(emt_labelled(atoms))
    return frames


def _small_soap(**kwargs):
    settings = dict(
        species=["Al", "Cu"], cutoff=3.5, n_max=3, l_max=2, atom_sigma=0.5, n_sparse=15, zeta=2
    )
    settings.update(kwargs)
    return gapx.SOAP(**settings)


@pytest.fixture(scope="module")
def mixed_model():
    rng = np.random.default_rng(7)
    model = gapx.GAP(
        [gapx.TwoBody(cutoff=4.0, theta=0.5, n_sparse=10, delta=0.3), _small_soap()],
        sigma_energy=0.002,
        sigma_force=0.05,
        sigma_virial=0.05,
        verbose=False,
    )
    model.fit(random_cu_al_cells(rng, 6))
    return model


def test_emt_fit_reaches_low_force_error():
    train, test = (
        _emt_cu_frames(12, 1),
        _emt_cu_frames(4, 2),
    )
    model = gapx.GAP(
        [gapx.TwoBody(cutoff=4.5, theta=0.5, delta=0.5, n_sparse=20)],
        sigma_energy=0.001,
        sigma_force=0.01,
        verbose=False,
    )
    summary = model.fit(train)
    assert summary["n_energies"] == 12
    assert summary["n_force_components"] == 12 * 32 * 3
    assert summary["n_virial_components"] == 12 * 6
    assert summary["n_sparse"] == {"two_body[Cu-Cu]": 20}
    reference = np.concatenate([a.get_forces() for a in test])
    predicted = np.concatenate([model.predict(a)["forces"] for a in test])
    rmse = np.sqrt(np.mean((reference - predicted) ** 2))
    # A two-body fit of many-body EMT: a tenth of the force spread is a meaningful bound.
    assert rmse < 0.1 * reference.std(), (rmse, reference.std())
    energy_error = [abs(model.predict(a)["energy"] - a.get_potential_energy()) for a in test]
    assert max(energy_error) / 32 < 0.01
    stress_error = [np.abs(model.predict(a)["stress"] - a.get_stress()).max() for a in test]
    assert max(stress_error) < 0.1 * np.abs(test[0].get_stress()).max() + 2e-3


def test_forces_and_stress_are_exact_derivatives(mixed_model, rng):
    for _ in range(2):
        atoms = random_structure(
            rng, ["Cu", "Al"], 4, cell=random_triclinic_cell(rng, 4.5), min_distance=1.8
        )

        def energy(a):
            return mixed_model.predict(a, std=False)["energy"]

        out = mixed_model.predict(atoms, std=False)
        numeric = numerical_position_gradient(energy, atoms, FD_DELTA)
        assert_gradients_close(-out["forces"], numeric, rtol=FD_RTOL)
        de_deps = numerical_strain_gradient(energy, atoms, FD_DELTA)
        voigt = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
        numeric_stress = np.array([0.5 * (de_deps[a, b] + de_deps[b, a]) for a, b in voigt])
        assert_gradients_close(out["stress"], numeric_stress / atoms.get_volume(), rtol=FD_RTOL)
        np.testing.assert_allclose(out["energies"].sum(), out["energy"], rtol=1e-12)


def test_invariance_to_rotation_and_permutation(mixed_model, rng):
    from scipy.spatial.transform import Rotation

    atoms = random_structure(
        rng, ["Cu", "Al"], 4, cell=random_triclinic_cell(rng, 4.5), min_distance=1.8
    )
    out = mixed_model.predict(atoms)
    rotation = Rotation.random(random_state=3).as_matrix()
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    rotated.positions = atoms.positions @ rotation.T
    out_r = mixed_model.predict(rotated)
    np.testing.assert_allclose(out_r["energy"], out["energy"], rtol=1e-10)
    np.testing.assert_allclose(out_r["forces"], out["forces"] @ rotation.T, atol=1e-9)
    np.testing.assert_allclose(out_r["energy_std"], out["energy_std"], rtol=1e-6)
    order = [2, 0, 3, 1]
    out_p = mixed_model.predict(atoms[order])
    np.testing.assert_allclose(out_p["energies"], out["energies"][order], atol=1e-10)
    assert out["energy_std"] > 0
    assert np.all(out["energies_std"] > 0)


def test_fit_is_deterministic(rng):
    frames = random_cu_al_cells(rng, 4)

    def fit():
        model = gapx.GAP(
            [gapx.TwoBody(cutoff=4.0, n_sparse=8, sparse_method="cur"), _small_soap(n_sparse=6)],
            seed=5,
            verbose=False,
        )
        model.fit(frames)
        return model

    a, b = fit(), fit()
    np.testing.assert_array_equal(a.alpha, b.alpha)
    for s, t in zip(a.sparse_sets, b.sparse_sets, strict=True):
        np.testing.assert_array_equal(s.points, t.points)
    pa, pb = a.predict(frames[0]), b.predict(frames[0])
    for key in ("energy", "forces", "stress", "energies_std"):
        np.testing.assert_array_equal(pa[key], pb[key])


def test_multispecies_molecules_keep_sparse_points_per_species():
    frames = ase.io.read(os.path.join(DATA, "ethanol_train_50.extxyz"), ":")
    test = ase.io.read(os.path.join(DATA, "ethanol_test_20.extxyz"), ":")
    soap = gapx.SOAP(species=["C", "H", "O"], cutoff=4.0, n_max=4, l_max=3, n_sparse=40, zeta=4)
    model = gapx.GAP([soap], sigma_energy=0.001, sigma_force=0.03, verbose=False)
    summary = model.fit(frames)
    assert summary["n_sparse"] == {"soap[H]": 40, "soap[C]": 40, "soap[O]": 40}
    assert model.e0["C"] == model.e0["H"] == model.e0["O"]
    reference = np.concatenate([a.get_forces() for a in test])
    predicted = np.concatenate([model.predict(a, std=False)["forces"] for a in test])
    mae = np.abs(reference - predicted).mean()
    # 50 training molecules: far from converged, but well below the spread of the forces.
    assert mae < 0.4 * np.abs(reference).mean(), mae


def _with_labels(atoms, **results):
    atoms = atoms.copy()
    info = {k: v for k, v in results.items() if k in ("energy", "virial", "stress")}
    atoms.info.update(info)
    if "forces" in results:
        atoms.arrays["forces"] = np.asarray(results["forces"])
    return atoms


def test_stress_and_virial_labels_are_equivalent(rng):
    frames = random_cu_al_cells(rng, 3)
    as_virial = []
    for a in frames:
        virial = -a.get_volume() * np.array(
            [[a.get_stress()[i] for i in row] for row in ([0, 5, 4], [5, 1, 3], [4, 3, 2])]
        )
        as_virial.append(
            _with_labels(a, energy=a.get_potential_energy(), forces=a.get_forces(), virial=virial)
        )
    terms = [gapx.TwoBody(cutoff=4.0, n_sparse=6)]
    m1 = gapx.GAP(terms, verbose=False)
    m1.fit(frames)
    m2 = gapx.GAP(terms, verbose=False)
    m2.fit(as_virial)
    assert m1.summary["n_virial_components"] == 18
    probe = random_cu_al_cells(rng, 1)[0]
    np.testing.assert_allclose(m1.predict(probe)["forces"], m2.predict(probe)["forces"], atol=1e-9)


def test_sigma_overrides(rng):
    frames = random_cu_al_cells(rng, 4)
    term = gapx.TwoBody(cutoff=4.0, n_sparse=6)
    # A huge per-frame energy sigma is the same as dropping that energy label.
    noisy = [a.copy() for a in frames]
    for a, b in zip(noisy, frames, strict=True):
        a.calc = b.calc
    noisy[0].info["energy_sigma"] = 1e9
    dropped = [a.copy() for a in frames]
    for a, b in zip(dropped, frames, strict=True):
        a.calc = b.calc
    dropped[0].calc = SinglePointCalculator(
        dropped[0], forces=frames[0].get_forces(), stress=frames[0].get_stress()
    )
    e0 = {"Cu": -0.1, "Al": 0.2}
    models = []
    for data in (frames, noisy, dropped):
        model = gapx.GAP([term], e0=e0, verbose=False)
        model.fit(data)
        models.append(model)
    probe = random_cu_al_cells(rng, 1)[0]
    energies = [m.predict(probe)["energies"] for m in models]
    np.testing.assert_allclose(energies[1], energies[2], rtol=0, atol=1e-7)
    assert np.max(np.abs(energies[0] - energies[1])) > 1e-5
    # config_type_sigma applies to frames of that type only.
    typed = [a.copy() for a in frames]
    for a, b in zip(typed, frames, strict=True):
        a.calc = b.calc
    typed[0].info["config_type"] = "hot"
    model = gapx.GAP([term], e0=e0, config_type_sigma={"hot": (1e9, 1e9, 1e9)}, verbose=False)
    model.fit(typed)
    per_frame = [a.copy() for a in frames]
    for a, b in zip(per_frame, frames, strict=True):
        a.calc = b.calc
    per_frame[0].info.update(energy_sigma=1e9, force_sigma=1e9, virial_sigma=1e9)
    reference = gapx.GAP([term], e0=e0, verbose=False)
    reference.fit(per_frame)
    typed_energies = model.predict(probe)["energies"]
    np.testing.assert_allclose(typed_energies, reference.predict(probe)["energies"], atol=1e-9)
    assert np.max(np.abs(typed_energies - energies[0])) > 1e-5


def test_e0_options(rng):
    frames = random_cu_al_cells(rng, 3)
    isolated = []
    for symbol, energy in (("Cu", -1.5), ("Al", -0.5)):
        atom = gapx_atoms(symbol)
        atom.info["config_type"] = "isolated_atom"
        atom.calc = SinglePointCalculator(atom, energy=energy)
        isolated.append(atom)
    model = gapx.GAP([gapx.TwoBody(cutoff=4.0, n_sparse=5)], e0="isolated_atom", verbose=False)
    summary = model.fit(frames + isolated)
    assert model.e0 == {"Al": -0.5, "Cu": -1.5}
    assert summary["n_frames"] == 3
    # An isolated atom has no pairs: its prediction is its e0.
    assert model.predict(gapx_atoms("Cu"))["energy"] == -1.5

    average = gapx.GAP([gapx.TwoBody(cutoff=4.0, n_sparse=5)], verbose=False)
    average.fit(frames)
    expected = np.mean([a.get_potential_energy() / len(a) for a in frames])
    assert average.e0 == pytest.approx({"Al": expected, "Cu": expected})
    with pytest.raises(ValueError, match="no isolated_atom frame"):
        gapx.GAP([gapx.TwoBody()], e0="isolated_atom", verbose=False).fit(frames)
    with pytest.raises(ValueError, match="e0 has no entry"):
        gapx.GAP([gapx.TwoBody()], e0={"Cu": 0.0}, verbose=False).fit(frames)


def gapx_atoms(symbol):
    from ase import Atoms

    return Atoms(symbol, positions=[[0.0, 0.0, 0.0]])


def test_baseline_is_added_back(rng):
    frames = []
    for _ in range(4):
        atoms = random_structure(
            rng, ["Na", "Cl"], 4, cell=random_triclinic_cell(rng, 5.0), min_distance=2.0
        )
        atoms.info["energy"] = float(rng.normal())
        atoms.arrays["forces"] = rng.normal(size=(4, 3))
        frames.append(atoms)
    ewald = gapx.Ewald(charges={"Na": 0.5, "Cl": -0.5})
    model = gapx.GAP([gapx.TwoBody(cutoff=3.5, n_sparse=6)], baseline=ewald, verbose=False)
    model.fit(frames)
    out = model.predict(frames[0])
    long_range = ewald.calculate(frames[0])
    assert out["energy_longrange"] == pytest.approx(long_range["energy"])
    assert out["energy"] == pytest.approx(out["energy_shortrange"] + long_range["energy"])
    np.testing.assert_allclose(out["charges"], [0.5, -0.5, 0.5, -0.5])
    plain = gapx.GAP([gapx.TwoBody(cutoff=3.5, n_sparse=6)], verbose=False)
    plain.fit(frames)
    assert abs(plain.predict(frames[0])["energy"] - out["energy"]) > 1e-6


def test_bad_labels_name_the_frame(rng):
    good = random_cu_al_cells(rng, 2)
    term = [gapx.TwoBody(cutoff=4.0, n_sparse=5)]
    bad_forces = _with_labels(good[1], energy=1.0, forces=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"frame 1: forces has shape \(2, 3\)"):
        gapx.GAP(term, verbose=False).fit([good[0], bad_forces])
    nan_energy = _with_labels(good[1], energy=float("nan"))
    with pytest.raises(ValueError, match="frame 1: energy is NaN"):
        gapx.GAP(term, verbose=False).fit([good[0], nan_energy])
    molecule = _with_labels(good[1], energy=1.0, stress=np.zeros(6))
    molecule.pbc = False
    with pytest.raises(ValueError, match="frame 1: stress label on a frame without a periodic"):
        gapx.GAP(term, verbose=False).fit([good[0], molecule])
    unlabelled = good[1].copy()
    with pytest.raises(ValueError, match="frame 1: no labels"):
        gapx.GAP(term, verbose=False).fit([good[0], unlabelled])
    overlapping = _with_labels(good[1], energy=1.0)
    overlapping.positions[1] = overlapping.positions[0] + [0.0, 0.0, 0.05]
    with pytest.raises(ValueError, match=r"frame 1: atoms 0 and 1 overlap: 0.05 Å apart"):
        gapx.GAP(term, verbose=False).fit([good[0], overlapping])
    with pytest.raises(ValueError, match="at least one frame"):
        gapx.GAP(term, verbose=False).fit([])


def test_predict_errors(mixed_model):
    from ase import Atoms

    with pytest.raises(ValueError, match=r"species \['Si'\] are not in the model"):
        mixed_model.predict(Atoms("CuSi", positions=[[0, 0, 0], [2, 0, 0]]))
    with pytest.raises(ValueError, match="not fitted"):
        gapx.GAP([gapx.TwoBody()], verbose=False).predict(Atoms("Cu"))
    with pytest.raises(ValueError, match=r"atoms 0 and 1 overlap: 0.05 Å apart \(below 0.1 Å\)"):
        mixed_model.predict(Atoms("CuAl", positions=[[0, 0, 0], [0, 0.05, 0]]))
    # A periodic image counts too: one atom in a 0.08 Å-periodic direction overlaps itself.
    with pytest.raises(ValueError, match="atoms 0 and 0 overlap"):
        mixed_model.predict(Atoms("Cu", cell=[0.08, 5, 5], pbc=True))


def test_bad_settings():
    with pytest.raises(ValueError, match="sigma_force"):
        gapx.GAP([gapx.TwoBody()], sigma_force=0.0)
    with pytest.raises(ValueError, match="e0"):
        gapx.GAP([gapx.TwoBody()], e0="median")
    with pytest.raises(ValueError, match="config_type_sigma"):
        gapx.GAP([gapx.TwoBody()], config_type_sigma={"a": (1.0, 2.0)})
    with pytest.raises(TypeError, match="GAP term"):
        gapx.GAP([object()])
    with pytest.raises(ValueError, match="at least one term"):
        gapx.GAP([])


def test_block_streaming_does_not_change_the_fit(rng):
    frames = random_cu_al_cells(rng, 5)
    probe = random_cu_al_cells(rng, 1)[0]
    predictions = []
    for block_memory in (1.0, 1e9):  # one frame per block / everything in one block
        model = gapx.GAP(
            [gapx.TwoBody(cutoff=4.0, n_sparse=6, sparse_method="fps"), _small_soap(n_sparse=5)],
            block_memory=block_memory,
            verbose=False,
        )
        model.fit(frames)
        predictions.append(model.predict(probe))
    for key in ("energy", "forces", "stress", "energies_std"):
        np.testing.assert_allclose(predictions[0][key], predictions[1][key], rtol=1e-8, atol=1e-10)


def test_forces_only_frames(rng):
    frames = random_cu_al_cells(rng, 3)
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, forces=atoms.get_forces())
    model = gapx.GAP([gapx.TwoBody(cutoff=4.0, n_sparse=6, sparse_method="random")], verbose=False)
    summary = model.fit(frames)
    assert summary["n_energies"] == 0
    assert summary["n_virial_components"] == 0
    assert model.e0 == {"Al": 0.0, "Cu": 0.0}
    reference = np.concatenate([a.get_forces() for a in frames])
    fitted = np.concatenate([model.predict(a)["forces"] for a in frames])
    # Training forces are reproduced better than their spread.
    assert np.abs(fitted - reference).mean() < 0.5 * np.abs(reference).mean()


def test_uncertainty_grows_away_from_the_data():
    train = _emt_cu_frames(6, 3)
    model = gapx.GAP([gapx.TwoBody(cutoff=4.5, theta=0.3, n_sparse=15)], verbose=False)
    model.fit(train)
    seen = model.predict(train[0])
    compressed = train[0].copy()
    compressed.set_cell(compressed.cell.array * 0.8, scale_atoms=True)  # distances never seen
    unseen = model.predict(compressed)
    assert unseen["energy_std"] > 10 * seen["energy_std"]
    assert np.all(unseen["energies_std"] > seen["energies_std"].max())
