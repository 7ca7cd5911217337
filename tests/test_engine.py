"""The C++ prediction engine (gapx.engine, gapx._core.Model): equal to the NumPy path to 1e-10,
read from the same .gapx files, validated as gapx.load validates."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress
from structures import (
    random_cu_al_cells,
    random_structure,
    random_triclinic_cell,
    strained_fcc_cells,
)

import gapx
from gapx import _core, engine, io

DATA = os.path.join(os.path.dirname(__file__), "data")
#: Engine vs NumPy path: the same sums in a different order.
ENGINE_TOL = 1e-10


def _soap(**kwargs):
    settings = dict(
        species=["Al", "Cu"], cutoff=3.5, n_max=3, l_max=2, atom_sigma=0.5, n_sparse=12, zeta=2
    )
    settings.update(kwargs)
    return gapx.SOAP(**settings)


def _fit(terms, frames):
    model = gapx.GAP(terms, sigma_energy=0.002, sigma_force=0.05, verbose=False)
    model.fit(frames)
    return model


@pytest.fixture(scope="module")
def frames():
    return random_cu_al_cells(np.random.default_rng(3), 6)


@pytest.fixture(scope="module")
def models(frames):
    """SOAP only (integer and fractional zeta; QUIP's radial basis with the species in
    non-increasing order), TwoBody + SOAP with different cutoffs, ThreeBody alone (per-feature
    theta) and TwoBody + ThreeBody (species filters) + SOAP."""
    return {
        "soap": _fit([_soap()], frames),
        "soap_quip_basis": _fit([_soap(radial_basis="quip", species=["Cu", "Al"])], frames),
        "soap_zeta": _fit([_soap(zeta=2.5, cutoff=3.0)], frames),
        "two_body_soap": _fit(
            [gapx.TwoBody(cutoff=4.0, theta=0.5, n_sparse=8, delta=0.3), _soap()], frames
        ),
        "three_body": _fit(
            [gapx.ThreeBody(cutoff=3.5, theta=[1.0, 1.5, 0.8], n_sparse=10, delta=0.5)], frames
        ),
        "two_three_body_soap": _fit(
            [
                gapx.TwoBody(cutoff=4.0, theta=0.5, n_sparse=8, delta=0.3),
                gapx.ThreeBody(cutoff=3.0, Z="Cu", Z1="Cu", n_sparse=8, delta=0.2, theta=1.2),
                _soap(),
            ],
            frames,
        ),
    }


def _structures():
    rng = np.random.default_rng(11)
    triclinic = random_structure(
        rng, ["Cu", "Al"], 7, cell=random_triclinic_cell(rng, 5.0), min_distance=2.0
    )
    small = random_structure(
        rng, ["Al", "Cu"], 3, cell=random_triclinic_cell(rng, 3.2, 0.2), min_distance=1.9
    )  # cell smaller than twice the cutoff: atoms see their own images
    cluster = random_structure(
        rng, ["Cu", "Al"], 6, cell=np.eye(3) * 5.0, pbc=False, min_distance=2.0
    )
    slab = random_structure(rng, ["Cu"], 5, cell=random_triclinic_cell(rng, 5.0), min_distance=2.0)
    slab.pbc = [True, True, False]
    return {"triclinic": triclinic, "small_cell": small, "cluster": cluster, "slab": slab}


STRUCTURES = _structures()


def _python_mean(model, atoms):
    context = gapx.neighbors.StructureContext(atoms)
    return model._mean_python(atoms, context)


def _assert_engine_equals_numpy_path(model, atoms, energy_tol=ENGINE_TOL):
    out = model.predict(atoms, std=False)
    assert engine.engine_for(model) is not None  # the engine computed it
    energy, energies, dE_dr, dE_deps = _python_mean(model, atoms)
    np.testing.assert_allclose(out["energy"], energy, rtol=0, atol=energy_tol)
    np.testing.assert_allclose(out["energies"], energies, rtol=0, atol=ENGINE_TOL)
    np.testing.assert_allclose(out["forces"], -dE_dr, rtol=0, atol=ENGINE_TOL)
    assert np.abs(dE_dr).max() > 1e-3  # forces are not trivially zero
    if atoms.cell.rank == 3:
        stress = full_3x3_to_voigt_6_stress(dE_deps) / atoms.get_volume()
        np.testing.assert_allclose(out["stress"], stress, rtol=0, atol=ENGINE_TOL)


@pytest.mark.parametrize(
    "name",
    ["soap", "soap_zeta", "soap_quip_basis", "two_body_soap", "three_body", "two_three_body_soap"],
)
@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_engine_equals_numpy_path(models, name, structure):
    _assert_engine_equals_numpy_path(models[name], STRUCTURES[structure])


@pytest.fixture(scope="module")
def copper_model():
    """One species: TwoBody + ThreeBody + SOAP on strained fcc Cu."""
    terms = [
        gapx.TwoBody(cutoff=4.0, theta=0.5, n_sparse=8, delta=0.3),
        gapx.ThreeBody(cutoff=3.2, n_sparse=10, delta=0.2, theta=[1.0, 1.5, 0.8]),
        _soap(species=["Cu"]),
    ]
    return _fit(terms, strained_fcc_cells(np.random.default_rng(2), 3, repeat=(1, 1, 1)))


def _copper_structures():
    rng = np.random.default_rng(12)
    small = random_structure(
        rng, ["Cu"], 3, cell=random_triclinic_cell(rng, 3.2, 0.2), min_distance=1.9
    )
    cluster = random_structure(rng, ["Cu"], 6, cell=np.eye(3) * 5.0, pbc=False, min_distance=2.0)
    return {"small_cell": small, "cluster": cluster, "slab": STRUCTURES["slab"]}


COPPER_STRUCTURES = _copper_structures()


@pytest.mark.parametrize("structure", sorted(COPPER_STRUCTURES))
def test_engine_equals_numpy_path_one_species(copper_model, structure):
    _assert_engine_equals_numpy_path(copper_model, COPPER_STRUCTURES[structure])


def test_engine_reads_the_model_file(models, tmp_path):
    """The C++ reader of a saved file predicts what the model in memory predicts."""
    model = models["two_body_soap"]
    path = tmp_path / "model.gapx"
    model.save(path)
    from_file = _core.Model.read(str(path))
    assert from_file.species == [13, 29]
    assert from_file.cutoffs == [4.0, 3.5]
    atoms = STRUCTURES["triclinic"]
    context = gapx.neighbors.StructureContext(atoms)
    lists = [context.neighbors(t.cutoff) for t in model.terms]
    got = from_file.compute(atoms.numbers.tolist(), lists)
    want = engine.engine_for(model).compute(atoms.numbers.tolist(), lists)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["two_body_soap", "two_three_body_soap"])
def test_engine_cuts_one_list_per_term(models, name):
    """From one list at the largest cutoff (as LAMMPS gives), per-term lists are cut in C++."""
    model = models[name]
    atoms = STRUCTURES["small_cell"]
    context = gapx.neighbors.StructureContext(atoms)
    core = engine.engine_for(model)
    lists = [context.neighbors(t.cutoff) for t in model.terms]
    want = core.compute(atoms.numbers.tolist(), lists)
    got = core.compute_from_list(atoms.numbers.tolist(), context.neighbors(4.5))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=ENGINE_TOL)


@pytest.mark.parametrize("name", ["two_body_soap", "two_three_body_soap"])
def test_per_atom_virial_sums_to_the_virial(models, name):
    model = models[name]
    atoms = STRUCTURES["triclinic"]
    context = gapx.neighbors.StructureContext(atoms)
    lists = [context.neighbors(t.cutoff) for t in model.terms]
    _, _, _, dE_deps, atom_virial = engine.engine_for(model).compute(
        atoms.numbers.tolist(), lists, per_atom_virial=True
    )
    total = atom_virial.sum(axis=0)
    # W = -dE/deps in LAMMPS's order xx, yy, zz, xy, xz, yz (symmetric).
    sym = 0.5 * (dE_deps + dE_deps.T)
    want = -np.array([sym[0, 0], sym[1, 1], sym[2, 2], sym[0, 1], sym[0, 2], sym[1, 2]])
    np.testing.assert_allclose(total, want, rtol=0, atol=ENGINE_TOL)
    assert np.abs(want).max() > 1e-3


@pytest.mark.parametrize("name", ["two_body_soap", "two_three_body_soap"])
def test_engine_is_deterministic_across_threads(models, name):
    model = models[name]
    atoms = STRUCTURES["triclinic"].repeat(2)
    context = gapx.neighbors.StructureContext(atoms)
    lists = [context.neighbors(t.cutoff) for t in model.terms]
    core = engine.engine_for(model)
    one = core.compute(atoms.numbers.tolist(), lists, n_threads=1)
    three = core.compute(atoms.numbers.tolist(), lists, n_threads=3)
    for a, b in zip(one, three, strict=True):
        np.testing.assert_array_equal(a, b)


def _available_kernel_paths():
    """The dot kernel's instruction-set paths this CPU runs ('generic' always)."""
    paths = []
    for isa in ("generic", "avx2", "avx512"):
        try:
            _core._dot_kernel(np.ones((1, 8)), np.ones((1, 8)), np.ones(1), 1.0, isa)
        except ValueError:
            continue
        paths.append(isa)
    return paths


