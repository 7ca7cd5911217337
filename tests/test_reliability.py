"""Nothing lost, nothing crashes: transactional fits, atomic files, bounded model files, no
silent NaN, thread-safe calculators, round-off-free invariances (issue 14).

Calls that crashed the interpreter before (segfaults, fatal allocations) run in a subprocess, so
a regression fails the test instead of killing the run.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from structures import random_cu_al_cells

import gapx

TIMEOUT = 120  # s, for each subprocess; every one finishes in seconds
PREDICTED = ("energy", "energies", "forces", "stress")


def run_python(code: str, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with ``args`` as ``sys.argv[1:]``; never a signal."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode >= 0, f"killed by signal {-result.returncode}:\n{result.stderr}"
    return result


def predictions(model, atoms) -> dict:
    out = model.predict(atoms, std=False)
    return {key: np.asarray(out[key]) for key in PREDICTED}


def assert_same_predictions(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def small_model(**settings) -> gapx.GAP:
    soap = gapx.SOAP(species=["Al", "Cu"], cutoff=3.5, n_max=3, l_max=2, n_sparse=8, zeta=2)
    return gapx.GAP(
        [gapx.TwoBody(cutoff=4.0, n_sparse=6, sparse_method="cur"), soap],
        verbose=False,
        **settings,
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A fitted, calibrated model, its file, a second different model's file and a probe."""
    rng = np.random.default_rng(14)
    model = small_model()
    model.fit(random_cu_al_cells(rng, 4))
    model.calibrate(random_cu_al_cells(rng, 3))
    other = small_model(sigma_energy=0.01, seed=1)
    other.fit(random_cu_al_cells(rng, 4))
    folder = tmp_path_factory.mktemp("models")
    model.save(folder / "a.gapx")
    other.save(folder / "b.gapx")
    probe = random_cu_al_cells(rng, 1)[0]
    return {
        "model": model,
        "a": folder / "a.gapx",
        "b": folder / "b.gapx",
        "probe": probe,
        "predictions_a": predictions(model, probe),
        "predictions_b": predictions(other, probe),
    }


# ---------------------------------------------------------------------------------------------
# 1. a failed re-fit leaves the model as it was


def _state(model) -> dict:
    return {
        "e0": dict(model.e0),
        "alpha": model.alpha.copy(),
        "R": model.R.copy(),
        "sparse": [(s.term, s.kind, s.points.copy(), s.factor.copy()) for s in model.sparse_sets],
        "summary": dict(model.summary),
        "calibration": model.calibration,
    }


def test_failed_refit_leaves_the_model_exactly_as_it_was(fitted):
    from ase import Atoms

    model = fitted["model"]
    before = _state(model)
    assert model.calibration is not None
    # Ni is not in the SOAP species: the fit fails in the descriptor pass, after e0 (which
    # the new frames shift by eV) has been computed.
    rng = np.random.default_rng(0)
    frames = random_cu_al_cells(rng, 3)
    bad = Atoms("Ni2", positions=[[0, 0, 0], [2.2, 0, 0]], cell=[6, 6, 6], pbc=True)
    bad.info["energy"] = -1000.0
    with pytest.raises(ValueError, match="not in the SOAP species"):
        model.fit([*frames, bad])
    after = _state(model)
    assert after["e0"] == before["e0"]
    np.testing.assert_array_equal(after["alpha"], before["alpha"])
    np.testing.assert_array_equal(after["R"], before["R"])
    assert len(after["sparse"]) == len(before["sparse"])
    for (t, k, p, f), (t0, k0, p0, f0) in zip(after["sparse"], before["sparse"], strict=True):
        assert (t, k) == (t0, k0)
        np.testing.assert_array_equal(p, p0)
        np.testing.assert_array_equal(f, f0)
    assert after["summary"] == before["summary"]
    assert after["calibration"] is before["calibration"]
    assert_same_predictions(predictions(model, fitted["probe"]), fitted["predictions_a"])


