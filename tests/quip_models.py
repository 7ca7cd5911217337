"""Reference QUIP models for tests: tiny gap_fit fits on EMT-labelled Cu and CuAu, and the
structures their predictions are compared on (periodic triclinic cells and clusters)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write
from structures import emt_labelled


def gap_fit_binary() -> str:
    """The gap_fit of the quippy-ase wheel (beside this Python), skipping when absent."""
    pytest.importorskip("quippy")
    found = os.path.join(os.path.dirname(sys.executable), "gap_fit")
    found = found if os.path.isfile(found) else shutil.which("gap_fit")
    if not found:
        pytest.skip("gap_fit (quippy-ase) is not installed")
    return found


def sheared_cell(rng, symbols, repeat=(2, 1, 1), rattle=0.12) -> np.ndarray:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * repeat
    shear = np.eye(3) + rng.uniform(-0.08, 0.08, (3, 3))
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.positions += rattle * rng.standard_normal(atoms.positions.shape)
    atoms.symbols = [symbols[k % len(symbols)] for k in range(len(atoms))]
    return atoms


def cluster(rng, symbols, n_atoms=9):
    """A compact non-periodic cluster cut from rattled fcc."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    centre = atoms.positions.mean(axis=0)
    order = np.argsort(np.linalg.norm(atoms.positions - centre, axis=1))[:n_atoms]
    atoms = atoms[order]
    atoms.positions += 0.1 * rng.standard_normal(atoms.positions.shape)
    atoms.symbols = [symbols[k % len(symbols)] for k in range(len(atoms))]
    atoms.pbc = False
    atoms.cell = np.eye(3) * 20.0
    atoms.center()
    return atoms


def training_frames(symbols, n_frames=6, seed=0):
    rng = np.random.default_rng(seed)
    return [emt_labelled(sheared_cell(rng, symbols)) for _ in range(n_frames)]


def comparison_structures(symbols, seed=1):
    """Three periodic triclinic cells and two clusters."""
    rng = np.random.default_rng(seed)
    cells = [
        sheared_cell(rng, symbols, repeat, 0.15) for repeat in [(2, 1, 1), (1, 2, 2), (2, 2, 1)]
    ]
    return cells + [cluster(rng, symbols, 9), cluster(rng, symbols, 13)]


def fit_quip_model(folder, gap_string: str, symbols, extra: str = "") -> str:
    """Run gap_fit on EMT-labelled frames of ``symbols`` in ``folder``; returns the XML path."""
    frames = training_frames(symbols)
    for atoms in frames:
        atoms.info["energy"] = atoms.get_potential_energy()
        atoms.arrays["forces"] = atoms.get_forces()
        atoms.calc = None
    write(os.path.join(folder, "train.xyz"), frames)
    command = [
        gap_fit_binary(),
        "at_file=train.xyz",
        f"gap={{{gap_string}}}",
        "default_sigma={0.001 0.03 0.0 0.0}",
        "e0_method=average",
        "energy_parameter_name=energy",
        "force_parameter_name=forces",
        "gp_file=gap.xml",
        *extra.split(),
    ]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"gap_fit failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return os.path.join(folder, "gap.xml")


def quippy_results(xml: str, structures):
    """Energy, forces and virial (-stress V; None for clusters) of quippy's Potential."""
    from quippy.potential import Potential

    potential = Potential(param_filename=xml)
    out = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = potential
        virial = -atoms.get_stress(voigt=False) * atoms.get_volume() if atoms.pbc.all() else None
        out.append((atoms.get_potential_energy(), atoms.get_forces(), virial))
    return out


def assert_matches_quippy(model, xml: str, structures) -> None:
    """gapx's energies, forces and virials equal quippy's to 1e-6 eV, 1e-6 eV/Å, 1e-5 eV."""
    for atoms, (energy, forces, virial) in zip(
        structures, quippy_results(xml, structures), strict=True
    ):
        ours = model.predict(atoms, std=False)
        assert abs(ours["energy"] - energy) < 1e-6
        np.testing.assert_allclose(ours["forces"], forces, rtol=0, atol=1e-6)
        if virial is not None:
            from ase.stress import voigt_6_to_full_3x3_stress

            our_virial = -voigt_6_to_full_3x3_stress(ours["stress"]) * atoms.get_volume()
            np.testing.assert_allclose(our_virial, virial, rtol=0, atol=1e-5)