@pytest.mark.parametrize("isa", _available_kernel_paths())
def test_dot_kernel_paths_equal_numpy(isa):
    """Each path of the engine's kernel against NumPy over row counts around its tiles (1-6
    rows, past the 32 rows of a call), point counts around its 4-point tiles and 16-point
    chunks, and feature counts around its vectors, 32-feature segments and 480-feature blocks."""
    rng = np.random.default_rng(5)
    for n_rows in (1, 2, 3, 5, 7, 9, 33):
        for n_points in (1, 3, 4, 5, 16, 17, 37):
            for n_features in (1, 5, 13, 33, 100, 481, 1030):
                x = rng.standard_normal((n_rows, n_features))
                points = rng.standard_normal((n_points, n_features))
                weights = rng.standard_normal(n_points)
                for zeta in (1.0, 2.0, 4.0):
                    dots = x @ points.T
                    energies = (weights * dots**zeta).sum(axis=1)
                    gradients = (weights * zeta * dots ** (zeta - 1)) @ points
                    got_energies, got_gradients = _core._dot_kernel(x, points, weights, zeta, isa)
                    scale = 1.0 + np.abs(energies).max() + np.abs(gradients).max()
                    np.testing.assert_allclose(got_energies, energies, rtol=0, atol=1e-13 * scale)
                    np.testing.assert_allclose(got_gradients, gradients, rtol=0, atol=1e-13 * scale)


