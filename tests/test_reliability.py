"""Nothing lost, nothing crashes: transactional fits, atomic files, bounded model files, no
silent NaN, thread-safe calculators, round-off-free invariances (issue 14).

Calls that crashed the interpreter before (segfaults, fatal allocations) run in a subprocess, so
a regression fails the test instead of killing the run.
"""

from __future__ import annotations

import json
import os
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
