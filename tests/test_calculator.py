"""GAPCalculator: exact forces and stress, energy-conserving MD, optimisers, caching, purity."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from structures import strained_fcc_cells
from threadpoolctl import threadpool_limits

import gapx
from gapx.calculator import GAPCalculator
from gapx.md import thermalize

# Finite-difference agreement asked for by the issue: 1e-5 relative to the largest component.
FD_RTOL = 1e-5
FD_ATOL = 1e-8
# Central differences: truncation error ~ FD_STEP^2 (1e-8 relative here); much smaller steps
# expose the model's ~1e-9 eV energy round-off instead.
FD_STEP = 1e-4
# NVE drift bound of the issue: total energy change per atom over 1 ps at 1 fs.
NVE_DRIFT = 1e-4


def make_model():
    return gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.0, delta=0.5, theta=1.0, n_sparse=10),
            gapx.SOAP(
                species=["Cu"],
                cutoff=4.0,
                n_max=4,
                l_max=3,
                atom_sigma=0.5,
                zeta=2,
                delta=0.2,
                n_sparse=30,
                sparse_method="cur",
            ),
        ],
        sigma_energy=0.001,
        sigma_force=0.03,
        sigma_virial=0.05,
        e0="average",
        seed=0,
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """16-atom cells evaluate fastest on one thread, and are not slowed by a busy machine."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def cu_model(one_thread):
    model = make_model()
    model.fit(strained_fcc_cells(np.random.default_rng(0), 12))
    return model


@pytest.fixture
def cu_cell():
    """A fresh rattled, sheared (triclinic) Cu cell the model has not seen."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 1)
    cell = atoms.cell.array.copy()
    cell[1] += 0.2 * cell[0] / np.linalg.norm(cell[0])
    cell[2] += 0.15 * cell[1] / np.linalg.norm(cell[1])
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.08, seed=3)
    return atoms


def test_properties_are_complete_and_consistent(cu_model, cu_cell):
    cu_cell.calc = GAPCalculator(cu_model, std=True)
    energy = cu_cell.get_potential_energy()
    results = cu_cell.calc.results
    assert isinstance(results["energy"], float)
    assert results["free_energy"] == energy
    assert results["energies"].shape == (len(cu_cell),)
    assert results["forces"].shape == (len(cu_cell), 3)
    assert results["stress"].shape == (6,)
    assert np.isclose(results["energies"].sum(), energy, rtol=1e-12, atol=1e-10)
    assert np.isfinite(results["energy_std"])
    assert results["energy_std"] > 0
    assert results["energies_std"].shape == (len(cu_cell),)
    assert np.all(results["energies_std"] > 0)
    assert results["forces_std"].shape == (len(cu_cell), 3)
    assert np.all(results["forces_std"] > 0)
    assert results["stress_std"].shape == (6,)
    # The model was fitted to EMT: the energy must be close to EMT's, not just finite.
    reference = cu_cell.copy()
    reference.calc = EMT()
    assert abs(energy - reference.get_potential_energy()) / len(cu_cell) < 0.05


def test_forces_match_finite_differences(cu_model, cu_cell):
    cu_cell.calc = GAPCalculator(cu_model)
    forces = cu_cell.get_forces()
    numerical = calculate_numerical_forces(cu_cell, eps=FD_STEP)
    scale = np.max(np.abs(numerical))
    assert np.max(np.abs(forces)) > 1e-2, "forces are trivially small"
    assert np.max(np.abs(forces - numerical)) <= FD_RTOL * scale + FD_ATOL


def test_stress_matches_finite_differences(cu_model, cu_cell):
    cu_cell.calc = GAPCalculator(cu_model)
    stress = cu_cell.get_stress()
    numerical = calculate_numerical_stress(cu_cell, eps=FD_STEP)
    scale = np.max(np.abs(numerical))
    assert np.max(np.abs(stress)) > 1e-4, "stress is trivially small"
    assert np.max(np.abs(stress - numerical)) <= FD_RTOL * scale + FD_ATOL


def test_no_stress_without_a_full_cell(cu_model):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)  # as a 4-atom cluster
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    atoms.calc = GAPCalculator(cu_model)
    assert np.isfinite(atoms.get_potential_energy())
    assert "stress" not in atoms.calc.results
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_user_atoms_are_not_modified(cu_model, cu_cell):
    cu_cell.info["tag"] = "mine"
    before = {
        "positions": cu_cell.positions.copy(),
        "cell": cu_cell.cell.array.copy(),
        "numbers": cu_cell.numbers.copy(),
        "arrays": sorted(cu_cell.arrays),
        "info": dict(cu_cell.info),
    }
    cu_cell.calc = GAPCalculator(cu_model)
    cu_cell.get_forces()
    cu_cell.get_stress()
    cu_cell.get_potential_energies()
    assert np.array_equal(cu_cell.positions, before["positions"])
    assert np.array_equal(cu_cell.cell.array, before["cell"])
    assert np.array_equal(cu_cell.numbers, before["numbers"])
    assert sorted(cu_cell.arrays) == before["arrays"]
    assert cu_cell.info == before["info"]
    # Results handed out are copies: changing one does not change the calculator's.
    forces = cu_cell.get_forces()
    forces[:] = 0.0
    assert np.max(np.abs(cu_cell.get_forces())) > 1e-2


class CountingModel:
    """Wraps a model and counts predict calls."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def predict(self, atoms, std=True):
        self.calls += 1
        return self.model.predict(atoms, std=std)


