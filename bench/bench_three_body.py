"""Three-body benchmark: energy + forces of a 1000-atom Si cell, gapx.ThreeBody (C++ engine and
NumPy path) vs quippy's angle_3b (QUIP/GAP).

Both codes get a three-body model of the same size: cutoff 4 Å (16 neighbours per atom in
diamond, 240 triplet rows per atom), transition width 0.5, the ard_se kernel with length
scales 1, delta 0.5 and the same number of sparse points (random), fitted to the same rattled,
strained 8-atom diamond cells (Lennard-Jones labels, as bench_predict.py's). The QUIP model is
made by quippy-ase's ``gap_fit`` and evaluated with ``quippy.potential.Potential``; the gapx
model by ``gapx.GAP.fit`` and ``GAP.predict(std=False)``. Both run in this process with the
same ``OMP_NUM_THREADS``. gapx is timed twice: ``GAP.predict`` (the C++ engine's
ThreeBodyTerm) and the NumPy path it replaced (``GAP._mean_python``, the neighbour list C++).

``--smoke``: 2 frames, 10 sparse points, a 64-atom prediction cell (seconds).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_info, time_call, write_json  # noqa: E402
from bench_predict import (  # noqa: E402
    gap_fit_binary,
    quip_energy_and_forces,
    run_gap_fit,
    training_frames,
)

CUTOFF = 4.0
WIDTH = 0.5
THETA = 1.0
DELTA = 0.5


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-sparse", type=int, default=200)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--min-time", type=float, default=3.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from ase.build import bulk

    import gapx

    if args.smoke:
        frames, n_sparse, repeat, min_time = training_frames(2, 1), 10, 2, 0.01
    else:
        frames, n_sparse, repeat, min_time = training_frames(8, 1), args.n_sparse, 5, args.min_time
    cell = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
    cell.rattle(0.05, seed=1)
    n_atoms = len(cell)
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    term = gapx.ThreeBody(
        cutoff=CUTOFF,
        cutoff_transition_width=WIDTH,
        theta=THETA,
        delta=DELTA,
        n_sparse=n_sparse,
        sparse_method="random",
    )
    model = gapx.GAP([term], sigma_energy=0.001, sigma_force=0.03, verbose=False)
    start = time.perf_counter()
    model.fit(frames)
    gapx_fit = time.perf_counter() - start
    n_rows = term.rows(cell).n_rows
    rows_mean, _, _ = time_call(lambda: term.rows(cell), min_time)
    gapx_mean, gapx_std, gapx_n = time_call(lambda: model.predict(cell, std=False), min_time)

    def numpy_call():
        return model._mean_python(cell, gapx.neighbors.StructureContext(cell))

    numpy_mean, numpy_std, numpy_n = time_call(numpy_call, min_time)
    results = {
        "benchmark": "three-body energy+forces, diamond Si",
        "n_atoms": n_atoms,
        "n_triplet_rows": n_rows,
        "n_sparse": n_sparse,
        "omp_num_threads": threads,
        "gapx": {
            "seconds_per_call": gapx_mean,
            "std": gapx_std,
            "repeats": gapx_n,
            "rows_seconds": rows_mean,
            "fit_seconds": gapx_fit,
        },
        "gapx_numpy_path": {"seconds_per_call": numpy_mean, "std": numpy_std, "repeats": numpy_n},
        "speedup_engine_vs_numpy": numpy_mean / gapx_mean,
        "smoke": args.smoke,
    }
    print(
        f"{n_atoms} Si atoms, {n_rows} triplet rows, {n_sparse} sparse points, "
        f"OMP_NUM_THREADS={threads}"
    )
    print(
        f"gapx    {gapx_mean:8.3f} s per energy+forces (+- {gapx_std:.3f}), C++ engine; "
        f"NumPy rows alone {rows_mean:.3f} s"
    )
    print(f"gapx    {numpy_mean:8.3f} s per energy+forces (+- {numpy_std:.3f}), NumPy path")
    print(f"speed-up gapx engine vs NumPy path: {numpy_mean / gapx_mean:.1f}x")
    if gap_fit_binary() is None:
        print("quippy-ase (gap_fit) not installed: QUIP comparison skipped")
    else:
        gap = (
            f"angle_3b cutoff={CUTOFF} cutoff_transition_width={WIDTH} n_sparse={n_sparse} "
            f"covariance_type=ard_se delta={DELTA} theta_uniform={THETA} sparse_method=random "
            "add_species=T"
        )
        with tempfile.TemporaryDirectory(prefix="gapx_bench_three_body_") as folder:
            start = time.perf_counter()
            xml = run_gap_fit(frames, gap, Path(folder))
            quip_fit = time.perf_counter() - start
            quip_call = quip_energy_and_forces(xml, cell)

            quip_mean, quip_std, quip_n = time_call(quip_call, min_time)
        results["quip"] = {
            "seconds_per_call": quip_mean,
            "std": quip_std,
            "repeats": quip_n,
            "fit_seconds": quip_fit,
        }
        results["speedup_vs_quip"] = quip_mean / gapx_mean
        print(f"quippy  {quip_mean:8.3f} s per energy+forces (+- {quip_std:.3f})")
        print(f"speed-up gapx vs quippy: {quip_mean / gapx_mean:.1f}x")
        print(f"fit: gapx {gapx_fit:.1f} s, gap_fit {quip_fit:.1f} s ({len(frames)} frames)")
    results["machine"] = machine_info(packages=("quippy-ase",))
    print(f"load average {results['machine'].get('load_average')} (shared machine: noisy)")
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
