"""Incremental sparse-GP updates and on-the-fly learning (gapx.learning, gapx learn)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

import ase.io
import learning_oracles
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from structures import emt_labelled, strained_fcc_cells

import gapx
from gapx import fitting
from gapx.cli import main
from gapx.gp.selection import residual_variance_rows
from gapx.kernels import DotProduct
from gapx.learning import IncrementalFit, LearningError, OnTheFly
from gapx.learning.onthefly import max_force_std
from gapx.learning.run_files import RunFolder

# An updated model must equal a from-scratch fit on the same frames and sparse points.
UPDATE_TOL = 1e-8  # eV, eV/Å, eV/Å^3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The README's example config: what the learning runs below use.
CONFIG = open(os.path.join(ROOT, "examples", "copper_learn.toml")).read()

# Settings of the learning runs: 8-atom Cu at 600 K makes about four calls in 60 steps.
RUN = ["--steps", "60", "--temperature", "600", "--timestep", "2", "--threshold", "0.02"]
RUN += ["--std-interval", "2", "--checkpoint-interval", "7", "-q"]
RUN_KWARGS = {
    "threshold": 0.02,
    "temperature": 600.0,
    "timestep": 2.0,
    "std_interval": 2,
    "checkpoint_interval": 7,
}
STEPS = 60


def small_model(**kwargs) -> gapx.GAP:
    return gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.0, n_sparse=8),
            gapx.SOAP(species=["Cu"], cutoff=4.0, n_max=3, l_max=2, n_sparse=10),
        ],
        sigma_force=0.05,
        verbose=False,
        **kwargs,
    )


def cu_start():
    return bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 1, 1)


def predictions(state, structures) -> list[dict]:
    model = small_model()
    model._adopt(state)
    return [model.predict(atoms, std=False) for atoms in structures]


def assert_same_predictions(state, reference, structures):
    for got, want in zip(
        predictions(state, structures), predictions(reference, structures), strict=True
    ):
        assert abs(got["energy"] - want["energy"]) < UPDATE_TOL
        np.testing.assert_allclose(got["forces"], want["forces"], rtol=0, atol=UPDATE_TOL)
        np.testing.assert_allclose(got["stress"], want["stress"], rtol=0, atol=UPDATE_TOL)
        assert np.abs(want["forces"]).max() > 0.1  # not trivially equal


def reference_fit(state, frames):
    """A from-scratch fit on ``frames`` with the state's e0 and sparse points."""
    points = {(s.term, s.kind): s.points for s in state.sparse_sets}
    return fitting.fit(small_model(), frames, e0=state.e0, sparse_points=points)


@pytest.fixture(scope="module")
def cu_frames():
    frames = strained_fcc_cells(np.random.default_rng(11), 12, repeat=(2, 1, 1))
    # One frame without stress and one without forces: the layouts of mixed labels.
    frames[5].calc = SinglePointCalculator(
        frames[5], energy=frames[5].get_potential_energy(), forces=frames[5].get_forces()
    )
    frames[8].calc = SinglePointCalculator(frames[8], energy=frames[8].get_potential_energy())
    return frames


@pytest.fixture(scope="module")
def test_structures():
    return strained_fcc_cells(np.random.default_rng(12), 3, repeat=(2, 1, 1))


@pytest.mark.parametrize("descriptor_memory", [1e9, 0.0])
def test_updates_equal_a_full_fit_with_the_same_sparse_points(
    cu_frames, test_structures, descriptor_memory
):
    learner = IncrementalFit.fit(
        small_model(), cu_frames[:3], new_sparse_per_frame=3, descriptor_memory=descriptor_memory
    )
    sizes = [learner.n_columns]
    for batch in ((3, 5), (5, 6), (6, 9), (9, 12)):
        report = learner.add(cu_frames[slice(*batch)])
        sizes.append(report["n_sparse_total"])
        state = learner.state()
        assert_same_predictions(state, reference_fit(state, cu_frames[: batch[1]]), test_structures)
    assert sizes[-1] > sizes[0]  # sparse points were added along the way
    assert learner.stats["updates"] == 4
    assert state.summary["learning"]["n_input_frames"] == 12
    assert state.summary["n_frames"] == 12
    if descriptor_memory == 0:
        assert learner.stats["recomputed_blocks"] > 0
    again = IncrementalFit.fit(
        small_model(), cu_frames[:3], new_sparse_per_frame=3, descriptor_memory=descriptor_memory
    )
    for batch in ((3, 5), (5, 6), (6, 9), (9, 12)):
        again.add(cu_frames[slice(*batch)])
    np.testing.assert_array_equal(again.state().alpha, state.alpha)  # deterministic