def test_recomputes_only_when_the_system_changes(cu_model, cu_cell):
    counting = CountingModel(cu_model)
    cu_cell.calc = GAPCalculator(counting)
    energy = cu_cell.get_potential_energy()
    cu_cell.get_forces()
    cu_cell.get_stress()
    cu_cell.get_potential_energies()
    cu_cell.get_potential_energy()
    assert counting.calls == 1
    cu_cell.info["unrelated"] = 1  # info is not part of the state
    cu_cell.get_forces()
    assert counting.calls == 1
    cu_cell.positions[0, 0] += 0.05
    moved = cu_cell.get_potential_energy()
    assert counting.calls == 2
    assert moved != energy
    cu_cell.set_cell(cu_cell.cell.array * 1.01, scale_atoms=True)
    cu_cell.get_stress()
    assert counting.calls == 3


def test_bfgs_reduces_forces(cu_model, cu_cell):
    cu_cell.calc = GAPCalculator(cu_model)
    fmax0 = np.max(np.linalg.norm(cu_cell.get_forces(), axis=1))
    energy0 = cu_cell.get_potential_energy()
    BFGS(cu_cell, logfile=None).run(fmax=0.02, steps=200)
    fmax = np.max(np.linalg.norm(cu_cell.get_forces(), axis=1))
    assert fmax0 > 0.1
    assert fmax < 0.02
    assert cu_cell.get_potential_energy() < energy0


def test_cell_relaxation_with_a_filter(cu_model):
    """BFGS on FrechetCellFilter uses the stress: an expanded cell shrinks back, stress vanishes."""
    from ase.filters import FrechetCellFilter

    atoms = bulk("Cu", "fcc", a=3.61 * 1.03, cubic=True) * (2, 2, 1)
    atoms.rattle(0.02, seed=2)
    atoms.calc = GAPCalculator(cu_model)
    stress0 = np.max(np.abs(atoms.get_stress()))
    volume0 = atoms.get_volume()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.005, steps=300)
    assert stress0 > 0.01  # eV/Å^3: an expanded cell is under tension
    assert np.max(np.abs(atoms.get_stress())) < 0.05 * stress0
    assert atoms.get_volume() < volume0
    # The relaxed volume is EMT's (the reference the model was fitted to), within 2 %.
    reference = atoms.copy()
    reference.calc = EMT()
    BFGS(FrechetCellFilter(reference), logfile=None).run(fmax=0.005, steps=300)
    assert abs(atoms.get_volume() / reference.get_volume() - 1) < 0.02


