"""Pool-based selection (gapx.select) and its command line (gapx select)."""

from __future__ import annotations

import json
import os

import ase.io
import numpy as np
import pytest
import scipy.linalg
from ase.build import bulk
from structures import emt_labelled, strained_fcc_cells

import gapx
from gapx.cli import main
from gapx.learning import select_frames
from gapx.learning.selection import _candidates, _frame_energies, _Groups

#: Posterior (co)variances recomputed independently agree to round-off (amplified by the
#: cancellation of prior and Nyström parts, hence not 1e-12).
COVARIANCE_RTOL = 1e-6
#: Gains recomputed densely agree to round-off of the rank-one downdates.
GAIN_RTOL = 1e-6
BASE = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 1)


@pytest.fixture(scope="module")
def model():
    """Two-body + small SOAP fitted to slightly strained, rattled 16-atom Cu cells (EMT)."""
    rng = np.random.default_rng(0)
    train = strained_fcc_cells(rng, 6, repeat=(2, 2, 1), strain=0.01, rattle=0.05)
    gap = gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.0, delta=0.5, n_sparse=10),
            gapx.SOAP(species=["Cu"], cutoff=4.0, n_max=3, l_max=2, zeta=2, delta=0.2, n_sparse=30),
        ],
        sigma_energy=0.002,
        sigma_force=0.05,
        # The regularisation the pools below were built with: an absolute 1e-8 eV^2, i.e.
        # 4e-8 of the two-body prior variance 0.5^2 (sparse_jitter is relative since issue 14).
        sparse_jitter=4e-8,
        verbose=False,
    )
    gap.fit(train)
    return gap


def rattled(scale: float, seed: int, amplitude: float = 0.03):
    """BASE with its cell scaled by ``scale`` and atoms rattled (unlabelled)."""
    atoms = BASE.copy()
    atoms.set_cell(BASE.cell.array * scale, scale_atoms=True)
    atoms.rattle(amplitude, seed=seed)
    return atoms


def near_duplicates_and_novel():
    pool = [rattled(1.0, seed) for seed in range(8)]
    pool.insert(5, rattled(1.10, 99))  # 10 % expanded: far from the training data
    return pool


def two_clusters():
    """Four rattles of a 7 % expanded cell, then four of a 4 % compressed one."""
    return [rattled(1.07, seed) for seed in range(4)] + [
        rattled(0.96, seed) for seed in range(10, 14)
    ]


def test_novel_frame_comes_first(model):
    pool = near_duplicates_and_novel()
    assert gapx.select(model, pool, 1).tolist() == [5]
    chosen = gapx.select(model, pool, 3)
    assert chosen[0] == 5
    assert len(set(chosen.tolist())) == 3


def test_batch_is_diverse_where_top_std_is_not(model):
    pool = two_clusters()
    stds = np.array([model.predict(a)["energy_std"] for a in pool])
    # The construction: every expanded frame is more uncertain than every compressed one, so the
    # two largest stds (and the two largest gains on their own) are both in the first cluster.
    assert stds[:4].min() > stds[4:].max()
    selection = select_frames(model, pool, 2)
    assert set(np.argsort(-selection.gains)[:2]) <= {0, 1, 2, 3}
    first, second = selection.indices
    assert first < 4 <= second
    # Choosing a frame removes most of what its near-duplicates could teach.
    assert selection.scores[1] < selection.scores[0]


def test_frame_variances_are_the_models_energies_std(model):
    groups = _Groups(model)
    for atoms in near_duplicates_and_novel()[3:6]:
        _, variance = _frame_energies(model, groups, atoms)
        np.testing.assert_allclose(
            np.sqrt(variance), model.predict(atoms)["energies_std"], rtol=COVARIANCE_RTOL
        )