def test_dot_kernel_refuses_an_unknown_path():
    with pytest.raises(ValueError, match="no path 'sse9'"):
        _core._dot_kernel(np.ones((1, 8)), np.ones((1, 8)), np.ones(1), 1.0, "sse9")


@pytest.fixture(scope="module")
def large_model():
    """150 sparse points per species (each set's points split into two slices of whole and
    partial 16-point chunks) of 390 features (not a whole number of 32-feature segments)."""
    frames = random_cu_al_cells(np.random.default_rng(8), 90)
    return _fit([_soap(n_sparse=150, sparse_method="random", n_max=6, l_max=4, zeta=4)], frames)


def test_engine_equals_numpy_path_many_rows_and_points(large_model):
    """More than 32 atoms of a species (two blocks of rows) against several slices of points."""
    atoms = STRUCTURES["triclinic"].repeat((2, 2, 3))
    assert min(np.bincount(atoms.numbers)[[13, 29]]) > 32
    assert all(s.size == 150 for s in large_model.sparse_sets)
    # Per-atom energies to ENGINE_TOL, so their sum over 84 atoms to 84 times that.
    _assert_engine_equals_numpy_path(large_model, atoms, energy_tol=ENGINE_TOL * len(atoms))


def test_concurrent_predictions_share_one_engine(large_model):
    """Threads predicting with one model at once (the GIL is released) each get a workspace of
    their own from the model's pool: results equal serial ones bit for bit."""
    from concurrent.futures import ThreadPoolExecutor

    structures = [STRUCTURES[name].repeat(2) for name in sorted(STRUCTURES)] * 3
    serial = [large_model.predict(atoms, std=False)["forces"] for atoms in structures]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda a: large_model.predict(a, std=False)["forces"], structures))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_engine_follows_a_refit(frames):
    model = _fit([_soap()], frames[:3])
    first = model.predict(STRUCTURES["triclinic"], std=False)["energy"]
    model.fit(frames)
    second = model.predict(STRUCTURES["triclinic"], std=False)["energy"]
    energy = _python_mean(model, STRUCTURES["triclinic"])[0]
    assert first != second
    np.testing.assert_allclose(second, energy, rtol=0, atol=ENGINE_TOL)


