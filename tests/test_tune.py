"""gapx tune: CV splits, bad input, and an end-to-end search whose TUNED.toml fits."""

from __future__ import annotations

import json
import os

import ase.io
import pytest

from gapx.cli import main
from gapx.tuning import kfold_splits, search_space

DATA = os.path.join(os.path.dirname(__file__), "data")
TRAIN = os.path.join(DATA, "ethanol_train_50.extxyz")

BASE = """\
[[terms]]
type = "soap"
cutoff = 3.5
n_max = 3
l_max = 2
zeta = 2
n_sparse = 8

[fit]
sigma_energy = 0.001
sigma_force = 0.03

[tune]
cutoff = [3.0, 3.5]
n_max = [2, 3]
l_max = [1, 2]
zeta = [1, 2]
n_sparse = [4, 8]
two_body = [false]
"""


def test_kfold_splits_are_by_frame_deterministic_and_spread_config_types():
    frames = ase.io.read(TRAIN, ":20")
    for k, atoms in enumerate(frames):
        atoms.info["config_type"] = "a" if k < 8 else "b"
    splits = kfold_splits(frames, 4, seed=3)
    assert splits == kfold_splits(frames, 4, seed=3)
    assert splits != kfold_splits(frames, 4, seed=4)
    tests = [test for _, test in splits]
    assert sorted(n for t in tests for n in t) == list(range(20))  # each frame tested once
    for train, test in splits:
        assert not set(train) & set(test)
        assert sum(n < 8 for n in test) == 2  # 8 frames of type a over 4 folds
    with pytest.raises(ValueError, match="folds"):
        kfold_splits(frames[:3], 4, seed=0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"cutof": [3, 4]}, "unknown hyperparameter 'cutof'"),
        ({"cutoff": [5.0, 4.0]}, "empty or inverted"),
        ({"atom_sigma": [0.5, 0.5]}, "empty or inverted"),
    ],
)
def test_search_space_rejects_bad_ranges(table, message):
    with pytest.raises(ValueError, match=message):
        search_space(table)


def _write(tmp_path, text=BASE):
    path = tmp_path / "base.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("extra", "args", "message"),
    [
        ("", ["--budget", "1"], "too small"),
        ("", ["--budget", "60", "--folds", "60"], "fewer than the 60 folds"),
        ("cutoff_max = 3\n", ["--budget", "60"], "unknown hyperparameter"),
        ("", ["--budget", "60", "--folds", "1"], "at least 2"),
    ],
)
def test_tune_bad_input_is_one_line_before_any_work(tmp_path, capsys, extra, args, message):
    config = _write(tmp_path, BASE + extra)
    code = main(["tune", TRAIN, "-c", config, "-o", str(tmp_path / "T.toml"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "T.toml").exists()


def test_tune_end_to_end_writes_a_config_gapx_fit_accepts(tmp_path, capsys):
    frames = ase.io.read(TRAIN, ":24")
    train = str(tmp_path / "train.extxyz")
    ase.io.write(train, frames)
    tuned, plots = str(tmp_path / "TUNED.toml"), str(tmp_path / "plots")
    code = main(
        [
            "tune",
            train,
            "-c",
            _write(tmp_path),
            "--budget",
            "25",
            "--folds",
            "2",
            "--trials",
            "2",
            "-o",
            tuned,
            "--plots",
            plots,
        ]
    )
    assert code == 0, capsys.readouterr().err
    text = open(tuned).read()
    assert text.startswith("# gapx tune: complete")
    report = json.load(open(os.path.join(plots, "tune_report.json")))
    assert report["n_trials"] == 2
    assert report["complete"]
    assert (
        report["evidence"]["log_evidence"]["after"] >= report["evidence"]["log_evidence"]["before"]
    )
    assert {"n_frames", "n_sparse"} <= set(report["learning_curves"])
    for name in ("hyperparameters.png", "learning_curves.png"):
        assert os.path.getsize(os.path.join(plots, name)) > 0
    model = str(tmp_path / "model.gapx")
    assert main(["fit", train, "-c", tuned, "-o", model]) == 0
    assert os.path.isfile(model)


def test_tune_budget_ending_mid_search_writes_best_so_far(tmp_path, capsys):
    frames = ase.io.read(TRAIN, ":16")
    train = str(tmp_path / "train.extxyz")
    ase.io.write(train, frames)
    tuned = str(tmp_path / "TUNED.toml")
    code = main(
        [
            "tune",
            train,
            "-c",
            _write(tmp_path),
            "--budget",
            "15",
            "--folds",
            "2",
            "--trials",
            "1000",
            "-o",
            tuned,
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert open(tuned).read().startswith("# gapx tune: INCOMPLETE")
    assert json.load(open(str(tmp_path / "TUNED.json")))["complete"] is False


def test_cross_validate_reports_each_folds_running_score_for_pruning():
    """The score a trial reports after fold i (what Optuna's median pruner compares) is the CV
    score of folds 0..i alone, and an exception from the callback stops the trial there."""
    import gapx
    from gapx.tuning import cross_validate

    frames = ase.io.read(TRAIN, ":12")
    splits = kfold_splits(frames, 3, seed=0)

    def make():
        soap = gapx.SOAP(species=["C", "H", "O"], cutoff=3.5, n_max=3, l_max=2, n_sparse=6)
        return gapx.GAP([soap], sigma_energy=0.001, sigma_force=0.03, verbose=False)

    reported = []
    full = cross_validate(
        make, frames, splits, (10.0, 1.0), on_fold=lambda i, s: reported.append(s)
    )
    assert len(reported) == 2  # after folds 0 and 1; the last fold's score is the result
    for i, score in enumerate(reported):
        assert score == pytest.approx(
            cross_validate(make, frames, splits[: i + 1], (10.0, 1.0)).score
        )
    assert reported[-1] != pytest.approx(full.score)

    class Stop(Exception):
        pass

    def stop(i, score):
        raise Stop

    with pytest.raises(Stop):
        cross_validate(make, frames, splits, (10.0, 1.0), on_fold=stop)


def test_tune_on_a_dask_cluster_runs_trials_on_the_workers_deterministically(tmp_path, capsys):
    """With --dask, each trial's CV runs on a worker, a batch of trials (one per worker) at a
    time; the trials and their scores are the same on a rerun."""
    distributed = pytest.importorskip("dask.distributed")
    frames = ase.io.read(TRAIN, ":16")
    train = str(tmp_path / "train.extxyz")
    ase.io.write(train, frames)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        reports = []
        with distributed.get_task_stream(client) as stream:
            for run in range(2):
                out = str(tmp_path / f"T{run}.toml")
                args = ["tune", train, "-c", _write(tmp_path), "--budget", "60", "--folds", "2"]
                args += ["--trials", "4", "-o", out, "--dask", cluster.scheduler_address]
                assert main(args) == 0, capsys.readouterr().err
                reports.append(json.load(open(str(tmp_path / f"T{run}.json"))))
        workers = set(client.scheduler_info()["workers"])
    on_workers = [t for t in stream.data if "_cluster_trial" in str(t["key"])]
    assert len(on_workers) == 8  # 4 trials per run, none in this process
    assert {t["worker"] for t in on_workers} == workers
    first, second = ([(t["params"], t["score"]) for t in r["trials"]] for r in reports)
    assert len(first) == 4
    assert first == second