def test_update_without_new_points_folds_rows(cu_frames, test_structures):
    learner = IncrementalFit.fit(small_model(), cu_frames[:4], new_sparse_per_frame=0)
    n_columns = learner.n_columns
    learner.add(cu_frames[4:6])
    learner.add(cu_frames[6:7])
    assert learner.n_columns == n_columns
    state = learner.state()
    assert_same_predictions(state, reference_fit(state, cu_frames[:7]), test_structures)


def test_first_fit_matches_gap_fit(cu_frames, test_structures):
    model = small_model()
    model.fit(cu_frames[:4])
    learner = IncrementalFit.fit(small_model(), cu_frames[:4])
    state = learner.state()
    for s, t in zip(state.sparse_sets, model.sparse_sets, strict=True):
        np.testing.assert_array_equal(s.points, t.points)
    fitted = fitting.FittedState(model.e0, model.sparse_sets, model.alpha, model.R)
    assert_same_predictions(state, fitted, test_structures)
    given = reference_fit(fitted, cu_frames[:4])  # fitting.fit with given points = GAP.fit
    np.testing.assert_allclose(given.alpha, model.alpha, rtol=1e-12, atol=0)


def test_checkpoint_round_trip_continues_identically(cu_frames):
    learner = IncrementalFit.fit(small_model(), cu_frames[:3])
    learner.add(cu_frames[3:5])
    restored = IncrementalFit.from_arrays(small_model(), cu_frames[:5], learner.to_arrays())
    np.testing.assert_array_equal(restored.state().alpha, learner.state().alpha)
    learner.add(cu_frames[5:7])
    restored.add(cu_frames[5:7])
    np.testing.assert_array_equal(restored.state().alpha, learner.state().alpha)
    with pytest.raises(ValueError, match="holds 7 frames, 6 given"):
        IncrementalFit.from_arrays(small_model(), cu_frames[:6], learner.to_arrays())


def test_failed_update_leaves_the_fit_unchanged(cu_frames):
    learner = IncrementalFit.fit(small_model(), cu_frames[:3])
    before = learner.state()
    aluminium = cu_frames[3].copy()
    aluminium.numbers[0] = 13
    aluminium.calc = SinglePointCalculator(aluminium, energy=1.0)
    with pytest.raises(ValueError, match=r"species \['Al'\] have no e0"):
        learner.add([aluminium])
    overlapping = cu_frames[4].copy()
    overlapping.positions[1] = overlapping.positions[0] + 0.01
    overlapping.calc = SinglePointCalculator(overlapping, energy=1.0)
    with pytest.raises(ValueError, match="frame 0"):
        learner.add([overlapping])
    np.testing.assert_array_equal(learner.state().alpha, before.alpha)
    assert learner.n_frames == 3


def test_residual_variance_picks_the_novel_row_first_and_no_duplicate(rng):
    kernel = DotProduct(zeta=2)
    base = rng.normal(size=(1, 6))
    near = base + 1e-4 * rng.normal(size=(5, 6))
    novel = rng.normal(size=(1, 6))
    X = np.vstack([near, novel, near[:1]])
    chosen = residual_variance_rows(kernel, X, 1.0, 3, 1e-4, points=base, factor=np.eye(1))
    assert chosen[0] == 5
    assert len(chosen) == 1  # the near-copies of the set's point are represented already
    alone = residual_variance_rows(kernel, np.vstack([novel, novel]), 1.0, 2, 1e-4)
    assert alone.tolist() == [0]


def test_max_force_std_is_the_largest_force_component_std():
    forces_std = np.array([[0.1, 0.2, 0.05], [0.0, 0.3, 0.1]])
    assert max_force_std({"energies_std": np.array([0.01, 0.5]), "forces_std": forces_std}) == 0.3


def test_run_folder_cuts_a_partial_journal_frame(tmp_path):
    folder = RunFolder(tmp_path)
    frames = [emt_labelled(cu_start()), emt_labelled(cu_start())]
    for frame in frames:
        folder.append_call(frame)
    with open(folder.calls, "a") as handle:
        handle.write("8\nLattice=")  # a crash in the middle of the next append
    assert len(folder.read_calls()) == 2
    assert open(folder.calls).read().endswith("\n")


# ----------------------------------------------------------------------------- gapx learn


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fit.toml").write_text(CONFIG)
    ase.io.write(tmp_path / "cu.xyz", cu_start())
    learning_oracles.LABELLED.clear()
    learning_oracles.FAIL_AFTER.update(calls=2, made=0)
    return tmp_path


def resume():
    """``gapx learn --resume`` with nothing but the folder: the run's settings and model."""
    argv = ["learn", "cu.xyz", "--oracle", "ase.calculators.emt:EMT", "-o", "run", "--resume"]
    return main([*argv, "--steps", str(STEPS), "-q"])