def test_engine_refuses_unknown_species_and_overlap(models):
    core = engine.engine_for(models["soap"])
    atoms = Atoms("CuAu", positions=[[0, 0, 0], [2.5, 0, 0]])
    lists = [gapx.neighbors.StructureContext(atoms).neighbors(3.5)]
    with pytest.raises(ValueError, match="Au is not in the model"):
        core.compute(atoms.numbers.tolist(), lists)
    atoms = Atoms("CuAl", positions=[[0, 0, 0], [0.05, 0, 0]])
    lists = [gapx.neighbors.StructureContext(atoms).neighbors(3.5)]
    with pytest.raises(ValueError, match="overlap"):
        core.compute(atoms.numbers.tolist(), lists)


def test_engine_reads_format_1_files():
    """The format-1 model (terms in "params") reads in C++ as in Python, baseline noted."""
    core = _core.Model.read(os.path.join(DATA, "model_v1.gapx"))
    model = gapx.load(os.path.join(DATA, "model_v1.gapx"))
    assert core.has_baseline
    assert core.species == [1, 6, 8]
    atoms = Atoms("CH4O", positions=np.random.default_rng(0).uniform(0, 3, (6, 3)))
    atoms.positions[:, 0] += np.arange(6) * 1.2  # keep the atoms apart
    context = gapx.neighbors.StructureContext(atoms)
    lists = [context.neighbors(t.cutoff) for t in model.terms]
    energy, energies, dE_dr, _ = core.compute(atoms.numbers.tolist(), lists)
    want = model._mean_python(atoms, context)
    np.testing.assert_allclose(energy, want[0], rtol=0, atol=ENGINE_TOL)
    np.testing.assert_allclose(dE_dr, want[2], rtol=0, atol=ENGINE_TOL)


def _rewrite(source, target, edit_header=None, arrays=None, compression=zipfile.ZIP_STORED):
    """A copy of a model file with its header edited, arrays replaced or members deflated."""
    header, stored = io.read_model_file(source)
    stored.update(arrays or {})
    if edit_header:
        edit_header(header)
    header["arrays"] = {
        k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in stored.items()
    }
    text = json.dumps(header).encode()
    stored["__header__"] = np.frombuffer(text, dtype=np.uint8)
    with zipfile.ZipFile(target, "w", compression=compression) as archive:
        for name, value in stored.items():
            with archive.open(name + ".npy", "w") as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(value))


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "model.gapx"
    models["two_body_soap"].save(path)
    return path


def _set_version(header):
    header["format_version"] = io.FORMAT_VERSION + 1


def _bad_delta(header):
    header["sparse_sets"][0]["delta"] = 7.0


def _bad_species(header):
    header["species"] = ["Cu"]


def _negative_jitter(header):
    header["sparse_sets"][0]["jitter"] = -1.0


def _unknown_term(header):
    header["terms"][0]["type"] = "four_body"


@pytest.mark.parametrize(
    ("edit", "arrays", "compression", "error", "match"),
    [
        (None, None, zipfile.ZIP_DEFLATED, ValueError, "compressed"),
        (_set_version, None, zipfile.ZIP_STORED, ValueError, "newer than this gapx reads"),
        (_bad_delta, None, zipfile.ZIP_STORED, ValueError, "delta"),
        (_bad_species, None, zipfile.ZIP_STORED, ValueError, "species do not match"),
        (_negative_jitter, None, zipfile.ZIP_STORED, ValueError, "negative jitter"),
        (_unknown_term, None, zipfile.ZIP_STORED, NotImplementedError, "four_body"),
        (None, {"alpha": np.full(1, np.nan)}, zipfile.ZIP_STORED, ValueError, "alpha"),
    ],
)
def test_engine_validates_files(saved, tmp_path, edit, arrays, compression, error, match):
    target = tmp_path / "bad.gapx"
    _rewrite(saved, target, edit, arrays, compression)
    with pytest.raises(error, match=match):
        _core.Model.read(str(target))