def dense_posterior_covariance(model, atoms_list):
    """c0 between every atom of ``atoms_list`` from full kernel matrices, independently."""
    per_term = {}
    n_total = sum(len(a) for a in atoms_list)
    start = 0
    k_atoms = np.zeros((n_total, model.alpha.size))
    for atoms in atoms_list:
        for t, term in enumerate(model.terms):
            rows = term.rows(atoms)
            for kind in np.unique(rows.kinds):
                sel = rows.kinds == kind
                W = np.zeros((n_total, rows.n_rows))
                np.add.at(W, (start + rows.owner_atoms, rows.owner_rows), rows.owner_weights)
                per_term.setdefault((t, int(kind)), []).append((W[:, sel], rows.X[sel]))
        start += len(atoms)
    prior = np.zeros((n_total, n_total))
    for (t, kind), parts in per_term.items():
        W = np.hstack([w for w, _ in parts])
        X = np.vstack([x for _, x in parts])
        s = next(s for s in model.sparse_sets if (s.term, s.kind) == (t, kind))
        prior += s.delta**2 * W @ model.terms[t].kernel(X, X) @ W.T
        k_atoms[:, s.columns] = W @ (s.delta**2 * model.terms[t].kernel(X, s.points))
    nystrom = np.zeros_like(prior)
    for s in model.sparse_sets:
        v = scipy.linalg.solve_triangular(s.factor, k_atoms[:, s.columns].T, lower=True)
        nystrom += v.T @ v
    w = scipy.linalg.solve_triangular(model.R, k_atoms.T, trans="T")
    return prior - nystrom + w.T @ w


def test_gains_match_a_dense_greedy_computation(model):
    """The streamed rank-one updates equal conditioning a dense covariance on the chosen
    frames' candidate atoms."""
    pool = two_clusters()[2:6]
    noise = 0.003
    selection = select_frames(model, pool, 3, noise=noise, environments=3)
    groups = _Groups(model)
    candidates, offset = [], 0
    for atoms in pool:
        energies, variance = _frame_energies(model, groups, atoms)
        candidates.append(offset + _candidates(energies, variance, groups, 3, noise**2))
        offset += len(atoms)
    c0 = dense_posterior_covariance(model, pool)
    observed = []
    for step, frame in enumerate(selection.indices):
        S = candidates[frame]
        block = c0[np.ix_(S, S)]
        if observed:
            seen = np.asarray(observed)
            gram = c0[np.ix_(seen, seen)] + noise**2 * np.eye(seen.size)
            cross = c0[np.ix_(S, seen)]
            block = block - cross @ np.linalg.solve(gram, cross.T)
        gain = 0.5 * np.linalg.slogdet(np.eye(S.size) + block / noise**2)[1]
        np.testing.assert_allclose(selection.scores[step], gain, rtol=GAIN_RTOL)
        observed.extend(S.tolist())


def test_deterministic_and_ties_go_to_the_lowest_index(model):
    pool = near_duplicates_and_novel()
    a = select_frames(model, pool, 4)
    b = select_frames(model, [atoms.copy() for atoms in pool], 4)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)
    copies = [rattled(1.05, 7) for _ in range(3)]
    assert gapx.select(model, copies, 3).tolist() == [0, 1, 2]
    assert gapx.select(model, [BASE.copy(), *copies], 1).tolist() == [1]


def test_labels_in_the_pool_are_ignored(model):
    pool = near_duplicates_and_novel()
    labelled = [emt_labelled(atoms.copy()) for atoms in pool]
    np.testing.assert_array_equal(gapx.select(model, pool, 3), gapx.select(model, labelled, 3))


@pytest.mark.parametrize(
    ("n", "message"),
    [(0, "between 1 and the pool size 9"), (10, "got 10"), (1.5, "got 1.5"), (True, "True")],
)
def test_n_bounds(model, n, message):
    with pytest.raises(ValueError, match=message):
        gapx.select(model, near_duplicates_and_novel(), n)


def test_bad_pools_and_settings(model):
    pool = near_duplicates_and_novel()
    assert gapx.select(model, pool, len(pool)).tolist().count(5) == 1
    with pytest.raises(ValueError, match="species \\['Na'\\] are not in the model"):
        gapx.select(model, [bulk("Na", "bcc", a=4.2)], 1)
    with pytest.raises(TypeError, match="pool frame 0 is not an ase.Atoms"):
        gapx.select(model, [np.zeros(3)], 1)
    with pytest.raises(ValueError, match="noise"):
        gapx.select(model, pool, 1, noise=-1.0)
    with pytest.raises(ValueError, match="environments"):
        gapx.select(model, pool, 1, environments=0)
    unfitted = gapx.GAP([gapx.TwoBody(cutoff=4.0)], verbose=False)
    with pytest.raises(ValueError, match="not fitted"):
        gapx.select(unfitted, pool, 1)
    squeezed = BASE.copy()
    squeezed.positions[1] = squeezed.positions[0] + 0.05
    with pytest.raises(ValueError, match="overlap"):
        gapx.select(model, [squeezed], 1)