# ---------------------------------------------------------------------------------------------
# 2. atomic writes

SAVE_UNDER_LIMIT = """
import json, os, resource, sys
import gapx
source, target, limits = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = gapx.load(source)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
outcomes = []
for limit in limits:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        model.save(target)
        outcome = "saved"
    except OSError as error:  # EFBIG: Python ignores SIGXFSZ, so the write fails instead
        outcome = f"failed: {error.strerror}"
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    leftovers = sorted(n for n in os.listdir(os.path.dirname(target)) if n.endswith(".tmp"))
    outcomes.append({"limit": limit, "outcome": outcome, "leftovers": leftovers})
print(json.dumps(outcomes))
"""


def test_save_interrupted_at_random_byte_counts_keeps_the_old_model(fitted, tmp_path):
    target = tmp_path / "model.gapx"
    target.write_bytes(fitted["a"].read_bytes())
    size = fitted["b"].stat().st_size
    rng = np.random.default_rng(2)
    limits = [0, 1, *sorted(int(n) for n in rng.integers(2, size, 8)), size - 1]
    result = run_python(SAVE_UNDER_LIMIT, fitted["b"], target, json.dumps(limits))
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    assert [o["limit"] for o in outcomes] == limits
    for outcome in outcomes:
        assert outcome["outcome"] == "failed: File too large", outcome
        assert outcome["leftovers"] == [], outcome  # the temporary file is removed
    # Every attempt failed part-way: the target still holds the old model, bit for bit.
    assert target.read_bytes() == fitted["a"].read_bytes()
    assert_same_predictions(
        predictions(gapx.load(target), fitted["probe"]), fitted["predictions_a"]
    )
    # With room enough the same save completes and the target holds the new model.
    result = run_python(SAVE_UNDER_LIMIT, fitted["b"], target, json.dumps([size + 4096]))
    assert json.loads(result.stdout)[0]["outcome"] == "saved", result.stderr
    assert_same_predictions(
        predictions(gapx.load(target), fitted["probe"]), fitted["predictions_b"]
    )


SAVE_FOREVER = """
import sys
import gapx
models = [gapx.load(sys.argv[1]), gapx.load(sys.argv[2])]
print("ready", flush=True)
n = 0
while True:
    models[n % 2].save(sys.argv[3])
    n += 1
"""


def test_writer_killed_mid_save_leaves_a_valid_model(fitted, tmp_path):
    target = tmp_path / "model.gapx"
    target.write_bytes(fitted["a"].read_bytes())
    expected = (fitted["predictions_a"], fitted["predictions_b"])
    rng = np.random.default_rng(3)
    for delay in rng.uniform(0.0, 0.3, 3):
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SAVE_FOREVER), fitted["a"], fitted["b"], target],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(delay)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(TIMEOUT)
            child.stdout.close()
        loaded = predictions(gapx.load(target), fitted["probe"])
        matches = []
        for reference in expected:
            try:
                assert_same_predictions(loaded, reference)
                matches.append(True)
            except AssertionError:
                matches.append(False)
        assert any(matches), "the target holds neither model after the writer was killed"


def test_atomic_write_removes_its_temporary_file_on_error(tmp_path):
    from gapx.io import atomic_write

    target = tmp_path / "report.json"
    target.write_text("old")

    def interrupted_write():
        with atomic_write(target, "w") as handle:
            handle.write("partial")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        interrupted_write()
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]
    with atomic_write(target, "w") as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["report.json"]


# ---------------------------------------------------------------------------------------------
# 3. thread counts are a runtime setting, not in model files

PREDICT_FILE = """
import sys
import numpy as np
import gapx
from structures import random_cu_al_cells
model = gapx.load(sys.argv[1])
out = model.predict(random_cu_al_cells(np.random.default_rng(0), 1)[0])
print(repr([t.to_dict().get("n_threads") for t in model.terms]), np.isfinite(out["energy"]))
"""