def test_nve_conserves_energy(cu_model):
    """Velocity Verlet, 1 fs, 1 ps, 16-atom periodic Cu: total energy drift < 1e-4 eV/atom."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 1)
    atoms.rattle(0.03, seed=5)
    atoms.calc = GAPCalculator(cu_model)
    thermalize(atoms, 300, np.random.default_rng(5))
    Stationary(atoms)
    start = atoms.positions.copy()
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    totals, temperatures = [], []

    def record():
        totals.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        temperatures.append(atoms.get_temperature())

    dyn.attach(record, interval=10)
    dyn.run(1000)
    totals = np.asarray(totals)
    drift = abs(totals[-1] - totals[0]) / len(atoms)
    fluctuation = np.max(np.abs(totals - totals[0])) / len(atoms)
    # The dynamics must be real: atoms moved and exchanged kinetic and potential energy.
    assert np.mean(temperatures) > 50
    assert np.max(np.linalg.norm(atoms.positions - start, axis=1)) > 0.05
    assert drift < NVE_DRIFT, f"drift {drift:.2e} eV/atom"
    assert fluctuation < 10 * NVE_DRIFT, f"fluctuation {fluctuation:.2e} eV/atom"


def test_loads_a_model_file(cu_model, cu_cell, tmp_path):
    path = tmp_path / "cu.gapx"
    cu_model.save(str(path))
    calc = GAPCalculator(str(path))
    assert calc.parameters["model_path"] == str(path.resolve())
    assert calc.parameters["version"] == gapx.__version__
    assert set(calc.todict()) == {"model_path", "version"}
    cu_cell.calc = calc
    from_file = cu_cell.get_forces()
    expected = cu_model.predict(cu_cell)
    assert np.allclose(from_file, expected["forces"], rtol=1e-10, atol=1e-12)
    assert np.isclose(cu_cell.get_potential_energy(), expected["energy"], rtol=1e-12)
    assert GAPCalculator(path).parameters["model_path"] == str(path.resolve())


def test_no_std_by_default(cu_model, cu_cell):
    cu_cell.calc = GAPCalculator(cu_model)
    forces = cu_cell.get_forces()
    for key in ("energy_std", "energies_std", "forces_std", "stress_std"):
        assert key not in cu_cell.calc.results
    reference = cu_cell.copy()
    reference.calc = GAPCalculator(cu_model, std=True)
    assert np.allclose(forces, reference.get_forces(), rtol=1e-12, atol=1e-12)
    assert reference.calc.results["energy_std"] > 0


def test_std_every_k_th_evaluation(cu_model, cu_cell):
    calc = GAPCalculator(cu_model, std_every=3)
    cu_cell.calc = calc
    with_std = []
    for _ in range(7):
        cu_cell.positions[0, 0] += 0.01  # a new structure: the calculator evaluates again
        cu_cell.get_forces()
        with_std.append("forces_std" in calc.results)
    assert with_std == [True, False, False, True, False, False, True]
    expected = cu_model.predict(cu_cell, std=True)
    np.testing.assert_array_equal(calc.results["forces_std"], expected["forces_std"])
    with pytest.raises(ValueError, match="std_every must be at least 1"):
        GAPCalculator(cu_model, std_every=0)
    with pytest.raises(ValueError, match="std must be one of"):
        GAPCalculator(cu_model, std="forces")


def test_energy_only_std(cu_model, cu_cell):
    """std="energy": the energies' stds, equal to those of the full computation, no forces_std."""
    cu_cell.calc = GAPCalculator(cu_model, std="energy")
    cu_cell.get_potential_energy()
    full = cu_model.predict(cu_cell, std=True)
    for key in ("energy_std", "energies_std"):
        np.testing.assert_allclose(cu_cell.calc.results[key], full[key], rtol=1e-12)
    assert "forces_std" not in cu_cell.calc.results
    assert "stress_std" not in cu_cell.calc.results


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.gapx"):
        GAPCalculator(str(tmp_path / "missing.gapx"))
    with pytest.raises(TypeError, match="GAPCalculator"):
        GAPCalculator(42)