@pytest.fixture(scope="module")
def workdir(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("select")
    model.save(path / "m.gapx")
    ase.io.write(path / "pool.xyz", near_duplicates_and_novel(), format="extxyz")
    nacl = bulk("NaCl", "rocksalt", a=5.64)
    ase.io.write(path / "nacl.xyz", nacl, format="extxyz")
    return path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_chosen_frames_and_report(workdir, model, capsys):
    out_path, report_path = workdir / "chosen.xyz", workdir / "report.json"
    code, out, err = run_cli(
        capsys, "select", workdir / "m.gapx", workdir / "pool.xyz", "-n", 3,
        "-o", out_path, "--report", report_path, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert f"3 of 9 frames written to {out_path}" in out
    pool = ase.io.read(workdir / "pool.xyz", ":")
    selection = select_frames(gapx.load(workdir / "m.gapx"), pool, 3)
    chosen = ase.io.read(out_path, ":")
    assert [a.info["pool_index"] for a in chosen] == sorted(selection.indices.tolist())
    for atoms in chosen:
        index = atoms.info["pool_index"]
        np.testing.assert_allclose(atoms.positions, pool[index].positions, atol=1e-6)
        rank = atoms.info["select_rank"]
        assert selection.indices[rank] == index
        assert np.isclose(atoms.info["select_score"], selection.scores[rank])
        assert np.isclose(atoms.info["energy_std"], model.predict(pool[index])["energy_std"])
    report = json.loads(report_path.read_text())
    assert report["indices"] == selection.indices.tolist()
    assert report["indices"][0] == 5
    np.testing.assert_allclose(report["scores"], selection.scores)
    assert len(report["pool_gain"]) == len(report["pool_max_local_std"]) == 9
    assert report["chosen"][0]["energy_std"] > report["chosen"][1]["energy_std"]
    assert not [p for p in os.listdir(workdir) if p.endswith(".tmp")]  # no temporary files


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n", "0"], "-n must be between 1 and the pool size 9, got 0"),
        (["-n", "10"], "-n must be between 1 and the pool size 9, got 10"),
        (["-n", "2", "--environments", "0"], "--environments must be at least 1"),
        (["-n", "2", "--noise", "-0.1"], "--noise must be a positive energy"),
        (["-n", "1", "--pool", "{w}/nacl.xyz"], "are not in the model"),
        (["-n", "1", "--pool", "{w}/missing.xyz"], "file not found"),
        (["-n", "1", "--model", "{w}/missing.gapx"], "model file not found"),
        (["-n", "1", "-o", "{w}/no/such/dir/out.xyz"], "output folder does not exist"),
    ],
)
def test_cli_errors_leave_no_file(workdir, capsys, argv, message):
    argv = [a.format(w=workdir) for a in argv]
    model_path, pool_path = workdir / "m.gapx", workdir / "pool.xyz"
    if "--pool" in argv:
        pool_path = argv.pop(argv.index("--pool") + 1)
        argv.remove("--pool")
    if "--model" in argv:
        model_path = argv.pop(argv.index("--model") + 1)
        argv.remove("--model")
    output = workdir / "kept.xyz"
    output.write_text("an earlier result\n")
    if "-o" not in argv:
        argv += ["-o", str(output)]
    report = workdir / "error_report.json"
    code, out, err = run_cli(
        capsys, "select", model_path, pool_path, *argv, "--report", report, "-q"
    )
    assert code == 1
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert output.read_text() == "an earlier result\n"
    assert not report.exists()
    assert not [p for p in os.listdir(workdir) if p.endswith(".tmp")]  # no temporary files


def test_cli_failed_write_keeps_the_old_output(workdir, capsys, monkeypatch):
    """A write that fails half-way (here: the report) replaces neither file."""
    output = workdir / "kept2.xyz"
    output.write_text("an earlier result\n")

    def failing_dump(*args, **kwargs):
        raise ValueError("disk full")

    monkeypatch.setattr(json, "dump", failing_dump)
    code, _, err = run_cli(
        capsys, "select", workdir / "m.gapx", workdir / "pool.xyz", "-n", 2, "-o", output,
        "--report", workdir / "r2.json", "-q",
    )  # fmt: skip
    assert code == 1
    assert "disk full" in err
    assert output.read_text() == "an earlier result\n"
    assert not (workdir / "r2.json").exists()
    assert not [p for p in os.listdir(workdir) if p.endswith(".tmp")]  # no temporary files


def test_cli_help_and_usage(capsys):
    assert main(["select", "--help"]) == 0
    assert "usage: gapx select" in capsys.readouterr().out
    assert main(["select", "m.gapx", "pool.xyz", "-o", "x.xyz"]) == 2  # -n is required
    assert "-n" in capsys.readouterr().err