def learn(*extra, oracle="ase.calculators.emt:EMT"):
    argv = ["learn", "cu.xyz", "--oracle", oracle, "--config", "fit.toml", "-o", "run"]
    return main([*argv, *RUN, *extra])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference run: the files an uninterrupted ``gapx learn`` leaves."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    (folder / "fit.toml").write_text(CONFIG)
    ase.io.write(folder / "cu.xyz", cu_start())
    argv = ["learn", str(folder / "cu.xyz"), "--oracle", "ase.calculators.emt:EMT"]
    argv += ["--config", str(folder / "fit.toml"), "-o", str(folder / "run"), *RUN]
    assert main(argv) == 0
    return RunFolder(folder / "run")


def assert_same_run(folder: RunFolder, reference: RunFolder):
    for name in ("calls", "log", "state"):
        assert open(getattr(folder, name)).read() == open(getattr(reference, name)).read(), name
    got, want = gapx.load(folder.model), gapx.load(reference.model)
    np.testing.assert_array_equal(got.alpha, want.alpha)
    np.testing.assert_array_equal(got.R, want.R)


def test_gapx_learn_end_to_end_every_call_journaled(workdir, capsys):
    code = main(
        ["learn", "cu.xyz", "--oracle", "learning_oracles:CountingEMT", "--config", "fit.toml"]
        + ["-o", "run", *RUN]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    folder = RunFolder("run")
    calls = ase.io.read(folder.calls, ":")
    assert len(calls) >= 3  # the start and at least two during MD
    assert f"learned to step {STEPS}: {len(calls)} oracle calls" in out
    seen = learning_oracles.LABELLED
    labelled = [p for n, p in enumerate(seen) if n == 0 or not np.array_equal(p, seen[n - 1])]
    assert len(labelled) == len(calls)
    for positions, frame in zip(labelled, calls, strict=True):
        np.testing.assert_allclose(frame.positions, positions, atol=1e-7)  # extxyz: 8 decimals
        assert frame.get_forces().shape == (8, 3)
    assert [c.info["learn_call"] for c in calls] == list(range(len(calls)))
    log = folder.read_log()
    assert int(np.nansum(log["oracle_called"])) == len(calls) - 1
    assert log["step"][-1] == STEPS
    assert os.path.getsize(folder.plot) > 10_000
    model = gapx.load(folder.model)
    assert model.summary["learning"]["n_input_frames"] == len(calls)
    for frame in calls[1:]:  # the updated model has learnt the called frames
        error = np.abs(model.predict(frame, std=False)["forces"] - frame.get_forces()).max()
        assert error < frame.info["learn_max_force_error"]


def test_oracle_failure_stops_with_one_line_and_resume_continues_exactly(
    workdir, capsys, uninterrupted
):
    code = learn(oracle="learning_oracles:FailingEMT")
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert "the oracle failed: RuntimeError: the reference code crashed" in err
    assert "keeps the model and all 2 oracle calls" in err
    folder = RunFolder("run")
    assert len(folder.read_calls()) == 2
    assert gapx.load(folder.model).summary["learning"]["n_input_frames"] == 2
    assert resume() == 0
    assert_same_run(folder, uninterrupted)


def test_retries_get_every_label(workdir, uninterrupted):
    assert learn("--retries", "1", oracle="learning_oracles:FlakyEMT") == 0
    assert_same_run(RunFolder("run"), uninterrupted)


def test_resume_replays_a_call_journaled_before_the_interruption(
    tmp_path, monkeypatch, uninterrupted
):
    real_add = IncrementalFit.add
    made = []

    def interrupted_add(self, frames):
        made.append(1)
        if len(made) == 2:  # the second MD call: journaled, not yet in the model
            raise KeyboardInterrupt
        return real_add(self, frames)

    monkeypatch.setattr(IncrementalFit, "add", interrupted_add)
    with pytest.raises(KeyboardInterrupt):
        OnTheFly(small_model(), EMT, tmp_path, **RUN_KWARGS).run(cu_start(), STEPS)
    monkeypatch.setattr(IncrementalFit, "add", real_add)
    folder = RunFolder(tmp_path)
    n_calls = len(folder.read_calls())
    assert gapx.load(folder.model).summary["learning"]["n_input_frames"] == n_calls - 1
    # An oracle that cannot label: the journaled call is replayed without it, and the run
    # goes on until it needs a new label.
    with pytest.raises(LearningError, match="cannot label"):
        OnTheFly(small_model(), Unavailable, tmp_path, **RUN_KWARGS).run(cu_start(), STEPS, True)
    assert len(folder.read_calls()) == n_calls
    assert gapx.load(folder.model).summary["learning"]["n_input_frames"] == n_calls
    OnTheFly(small_model(), EMT, tmp_path, **RUN_KWARGS).run(cu_start(), STEPS, resume=True)
    assert_same_run(folder, uninterrupted)


class Unavailable(EMT):
    def calculate(self, *args, **kwargs):
        raise RuntimeError("cannot label")


@pytest.mark.slow
def test_killed_subprocess_resumes_to_the_uninterrupted_result(workdir, uninterrupted):
    command = "import sys; from gapx.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["learn", "cu.xyz", "--oracle", "learning_oracles:SlowEMT", "--config", "fit.toml"]
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}
    process = subprocess.Popen([sys.executable, "-c", command, *argv, "-o", "run", *RUN], env=env)
    folder = RunFolder("run")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.isfile(folder.calls) and len(folder.read_calls()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert resume() == 0
    assert_same_run(folder, uninterrupted)


@pytest.mark.parametrize(
    ("oracle", "message"),
    [
        ("ase.calculators.emt", "must be given as MODULE:CALLABLE"),
        ("no_such_module:EMT", "cannot import the oracle module 'no_such_module'"),
        ("ase.calculators.emt:Nope", "has no attribute 'Nope'"),
        ("ase.calculators.emt:__doc__", "is a str, not callable"),
        ("math:pi", "is a float, not callable"),
        ("math:sqrt", "making the oracle calculator failed: TypeError"),
        ("builtins:dict", "returned a dict, not an ASE calculator"),
    ],
)
def test_bad_oracle_one_line_error_and_nothing_written(workdir, capsys, oracle, message):
    assert learn(oracle=oracle) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert message in err
    assert not os.path.exists("run")


def test_nan_from_the_oracle_stops_and_keeps_the_files(workdir, capsys):
    assert learn(oracle="learning_oracles:NaNEMT") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "the oracle failed: ValueError: the oracle returned a non-finite forces" in err
    assert os.path.isfile(RunFolder("run").settings)
    assert learn("--resume") == 0  # no model yet: the config gives the settings
    assert len(RunFolder("run").read_calls()) >= 2


def test_md_blow_up_stops_and_keeps_the_files(workdir, capsys):
    argv = ["learn", "cu.xyz", "--oracle", "ase.calculators.emt:EMT", "--config", "fit.toml"]
    assert main([*argv, "-o", "run", *RUN, "--max-temperature", "100"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "MD blew up at step 0: temperature" in err
    assert "above the safety limit 100 K" in err
    folder = RunFolder("run")
    assert len(folder.read_calls()) == 1
    assert os.path.isfile(folder.model)


def test_learn_usage_errors(workdir, capsys):
    base = ["learn", "cu.xyz", "--oracle", "ase.calculators.emt:EMT"]
    assert main([*base, "-o", "run", "--threshold", "0.1"]) == 1
    assert "--config is required" in capsys.readouterr().err
    assert main([*base, "-o", "run", "--config", "fit.toml"]) == 1
    assert "--threshold is required" in capsys.readouterr().err
    assert main([*base, "-o", "run", "--resume"]) == 1
    assert "holds no learning run" in capsys.readouterr().err
    assert learn() == 0
    assert learn() == 1
    assert "already holds a learning run: add --resume" in capsys.readouterr().err
    assert main([*base, "-o", "run", "--resume", "--temperature", "500"]) == 1
    assert "temperature 500.0 (the run used 600.0)" in capsys.readouterr().err


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    """The shell commands of the README's "Active learning on the fly", as written."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## Active learning on the fly")[1].split("\n## ")[0]
    block = section.split("```bash\n")[1].split("```")[0].replace("\\\n", " ")
    lines = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == ["python", "gapx", "gapx"]
    monkeypatch.chdir(tmp_path)
    os.symlink(os.path.join(ROOT, "examples"), "examples")
    words = shlex.split(lines[0])
    subprocess.run([sys.executable, *words[1:]], check=True)
    for line in lines[1:]:
        assert main(shlex.split(line)[1:] + ["-q"]) == 0
    assert "learned to step 400" in capsys.readouterr().out
    assert len(RunFolder("cu-run").read_calls()) > 2


def test_learn_help_names_every_option(capsys):
    assert main(["learn", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--oracle", "--config", "--steps", "--temperature", "--timestep"):
        assert option in text
    for option in ("--threshold", "--resume", "--min-interval", "--max-calls", "--seed"):
        assert option in text
    for option in ("--std-interval", "calls.extxyz", "model.gapx", "log.csv", "learning.png"):
        assert option in text