def test_engine_refuses_corrupt_and_missing_files(saved, tmp_path):
    assert _core.MODEL_FORMAT_VERSION == io.FORMAT_VERSION
    assert _core.OVERLAP_DISTANCE == gapx.neighbors.OVERLAP_DISTANCE
    with pytest.raises(FileNotFoundError, match="not found"):
        _core.Model.read(str(tmp_path / "missing.gapx"))
    data = bytearray(saved.read_bytes())
    truncated = tmp_path / "truncated.gapx"
    truncated.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="corrupted or truncated"):
        _core.Model.read(str(truncated))
    flipped = tmp_path / "flipped.gapx"
    data[200] ^= 0xFF  # inside the first member's data
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC|not a valid"):
        _core.Model.read(str(flipped))


def test_model_with_an_engine_copies_and_pickles(models):
    import copy
    import pickle

    model = models["soap"]
    atoms = STRUCTURES["triclinic"]
    energy = model.predict(atoms, std=False)["energy"]
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.predict(atoms, std=False)["energy"] == energy


def test_engine_refuses_a_header_that_is_not_json(saved, tmp_path):
    _, arrays = io.read_model_file(saved)
    target = tmp_path / "bad_json.gapx"
    with zipfile.ZipFile(target, "w") as archive:
        for name, value in {
            **arrays,
            "__header__": np.frombuffer(b'{"format": [1,', np.uint8),
        }.items():
            with archive.open(name + ".npy", "w") as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(value))
    with pytest.raises(ValueError, match="header is not valid JSON"):
        _core.Model.read(str(target))
    with pytest.raises(ValueError, match="not valid JSON"):
        gapx.load(target)


class _PythonOnlyThreeBody(gapx.ThreeBody):
    """A term type the C++ engine does not know (every built-in term has an engine term)."""

    type_name = "python_only_three_body"


def test_a_term_the_engine_lacks_takes_the_numpy_path(frames):
    """A term with no C++ engine term: the model predicts through GAP._mean_python."""
    model = _fit([_PythonOnlyThreeBody(cutoff=3.5, n_sparse=10), _soap()], frames)
    assert engine.engine_for(model) is None
    atoms = STRUCTURES["triclinic"]
    out = model.predict(atoms, std=False)
    energy, _, dE_dr, _ = _python_mean(model, atoms)
    assert out["energy"] == energy
    np.testing.assert_array_equal(out["forces"], -dE_dr)


def _three_body_settings(header):
    (settings,) = [t for t in header["terms"] if t["type"] == "three_body"]
    return settings


def _three_body_set(header):
    index = next(n for n, t in enumerate(header["terms"]) if t["type"] == "three_body")
    return next(s for s in header["sparse_sets"] if s["term"] == index)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda h: _three_body_settings(h).update(theta=[1.0, 2.0]), "one length scale or three"),
        (lambda h: _three_body_settings(h).update(theta=[1.0, -2.0, 1.0]), "theta must be pos"),
        (lambda h: _three_body_settings(h).update(Z=-1), "Z must be an atomic number"),
        (lambda h: _three_body_settings(h).update(cutoff_transition_width=9.0), "exceeds"),
        # The term's centre filter is Cu: an Al-centred set is impossible.
        (lambda h: _three_body_set(h).update(kind=13_013_029), "cannot have"),
    ],
)
def test_engine_validates_three_body_settings(models, tmp_path, edit, match):
    source = tmp_path / "model.gapx"
    models["two_three_body_soap"].save(source)
    target = tmp_path / "bad.gapx"
    _rewrite(source, target, edit)
    with pytest.raises(ValueError, match=match):
        _core.Model.read(str(target))


def test_engine_reads_one_theta_for_the_three_features(models, tmp_path):
    """theta=1.2 written as one number (a hand-written or older header) is (1.2, 1.2, 1.2)."""
    model = models["two_three_body_soap"]
    source = tmp_path / "model.gapx"
    model.save(source)
    target = tmp_path / "scalar_theta.gapx"
    _rewrite(source, target, lambda h: _three_body_settings(h).update(theta=1.2))
    atoms = STRUCTURES["small_cell"]
    context = gapx.neighbors.StructureContext(atoms)
    lists = [context.neighbors(t.cutoff) for t in model.terms]
    got = _core.Model.read(str(target)).compute(atoms.numbers.tolist(), lists)
    want = _core.Model.read(str(source)).compute(atoms.numbers.tolist(), lists)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