def test_model_file_storing_100000_threads_loads_and_predicts(fitted, tmp_path):
    from gapx import serialization
    from gapx.io import read_model_file, write_model_file

    header, arrays = read_model_file(fitted["a"])
    assert all("n_threads" not in term for term in header["terms"])  # not written any more
    for term in header["terms"]:
        if term["type"] == "soap":
            term["n_threads"] = 100000  # as gapx wrote it before: a segfault on predict
    path = tmp_path / "threads.gapx"
    write_model_file(path, {k: v for k, v in header.items() if k != "arrays"}, arrays)
    assert serialization.model_header(fitted["model"])["terms"] == [
        t.to_dict() for t in fitted["model"].terms
    ]
    tests = os.path.dirname(os.path.abspath(__file__))
    code = f"import sys; sys.path.insert(0, {tests!r})\n" + textwrap.dedent(PREDICT_FILE)
    result = run_python(code, path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[None,", "None]", "True"]


# ---------------------------------------------------------------------------------------------
# 5. model files that would allocate or inflate without bound


def _npy_header(shape, dtype="<f8") -> bytes:
    """The bytes numpy writes before the data of an array (format 1.0)."""
    import io

    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def _copy_model(source, target, *, header=None, replace=None, skip_header=False, mode="w"):
    """Copy a model file member by member: ``header`` replaces the JSON header, ``replace``
    maps member names to new bytes."""
    import zipfile

    from gapx.io import HEADER

    replace = replace or {}
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, mode) as zout:
        for item in zin.infolist():
            if item.filename == HEADER + ".npy":
                if skip_header:
                    continue
                if header is not None:
                    text = json.dumps(header).encode()
                    data = _npy_header((len(text),), "|u1") + text
                    zout.writestr(item.filename, data, compress_type=zipfile.ZIP_DEFLATED)
                    continue
            zout.writestr(item, replace.get(item.filename, zin.read(item.filename)))


