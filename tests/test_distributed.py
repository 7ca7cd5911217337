"""Fitting on a dask.distributed cluster (a real LocalCluster with worker processes)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from structures import strained_fcc_cells

import gapx
from gapx.sharded_fit import block_factor as _real_block_factor

distributed = pytest.importorskip("dask.distributed")

# Block factors folded in another order round differently from the serial fold: same
# solution to this relative precision.
RELATIVE_AGREEMENT = 1e-8


def make_model():
    # A small block memory splits the 24 frames into several blocks, some taller than wide
    # (reduced to R on the worker) and some not.
    return gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.0, n_sparse=12, delta=0.5),
            gapx.SOAP(
                species=["Cu"],
                cutoff=3.5,
                n_max=3,
                l_max=2,
                atom_sigma=0.5,
                zeta=2,
                delta=0.2,
                n_sparse=20,
            ),
        ],
        sigma_energy=0.002,
        sigma_force=0.05,
        sigma_virial=0.05,
        seed=3,
        block_memory=2e5,
        verbose=False,
    )


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        yield dask_client


def test_cluster_fit_matches_local_fit_and_is_deterministic(client):
    frames = strained_fcc_cells(np.random.default_rng(0), 24, repeat=(2, 2, 2), rattle=0.1)
    test = strained_fcc_cells(np.random.default_rng(1), 3, repeat=(2, 2, 2), rattle=0.1)

    local = make_model()
    local.fit(frames)
    on_cluster = make_model()
    with distributed.get_task_stream(client) as stream:
        on_cluster.fit(frames, client=client)
    again = make_model()
    again.fit(frames, client=client)

    # The descriptors and design blocks really ran as tasks on the workers.
    names = {distributed.utils.key_split(task["key"]) for task in stream.data}
    assert {"descriptor_values", "block_factor"} <= names, names
    scale = np.max(np.abs(local.alpha))
    assert np.max(np.abs(on_cluster.alpha - local.alpha)) <= RELATIVE_AGREEMENT * scale
    np.testing.assert_array_equal(on_cluster.alpha, again.alpha)
    for atoms in test:
        expected = local.predict(atoms)
        got = on_cluster.predict(atoms)
        np.testing.assert_allclose(got["energy"], expected["energy"], rtol=RELATIVE_AGREEMENT)
        np.testing.assert_allclose(got["forces"], expected["forces"], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got["energy_std"], expected["energy_std"], rtol=1e-6)


def test_several_blocks_were_used():
    from gapx.blocks import frame_blocks, gradient_bytes

    model = make_model()
    frames = strained_fcc_cells(np.random.default_rng(0), 24, repeat=(2, 2, 2), rattle=0.1)
    blocks = frame_blocks(gradient_bytes(frames, model.terms), model.block_memory)
    # More blocks than the 2 x 2 workers kept in flight, so the submission window slides.
    assert len(blocks) > 4
    assert [k for b in blocks for k in b] == list(range(24))


def test_cli_fit_on_the_cluster(client, tmp_path, capsys):
    from gapx.cli import main

    ase_io = pytest.importorskip("ase.io")
    ase_io.write(
        tmp_path / "train.xyz",
        strained_fcc_cells(np.random.default_rng(4), 8, repeat=(2, 2, 2), rattle=0.1),
        format="extxyz",
    )
    (tmp_path / "fit.toml").write_text(
        '[[terms]]\ntype = "two_body"\ncutoff = 4.0\ndelta = 0.5\nn_sparse = 8\n\n'
        "[fit]\nsigma_energy = 0.002\nsigma_force = 0.05\nsigma_virial = 0.05\n"
    )
    models = {}
    for name, extra in [("local", []), ("cluster", ["--dask", client.scheduler.address])]:
        argv = [
            "fit",
            tmp_path / "train.xyz",
            "--config",
            tmp_path / "fit.toml",
            "-o",
            tmp_path / f"{name}.gapx",
            *extra,
        ]
        assert main([str(a) for a in argv]) == 0
        models[name] = gapx.load(str(tmp_path / f"{name}.gapx"))
    assert f"dask: connected to {client.scheduler.address}" in capsys.readouterr().out
    probe = strained_fcc_cells(np.random.default_rng(5), 1, repeat=(2, 2, 2), rattle=0.1)[0]
    np.testing.assert_allclose(
        models["cluster"].predict(probe)["forces"],
        models["local"].predict(probe)["forces"],
        rtol=1e-6,
        atol=1e-9,
    )


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory):
    ase_io = pytest.importorskip("ase.io")
    folder = tmp_path_factory.mktemp("shards")
    frames = strained_fcc_cells(np.random.default_rng(0), 24, repeat=(2, 2, 2), rattle=0.1)
    for k in range(3):
        ase_io.write(folder / f"part{k}.xyz", frames[8 * k : 8 * k + 8], format="extxyz")
    return folder


_opened: list[str] | None = None


def _record_opens(event, args):
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


def test_sharded_fit_on_the_cluster_reads_shards_on_the_workers(client, shard_folder):
    global _opened
    data = str(shard_folder / "*.xyz")
    local = make_model()
    local.fit(data)

    sys.addaudithook(_record_opens)
    _opened = []
    try:
        on_cluster = make_model()
        with distributed.get_task_stream(client) as stream:
            on_cluster.fit(data, client=client)
        again = make_model()
        again.fit(data, client=client)
        opened = [p for p in _opened if p.startswith(str(shard_folder))]
    finally:
        _opened = None
    # The client sent paths and frame ranges: it never opened a shard.
    assert opened == []
    names = {distributed.utils.key_split(task["key"]) for task in stream.data}
    assert {
        "scan_shard",
        "block_gram",
        "block_candidates",
        "block_factor",
        "merge_factors",
    } <= names
    scale = np.max(np.abs(local.alpha))
    assert np.max(np.abs(on_cluster.alpha - local.alpha)) <= RELATIVE_AGREEMENT * scale
    np.testing.assert_array_equal(on_cluster.alpha, again.alpha)

    # The tree's shape is fixed by the block order: one worker gives the same bits as two.
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as single,
    ):
        one_worker = make_model()
        one_worker.fit(data, client=single)
    np.testing.assert_array_equal(one_worker.alpha, on_cluster.alpha)
    np.testing.assert_array_equal(one_worker.R, on_cluster.R)


def _dying_block_factor(shared, block):
    """The real block task, except that the worker running block 3 dies the first time."""
    marker = f"{block.path}.died"
    if block.index == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return _real_block_factor(shared, block)


def test_a_worker_dying_mid_fit_leaves_the_result_unchanged(client, shard_folder, monkeypatch):
    from gapx import sharded_fit

    data = str(shard_folder / "*.xyz")
    expected = make_model()
    expected.fit(data, client=client)
    monkeypatch.setattr(sharded_fit, "block_factor", _dying_block_factor)
    survived = make_model()
    survived.fit(data, client=client)
    assert os.path.exists(f"{shard_folder / 'part0.xyz'}.died")  # a worker really died
    np.testing.assert_array_equal(survived.alpha, expected.alpha)
