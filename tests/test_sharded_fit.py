"""Fits of training data in files (shards), in this process: scan, blockwise sparse selection,
checkpoints and resume, memory_limit."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from structures import strained_fcc_cells

import gapx
from gapx import checkpoint, sharded_fit
from gapx.dataset import data_summary, merge_summaries
from gapx.gp import candidates
from gapx.gp.selection import leverage_scores


def make_model(**extra):
    # A small block memory: 24 frames give about 20 design blocks, so several tree groups.
    settings = dict(
        sigma_energy=0.002,
        sigma_force=0.05,
        sigma_virial=0.05,
        seed=3,
        block_memory=6e4,
        verbose=False,
    )
    settings.update(extra)
    return gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.0, n_sparse=12, delta=0.5),
            gapx.SOAP(
                species=["Cu"], cutoff=3.5, n_max=3, l_max=2, atom_sigma=0.5, zeta=2,
                delta=0.2, n_sparse=20,
            ),
        ],
        **settings,
    )  # fmt: skip


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    frames = strained_fcc_cells(np.random.default_rng(0), 24, repeat=(2, 2, 2), rattle=0.1)
    for k in range(3):
        ase.io.write(folder / f"part{k}.xyz", frames[8 * k : 8 * k + 8], format="extxyz")
    return folder, frames


def test_scan_reduces_the_summary_of_all_shards(shards):
    folder, frames = shards
    scans = gapx.shards.scan_shards(make_model(), gapx.shards.shard_paths(str(folder / "*.xyz")))
    assert [s.n_frames for s in scans] == [8, 8, 8]
    assert gapx.shards.combined_summary(scans) == data_summary(frames)
    assert merge_summaries([data_summary(frames[:5]), data_summary(frames[5:])]) == data_summary(
        frames
    )
    e0 = sharded_fit.shard_e0(make_model(), scans, [np.ones(8, bool)] * 3)
    expected = np.mean([a.get_potential_energy() / len(a) for a in frames])
    assert e0 == {"Cu": pytest.approx(expected, rel=1e-14)}


def test_sharded_fit_is_close_to_the_in_memory_fit(shards):
    folder, frames = shards
    # Blocks of two frames: sparse candidates merged from 12 blocks.
    in_memory = make_model(block_memory=1e6)
    in_memory.fit(frames)
    sharded = make_model(block_memory=1e6)
    summary = sharded.fit(str(folder / "*.xyz"))
    assert summary["n_shards"] == 3
    assert summary["n_sparse"] == in_memory.summary["n_sparse"]
    test = strained_fcc_cells(np.random.default_rng(1), 4, repeat=(2, 2, 2), rattle=0.1)

    def force_rmse(model):
        errors = [model.predict(a, std=False)["forces"] - a.get_forces() for a in test]
        return float(np.sqrt(np.mean(np.square(errors))))

    # Another draw of the same CUR distribution: errors agree to a few per cent.
    assert force_rmse(sharded) == pytest.approx(force_rmse(in_memory), rel=0.05)
    again = make_model(block_memory=1e6)
    again.fit(sorted(str(p) for p in folder.glob("*.xyz")))
    np.testing.assert_array_equal(again.alpha, sharded.alpha)


def test_keyed_candidates_merge_to_the_global_sample():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)) * np.array([3, 2, 1, 0.5, 0.2, 0.1])
    # Leverage scores from the summed Gram matrix equal the gathered rows' scores.
    P = candidates.leverage_projection(X[:100].T @ X[:100] + X[100:].T @ X[100:], 4)
    np.testing.assert_allclose(np.sum((X @ P) ** 2, 1), leverage_scores(X, 4), rtol=1e-9)

    class Term:
        sparse_method, n_sparse = "cur", 10

    parts = [candidates.block_candidates(Term, X[i : i + 50], i // 50, P, rng) for i in (0, 50)]
    merged = candidates.merge_candidates(Term, parts[0], parts[1], rng)
    keys = np.concatenate([p.keys for p in parts])
    rows = np.concatenate([p.points for p in parts])
    # The merge keeps exactly the smallest keys of the union, in data order.
    best = np.sort(np.argsort(keys)[:10])
    np.testing.assert_array_equal(merged.points, rows[best])


def test_resume_after_a_failure_equals_the_uninterrupted_fit(shards, tmp_path, monkeypatch):
    folder, _ = shards
    data = str(folder / "*.xyz")
    uninterrupted = make_model()
    uninterrupted.fit(data)

    path = tmp_path / "fit.checkpoint"
    real_factor = sharded_fit.block_factor
    done = []

    def failing_factor(shared, block):
        # The kill: a corrupt frame met in the 11th design block (groups of 8 blocks).
        if len(done) == 10:
            raise ValueError(f"shard {block.path}: simulated corrupt frame")
        done.append(block.index)
        return real_factor(shared, block)

    monkeypatch.setattr(sharded_fit, "block_factor", failing_factor)
    interrupted = make_model()
    with pytest.raises(ValueError, match="simulated corrupt frame"):
        interrupted.fit(data, checkpoint=path, checkpoint_interval=0)
    assert interrupted.alpha is None  # transactional
    monkeypatch.setattr(sharded_fit, "block_factor", real_factor)
    assert checkpoint.read(path, _fingerprint(path)).groups_done == 1

    resumed = make_model()
    resumed.fit(data, checkpoint=path, resume=True)
    np.testing.assert_array_equal(resumed.alpha, uninterrupted.alpha)
    np.testing.assert_array_equal(resumed.R, uninterrupted.R)

    changed = make_model(sigma_force=0.06)
    with pytest.raises(ValueError, match="other data or settings"):
        changed.fit(data, checkpoint=path, resume=True)


def _fingerprint(path):
    header, _ = gapx.io.read_model_file(path)
    return header["checkpoint"]["fingerprint"]


def test_memory_limit_sizes_blocks_and_refuses_an_impossible_fit(shards, monkeypatch):
    folder, _ = shards
    data = str(folder / "*.xyz")
    limited = make_model(block_memory=1e9, memory_limit=4e6)
    summary = limited.fit(data)
    assert max(summary["process_peak_bytes"].values()) <= 4e6 * (1 + 1e-12)
    # Blocks were shrunk below block_memory to stay under the limit.
    assert summary["estimated_peak_bytes"] - summary["solver_bytes"] < 1e6

    def no_work(*args):
        raise AssertionError("descriptors computed before the fit was refused")

    monkeypatch.setattr(sharded_fit, "_block_values", no_work)
    with pytest.raises(ValueError, match=r"memory_limit 9.8 KiB: .* R factors of 32 sparse"):
        make_model(memory_limit=1e4).fit(data)
    with pytest.raises(ValueError, match="largest frame needs"):
        make_model(memory_limit=2e5).fit(data)


def test_bad_shards_are_named_before_the_fit(shards, tmp_path):
    folder, frames = shards
    with pytest.raises(FileNotFoundError, match="no shard matches"):
        make_model().fit(str(tmp_path / "none*.xyz"))
    with pytest.raises(FileNotFoundError, match="file not found"):
        make_model().fit([str(folder / "part0.xyz"), str(tmp_path / "missing.xyz")])
    broken = tmp_path / "broken.xyz"
    ase.io.write(broken, frames[:3], format="extxyz")
    lines = broken.read_text().splitlines()
    broken.write_text("\n".join(lines[: len(lines) - 5]) + "\n")
    with pytest.raises(ValueError, match=f"cannot read shard {broken}"):
        make_model().fit([str(folder / "part0.xyz"), str(broken)])
    with pytest.raises(ValueError, match="named twice"):
        make_model().fit([str(folder / "part0.xyz"), str(folder / "part0.xyz")])


def test_cli_fit_of_shards_resumes_and_refuses_other_settings(shards, tmp_path, capsys):
    from gapx.cli import main

    folder, _ = shards
    config = tmp_path / "fit.toml"
    config.write_text(
        '[[terms]]\ntype = "two_body"\ncutoff = 4.0\ndelta = 0.5\nn_sparse = 8\n\n'
        "[fit]\nsigma_energy = 0.002\nsigma_force = 0.05\nsigma_virial = 0.05\n"
        "block_memory = 3e5\n"
    )
    base = ["fit", str(folder / "part*.xyz"), "-c", str(config), "--checkpoint-interval", "0"]
    assert main([*base, "-o", str(tmp_path / "a.gapx")]) == 0
    assert "data: 24 frames, 768 atoms" in capsys.readouterr().out
    resumed = [*base, "-o", str(tmp_path / "b.gapx"), "--checkpoint", str(tmp_path / "c")]
    assert main(resumed) == 0
    assert main([*resumed, "--resume"]) == 0  # a complete checkpoint: nothing left to fold
    a, b = gapx.load(str(tmp_path / "a.gapx")), gapx.load(str(tmp_path / "b.gapx"))
    np.testing.assert_array_equal(a.alpha, b.alpha)
    capsys.readouterr()
    assert main([*resumed, "--resume", "--set", "fit.seed=1"]) == 1
    assert "other data or settings" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "d.gapx"), "--memory-limit", "1000"]) == 1
    assert "memory_limit" in capsys.readouterr().err


@pytest.mark.slow
def test_blockwise_cur_is_as_accurate_as_the_gathered_cur_on_bundled_ethanol(tmp_path):
    from pathlib import Path

    data = Path(__file__).parent / "data"
    train = ase.io.read(data / "ethanol_train_50.extxyz", ":")
    test = ase.io.read(data / "ethanol_test_20.extxyz", ":")
    for k in range(5):
        ase.io.write(tmp_path / f"s{k}.xyz", train[10 * k : 10 * k + 10], format="extxyz")

    def force_rmse(seed, source):
        model = gapx.GAP(
            [
                gapx.TwoBody(cutoff=4.0, n_sparse=10, delta=1.0, sparse_method="uniform"),
                gapx.SOAP(
                    species=["C", "H", "O"], cutoff=4.0, n_max=3, l_max=2, atom_sigma=0.5,
                    zeta=4, delta=1.0, n_sparse=40, sparse_method="cur",
                ),
            ],
            sigma_energy=0.0005, sigma_force=0.02, seed=seed, block_memory=2e5, verbose=False,
        )  # fmt: skip
        model.fit(source)
        errors = [model.predict(a, std=False)["forces"] - a.get_forces() for a in test]
        return float(np.sqrt(np.mean(np.square(errors))))

    # One draw to the next varies by about 7 % here (measured: 4 seeds, 0.214-0.244 eV/Å);
    # the mean over seeds of the blockwise draws is the gathered one's within a few per cent.
    seeds = range(3)
    gathered = np.mean([force_rmse(seed, train) for seed in seeds])
    blockwise = np.mean([force_rmse(seed, str(tmp_path / "s*.xyz")) for seed in seeds])
    assert blockwise == pytest.approx(gathered, rel=0.04)