def _traced_load(path):
    """``gapx.load(path)``'s exception and the peak of Python and numpy allocations (bytes)."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="model file") as error:
            gapx.load(path)
        return str(error.value), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


PEAK_BYTES = 50 * 2**20  # a refusal allocates next to nothing


def test_member_claiming_1e12_elements_is_refused_before_allocation(fitted, tmp_path):
    from gapx.io import read_model_file

    header, _ = read_model_file(fitted["a"])
    n = len(header["arrays"]["alpha"]["shape"]) and header["arrays"]["alpha"]["shape"][0]
    claim = _npy_header((10**12,)) + bytes(8 * n)
    # The member's own .npy header claims 1e12 elements (its size is what the manifest needs).
    _copy_model(fitted["a"], tmp_path / "npy.gapx", replace={"alpha.npy": claim})
    message, peak = _traced_load(tmp_path / "npy.gapx")
    assert "array 'alpha' has shape (1000000000000,)" in message
    assert peak < PEAK_BYTES
    # The manifest claims it too.
    header["arrays"]["alpha"]["shape"] = [10**12]
    _copy_model(
        fitted["a"], tmp_path / "manifest.gapx", header=header, replace={"alpha.npy": claim}
    )
    message, peak = _traced_load(tmp_path / "manifest.gapx")
    assert "array 'alpha' declares 1000000000000 elements, more than the" in message
    assert peak < PEAK_BYTES


BOMB_BYTES = 1100 * 2**20  # inflated size of the zip bomb member


def _add_bomb(path, name: str, n_values: int) -> None:
    """Append a member ``name`` of ``n_values`` float64 zeros, deflated as it is written (the
    inflated data never exist: ~1 MB on disk)."""
    import zipfile

    chunk = bytes(2**24)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(name, "w", force_zip64=True) as handle:
            handle.write(_npy_header((n_values,)))
            left = 8 * n_values
            while left:
                handle.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))


def _append_header(path, header: dict) -> None:
    import zipfile

    text = json.dumps(header).encode()
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__header__.npy", _npy_header((len(text),), "|u1") + text)


@pytest.mark.slow  # writing the ~1 MB bomb deflates 1.1 GB of zeros: 3 s
def test_small_file_inflating_to_a_gigabyte_is_refused_unread(fitted, tmp_path):
    import shutil
    import zipfile

    from gapx.io import read_model_file

    header, _ = read_model_file(fitted["a"])
    n_values = BOMB_BYTES // 8
    bomb = tmp_path / "bomb.zip"  # every member of a good file but the header, alpha a bomb
    with zipfile.ZipFile(fitted["a"]) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for item in zin.infolist():
            if item.filename not in ("alpha.npy", "__header__.npy"):
                zout.writestr(item, zin.read(item.filename))
    _add_bomb(bomb, "alpha.npy", n_values)
    assert bomb.stat().st_size < 5 * 2**20
    declared = dict(
        header, arrays=dict(header["arrays"], alpha={"shape": [n_values], "dtype": "<f8"})
    )
    # The manifest says what alpha was (34 values), or declares the inflated shape, so that
    # the size matches: either way the member is refused from the zip directory alone.
    for name, manifest in (("mismatch", header), ("declared", declared)):
        path = tmp_path / f"{name}.gapx"
        shutil.copy(bomb, path)
        _append_header(path, manifest)
        message, peak = _traced_load(path)
        assert "member 'alpha.npy' would inflate from" in message, message
        assert f"to {8 * n_values + 128} bytes, more than 100 times: not model data" in message
        assert peak < PEAK_BYTES


def test_huge_header_is_refused_unread(fitted, tmp_path):
    from gapx.io import MAX_HEADER_BYTES, read_model_file

    header, _ = read_model_file(fitted["a"])
    # Random text: it does not compress, so the size cap, not the ratio, refuses it.
    header["training"]["padding"] = (
        np.random.default_rng(0).bytes(MAX_HEADER_BYTES // 2 + 2**14).hex()
    )
    path = tmp_path / "header.gapx"
    _copy_model(fitted["a"], path, header=header)
    message, peak = _traced_load(path)
    assert "(the header) inflates to" in message
    assert "more than the 16777216 bytes a header may have" in message
    assert peak < PEAK_BYTES


# ---------------------------------------------------------------------------------------------
# 6. no silent NaN: non-finite values and inconsistent headers are refused on load


def _write_raw(path, header: dict, arrays: dict) -> None:
    """A model file as gapx writes it, but with ``json.dumps``' NaN and Infinity allowed."""
    import io
    import zipfile

    header = dict(header)
    header["arrays"] = {
        k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()
    }
    text = json.dumps(header).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())
        archive.writestr("__header__.npy", _npy_header((len(text),), "|u1") + text)


def _set(path: str, value):
    """A mutation setting ``header[path]`` (dotted; list indices as numbers)."""

    def mutate(header, arrays):
        *parents, last = path.split(".")
        node = header
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value

    return mutate


