"""Sharded-fit benchmark: EMT-labelled 54-atom Cu cells in extxyz shards, fitted by one process
and on a Dask LocalCluster (as ``gapx fit 'SHARDS' --dask local`` does).

Reports, for both: wall time, the peak RSS of the fitting (client) process and of each worker
(``resource.getrusage``), the test errors (energy MAE per atom, force RMSE), and the ratios
cluster / single process. The goal of issue 15: client RSS < 0.5 GB whatever the data set's
size, test errors within 2 % of the single-process fit. The descriptor values of the data set
(what a gathered sparse selection would hold) are printed too: ``n_atoms * n_features * 8``.

Each fit runs in its own subprocess so that its peak RSS is its own. ``--smoke``: 8 small cells,
2 shards, 1 worker (seconds).

Measured (2-core VM, load ~1, ``OPENBLAS_NUM_THREADS=1 python bench/bench_shards.py --frames
10000 --shards 100 --workers 2``): 10 000 frames x 54 atoms, SOAP 252 features, descriptor
values 1.09 GB (1.014 GiB), 215 sparse points. Single process 517 s, peak RSS 362 MiB; cluster
383 s (0.74x), client peak RSS 192 MiB, workers 357 and 359 MiB; test energy MAE 0.0365
meV/atom and force RMSE 4.488 meV/A in both (equal to every printed digit). At 400 frames the
client peaked at 144 MiB, at 1 200 at 152 MiB.
"""

from __future__ import annotations

import argparse
import json
import os

# As in bench_fit: gapx's OpenMP threads otherwise spin and starve OpenBLAS's threads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_info, write_json  # noqa: E402


def cells(rng, n_frames: int, repeat) -> list:
    """Rattled, strained fcc Cu cells (primitive cell * ``repeat``: 54 atoms at (3, 3, 6)),
    labelled by ASE's EMT (energy, forces, stress)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    base = bulk("Cu", "fcc", a=3.61) * repeat
    frames = []
    for _ in range(n_frames):
        atoms = base.copy()
        eps = 0.02 * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.positions += 0.1 * rng.standard_normal(atoms.positions.shape)
        atoms.calc = EMT()
        results = {
            "energy": atoms.get_potential_energy(),
            "forces": atoms.get_forces(),
            "stress": atoms.get_stress(),
        }
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


def make_model(n_sparse: int, n_max: int, l_max: int, memory_limit=None):
    import gapx

    return gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.5, delta=0.5, n_sparse=15),
            gapx.SOAP(
                species=["Cu"], cutoff=4.5, n_max=n_max, l_max=l_max, atom_sigma=0.5, zeta=4,
                delta=0.2, n_sparse=n_sparse,
            ),
        ],
        sigma_energy=0.002, sigma_force=0.05, sigma_virial=0.05, seed=0,
        block_memory=64e6, memory_limit=memory_limit, verbose=False,
    )  # fmt: skip


def run_fit(args) -> None:
    """One fit in this process (``--role``); prints a JSON line of its measurements."""
    import gapx

    model = make_model(args.n_sparse, args.n_max, args.l_max, args.memory_limit)
    data = str(Path(args.data) / "train_*.xyz")
    start = time.perf_counter()
    workers = {}
    if args.role == "cluster":
        from dask.distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True,
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):  # fmt: skip
            model.fit(data, client=client)
            workers = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    else:
        model.fit(data)
    wall = time.perf_counter() - start
    model.save(args.model)
    client_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "wall_seconds": wall,
                "client_peak_rss_bytes": client_rss,
                "worker_peak_rss_bytes": sorted(v * 1024 for v in workers.values()),
                "planned_peak_bytes": model.summary["process_peak_bytes"],
                "n_sparse_total": model.summary["n_sparse_total"],
            }
        )
    )
    del gapx


def test_errors(model_path: str, test) -> dict:
    import gapx

    model = gapx.load(model_path)
    de, df = [], []
    for atoms in test:
        out = model.predict(atoms, std=False)
        de.append((out["energy"] - atoms.get_potential_energy()) / len(atoms))
        df.append(out["forces"] - atoms.get_forces())
    return {
        "energy_mae_meV_per_atom": 1000 * float(np.mean(np.abs(de))),
        "force_rmse_meV_per_A": 1000 * float(np.sqrt(np.mean(np.square(df)))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=400, help="training cells")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n-sparse", type=int, default=200)
    parser.add_argument("--n-max", type=int, default=8)
    parser.add_argument("--l-max", type=int, default=6)
    parser.add_argument("--memory-limit", type=float, default=None)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--role", choices=("single", "cluster"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        run_fit(args)
        return
    import ase.io

    repeat = (3, 3, 6)
    n_test = 20
    if args.smoke:
        args.frames, args.shards, args.workers, args.n_sparse = 8, 2, 1, 20
        args.n_max, args.l_max, repeat, n_test = 3, 2, (2, 2, 2), 2
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        train = cells(rng, args.frames, repeat)
        per_shard = -(-args.frames // args.shards)
        for k in range(args.shards):
            part = train[k * per_shard : (k + 1) * per_shard]
            if part:
                ase.io.write(Path(folder) / f"train_{k:04d}.xyz", part, format="extxyz")
        n_atoms = sum(len(a) for a in train)
        test = cells(rng, n_test, repeat)
        del train
        import gapx

        n_features = make_model(args.n_sparse, args.n_max, args.l_max).terms[1].n_features
        results = {"machine": machine_info(["numpy", "scipy", "dask", "distributed"])}
        results["settings"] = {
            "frames": args.frames, "atoms_per_frame": n_atoms // args.frames,
            "shards": args.shards, "workers": args.workers, "n_sparse": args.n_sparse,
            "n_max": args.n_max, "l_max": args.l_max, "soap_features": n_features,
            "descriptor_value_bytes": 8 * n_atoms * n_features,
        }  # fmt: skip
        for role in ("single", "cluster"):
            model_path = str(Path(folder) / f"{role}.gapx")
            command = [
                sys.executable, __file__, "--role", role, "--data", folder, "--model",
                model_path, "--frames", str(args.frames), "--workers", str(args.workers),
                "--n-sparse", str(args.n_sparse), "--n-max", str(args.n_max),
                "--l-max", str(args.l_max),
            ]  # fmt: skip
            if args.memory_limit:
                command += ["--memory-limit", str(args.memory_limit)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{role} fit failed:\n{done.stderr[-3000:]}")
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            measured.update(test_errors(model_path, test))
            results[role] = measured
        del gapx
    single, cluster = results["single"], results["cluster"]
    settings = results["settings"]
    print(
        f"{settings['frames']} frames x {settings['atoms_per_frame']} atoms in "
        f"{settings['shards']} shards, SOAP {settings['soap_features']} features: descriptor "
        f"values {settings['descriptor_value_bytes'] / 2**30:.3f} GiB"
    )
    for role in ("single", "cluster"):
        r = results[role]
        workers = ", ".join(f"{b / 2**20:.0f}" for b in r["worker_peak_rss_bytes"]) or "-"
        print(
            f"{role:8s} wall {r['wall_seconds']:7.1f} s  client peak RSS "
            f"{r['client_peak_rss_bytes'] / 2**20:6.0f} MiB  workers [{workers}] MiB  "
            f"E MAE {r['energy_mae_meV_per_atom']:.3f} meV/atom  F RMSE "
            f"{r['force_rmse_meV_per_A']:.2f} meV/A"
        )
    print(
        f"ratios cluster/single: wall {cluster['wall_seconds'] / single['wall_seconds']:.2f}, "
        f"client RSS {cluster['client_peak_rss_bytes'] / single['client_peak_rss_bytes']:.2f}, "
        f"force RMSE {cluster['force_rmse_meV_per_A'] / single['force_rmse_meV_per_A']:.4f}, "
        f"energy MAE {cluster['energy_mae_meV_per_atom'] / single['energy_mae_meV_per_atom']:.4f}"
    )
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