def _poison(name: str, value=np.nan):
    def mutate(header, arrays):
        arrays[name] = arrays[name].copy()
        arrays[name].flat[arrays[name].size // 2] = value

    return mutate


def _rename_e0(header, arrays):
    header["e0"]["Xx"] = header["e0"].pop("Cu")


def _swap_species(header, arrays):
    header["species"] = header["species"][::-1]


def _soap_width(header, arrays):
    next(t for t in header["terms"] if t["type"] == "soap")["n_max"] = 4


# The fixture's sparse sets: 0-2 TwoBody (Al-Al, Al-Cu, Cu-Cu), 3-4 SOAP (Al, Cu; 63 features).
BAD_FILES = {
    "nan_weight": (_poison("alpha"), "array 'alpha' has 1 NaN or infinite values"),
    "inf_R": (_poison("R", np.inf), "array 'R' has 1 NaN or infinite values"),
    "nan_points": (_poison("sparse_4_points"), "array 'sparse_4_points' has 1 NaN"),
    "nan_factor": (_poison("sparse_0_factor"), "array 'sparse_0_factor' has 1 NaN"),
    "nan_e0": (_set("e0.Cu", float("nan")), "e0['Cu'] is nan"),
    "string_e0": (_set("e0.Cu", "-3.5"), "e0['Cu'] must be a number"),
    "nan_delta": (_set("sparse_sets.0.delta", float("nan")), "sparse set 0 delta is nan"),
    "other_delta": (_set("sparse_sets.0.delta", 2.0), "sparse set 0 has delta 2.0, its term"),
    "inf_jitter": (_set("sparse_sets.1.jitter", float("inf")), "sparse set 1 jitter is inf"),
    "soap_kind": (_set("sparse_sets.3.kind", 26), "sparse set 3 is of kind 26, which term 1"),
    "pair_kind": (_set("sparse_sets.0.kind", 13026), "sparse set 0 is of kind 13026"),
    "float_kind": (_set("sparse_sets.0.kind", 13013.0), "sparse set 0 kind must be an integer"),
    "duplicate": (_set("sparse_sets.1.kind", 13013), "term 0 has two sparse sets of kind 13013"),
    "width": (_soap_width, "sparse set 3 points have 63 features, but term 1 (soap) has 108"),
    "e0_symbol": (_rename_e0, "e0 keys must be chemical symbols, got ['Xx']"),
    "species": (_swap_species, "species ['Cu', 'Al'] do not match the e0 keys ['Al', 'Cu']"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_values_and_inconsistent_headers_are_refused_on_load(fitted, tmp_path, case):
    from gapx.io import read_model_file

    mutate, message = BAD_FILES[case]
    header, arrays = read_model_file(fitted["a"])
    mutate(header, arrays)
    path = tmp_path / f"{case}.gapx"
    _write_raw(path, header, arrays)
    with pytest.raises(ValueError, match="model file") as error:
        gapx.load(path)
    assert message in str(error.value)


def test_gapx_eval_of_a_nan_model_is_a_one_line_error(fitted, tmp_path, capsys):
    import ase.io

    from gapx.cli import main
    from gapx.io import read_model_file

    header, arrays = read_model_file(fitted["a"])
    _poison("alpha")(header, arrays)
    _write_raw(tmp_path / "nan.gapx", header, arrays)
    data = tmp_path / "test.xyz"
    ase.io.write(data, random_cu_al_cells(np.random.default_rng(1), 2), format="extxyz")
    code = main(["eval", str(tmp_path / "nan.gapx"), str(data)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("gapx eval: error: cannot load model")
    assert "NaN or infinite values" in err


# ---------------------------------------------------------------------------------------------
# 8. smaller ones: atomic numbers, a single frame, bool labels, unused config types


@pytest.mark.parametrize("number", [-1, 119, 200, 2**32 + 14])
def test_atomic_numbers_outside_0_to_118_are_refused(fitted, number):
    atoms = fitted["probe"].copy()
    atoms.numbers[1] = number  # 2**32 + 14 was silently Si after the int32 cast
    atoms.info["energy"] = -10.0
    message = rf"atomic numbers must be between 0 and 118, got \[{number}\] \(atoms \[1\]\)"
    with pytest.raises(ValueError, match=message):
        fitted["model"].predict(atoms)
    with pytest.raises(ValueError, match=message):
        gapx.neighbor_list(atoms, 3.0)
    with pytest.raises(ValueError, match=message):
        gapx.TwoBody(cutoff=3.0).compute(atoms)
    with pytest.raises(ValueError, match=message):
        gapx.SOAP(species=["Al", "Cu"], n_max=2, l_max=1).compute(atoms)
    with pytest.raises(ValueError, match=message.replace("between 0", "between 1")):
        small_model().fit([atoms])


def test_dummy_atoms_are_geometry_not_species(fitted):
    atoms = fitted["probe"].copy()
    atoms.numbers[1] = 0  # ASE's X: neighbour lists take it, models have no such species
    atoms.info["energy"] = -10.0
    assert len(gapx.neighbor_list(atoms, 3.0)[0]) > 0
    with pytest.raises(ValueError, match=r"species \['X'\] are not in the model"):
        fitted["model"].predict(atoms)
    with pytest.raises(ValueError, match="atomic numbers must be between 1 and 118, got \\[0\\]"):
        small_model().fit([atoms])


def test_fit_accepts_a_single_atoms_as_one_frame():
    frame = random_cu_al_cells(np.random.default_rng(5), 1)[0]
    one, listed = small_model(), small_model()
    one.fit(frame)
    listed.fit([frame])
    assert one.summary["n_frames"] == 1
    np.testing.assert_array_equal(one.alpha, listed.alpha)
    with pytest.raises(TypeError, match=r"frames\[1\] is not an ase.Atoms"):
        small_model().fit([frame, "frame.xyz"])


@pytest.mark.parametrize(
    ("where", "key", "value", "message"),
    [
        ("info", "energy", True, "energy is a bool (True), not a number"),
        ("info", "energy", np.bool_(False), "energy is a bool"),
        ("arrays", "forces", None, "forces is a bool"),
        ("info", "energy_sigma", True, "energy_sigma is a bool"),
    ],
)
def test_labels_given_as_bools_are_refused(where, key, value, message):
    from gapx.labels import extract_labels

    atoms = random_cu_al_cells(np.random.default_rng(5), 1)[0]
    atoms.calc = None
    atoms.info["energy"] = -3.0
    if where == "info":
        atoms.info[key] = value
    else:
        atoms.arrays[key] = np.ones((len(atoms), 3), dtype=bool)
    with pytest.raises(ValueError, match=re.escape(f"frame 0: {message}")):
        extract_labels(atoms, 0)


def test_settings_given_as_bools_are_refused():
    with pytest.raises(ValueError, match="delta must be a number, got True"):
        gapx.TwoBody(delta=True)
    with pytest.raises(ValueError, match="sigma_energy must be a number, got True"):
        small_model(sigma_energy=True)


def test_config_type_sigma_naming_no_frame_warns():
    frames = random_cu_al_cells(np.random.default_rng(5), 2)
    for atoms in frames:
        atoms.info["config_type"] = "bulk"
    model = small_model(config_type_sigma={"blk": (0.01, 0.1, 0.1), "bulk": (0.01, 0.1, 0.1)})
    message = r"entries for \['blk'\], but no frame has that 'config_type'.*\['bulk'\]"
    with pytest.warns(UserWarning, match=message):
        model.fit(frames)


# ---------------------------------------------------------------------------------------------
# 9. one calculator shared by two threads


def test_calculator_shared_by_two_threads_returns_each_its_own_result(fitted):
    import threading

    from ase.build import bulk

    model = fitted["model"]
    structures = []
    for seed in range(2):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (3, 3, 3)
        atoms.numbers[::3] = 13
        atoms.rattle(0.1, seed=seed)
        structures.append(atoms)
    expected = [predictions(model, atoms) for atoms in structures]
    calc = gapx.GAPCalculator(model)
    failures, rounds = [], 25

    def hammer(index: int) -> None:
        atoms = structures[index].copy()
        atoms.calc = calc
        for step in range(rounds):
            calc.reset()  # a new calculation each round, whichever thread calculated last
            energy = atoms.get_potential_energy()
            forces = atoms.get_forces()
            if energy != expected[index]["energy"] or not np.array_equal(
                forces, expected[index]["forces"]
            ):
                failures.append((index, step))

    threads = [threading.Thread(target=hammer, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert calc.n_evaluations >= 2 * rounds
    copied = pickle.loads(pickle.dumps(calc))  # the lock is not pickled; the copy has its own
    assert copied._lock is not calc._lock
    assert copied.get_potential_energy(structures[0]) == expected[0]["energy"]


# ---------------------------------------------------------------------------------------------
# 10. numerical hygiene: a relative jitter, round-off-free two-body energies


def test_sparse_jitter_is_relative_to_the_prior_variance():
    import scipy.linalg

    frames = random_cu_al_cells(np.random.default_rng(5), 3)
    compared = 0
    for delta in (0.3, 1.0, 3.0):
        soap = gapx.SOAP(
            species=["Al", "Cu"], cutoff=3.5, n_max=3, l_max=2, n_sparse=8, delta=delta
        )
        model = gapx.GAP([gapx.TwoBody(cutoff=4.0, n_sparse=6, delta=delta), soap], verbose=False)
        model.fit(frames)
        for s in model.sparse_sets:
            assert s.jitter == 1e-8 * delta**2  # eV^2: relative to the prior variance delta^2
            if delta == 1.0 and model.terms[s.term] is soap:
                # As with the absolute jitter it replaces: bit for bit.
                K = soap.kernel(s.points, s.points)
                expected = scipy.linalg.cholesky(K + 1e-8 * np.eye(s.size), lower=True)
                np.testing.assert_array_equal(s.factor, expected)
                compared += 1
    assert compared == 2  # soap[Al], soap[Cu]


INVARIANCE_TOL = 1e-10  # eV: the energy of a rotated structure
FD_STEPS = (1e-3, 1e-4)  # Å


def _alloy_frames(rng, n_frames: int) -> list:
    """Rattled, strained 16-atom fcc cells of random Al/Ni/Cu, EMT-labelled."""
    from ase.build import bulk
    from structures import emt_labelled

    frames = []
    for _ in range(n_frames):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
        atoms.numbers = rng.choice([13, 28, 29], len(atoms))
        eps = 0.03 * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.positions += 0.1 * rng.standard_normal(atoms.positions.shape)
        frames.append(emt_labelled(atoms))
    return frames


def test_two_body_plus_soap_energy_is_invariant_and_fd_exact_beyond_round_off():
    from finite_differences import assert_gradients_close, numerical_position_gradient
    from scipy.spatial.transform import Rotation
    from structures import random_structure, random_triclinic_cell

    rng = np.random.default_rng(0)
    species = ["Al", "Ni", "Cu"]
    soap = gapx.SOAP(species=species, cutoff=4.0, n_max=4, l_max=3, n_sparse=30)
    model = gapx.GAP([gapx.TwoBody(), soap], verbose=False)  # TwoBody's defaults: |alpha| ~ 2e4
    model.fit(_alloy_frames(rng, 8))
    assert np.abs(model.alpha).max() > 1e4  # the weights that cancel
    atoms = random_structure(rng, species, 6, cell=random_triclinic_cell(rng, 5.0), min_distance=2)

    def energy(a):
        return model.predict(a, std=False)["energy"]

    reference = energy(atoms)
    for seed in range(5):
        rotation = Rotation.random(random_state=seed).as_matrix()
        rotated = atoms.copy()
        rotated.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
        rotated.positions = atoms.positions @ rotation.T
        assert abs(energy(rotated) - reference) < INVARIANCE_TOL
    # Finite differences in the truncation regime: ten times smaller steps give (more than) ten
    # times smaller errors. Round-off would make the error grow instead (it did: 2e-10 eV of
    # energy noise is 1e-6 eV/Å at a 1e-4 Å step).
    gradient = -model.predict(atoms, std=False)["forces"]
    errors = [
        np.abs(numerical_position_gradient(energy, atoms, step) - gradient).max()
        for step in FD_STEPS
    ]
    assert errors[1] < errors[0] / 10, errors
    assert_gradients_close(gradient, numerical_position_gradient(energy, atoms, 1e-5), rtol=1e-6)
