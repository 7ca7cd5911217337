"""Fit benchmark: gapx.GAP on rMD17 ethanol with the gap_fit reference settings.

Trains on ``rmd17_ethanol_train_01`` (1000 frames) with SOAP cutoff 5, transition width 1,
n_max 8, l_max 6, atom_sigma 0.5, zeta 4, delta 1, 1000 CUR sparse points per centre species,
sigma_energy 0.001, sigma_force 0.03, e0 average, sparse_jitter 1e-8 (the settings of the
gap_fit run in ``../shared/data/rmd17/README.md``), then reports the test-split energy and force
MAE, the fit wall time and the peak memory (``resource.getrusage``).

gap_fit reference (quippy-ase 0.10.3, 2 threads): test MAE 4.35 meV (energy per molecule),
24.2 meV/Å (force components), fit about 12.5 min.

``--smoke`` fits the 50-frame subset in tests/data with 50 sparse points per species (seconds).
"""

from __future__ import annotations

import argparse
import os

# gapx's OpenMP threads otherwise spin after each parallel region and starve OpenBLAS's threads
# (measured: 5-6x slower small GEMMs right after a SOAP call on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_info, write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GAP_FIT_REFERENCE = {"energy_mae_meV": 4.35, "force_mae_meV_per_A": 24.2, "fit_seconds": 750.0}


def errors(model, frames) -> tuple[float, float]:
    """Energy MAE (meV per frame) and force-component MAE (meV/Å)."""
    from gapx.evaluation import error_metrics

    e_ref, e_pred, f_ref, f_pred = [], [], [], []
    for atoms in frames:
        out = model.predict(atoms, std=False)
        e_ref.append(atoms.get_potential_energy())
        e_pred.append(out["energy"])
        f_ref.append(atoms.get_forces())
        f_pred.append(out["forces"])
    energy = error_metrics(np.array(e_ref) - np.array(e_pred))["mae"]
    forces = error_metrics(np.concatenate(f_ref) - np.concatenate(f_pred))["mae"]
    return 1000 * energy, 1000 * forces


def gap_fit_settings_model(species, n_sparse: int, verbose: bool = True):
    """gap_fit's ethanol settings (the reference in ../shared/data/rmd17/README.md) as a gapx
    model: SOAP 5/1/8/6/0.5, zeta 4, delta 1, ``n_sparse`` CUR points per species, sigma
    0.001/0.03, e0 average, jitter 1e-8."""
    import gapx

    soap = gapx.SOAP(
        species=species,
        cutoff=5.0,
        cutoff_transition_width=1.0,
        n_max=8,
        l_max=6,
        atom_sigma=0.5,
        zeta=4,
        delta=1.0,
        n_sparse=n_sparse,
        sparse_method="cur",
    )
    return gapx.GAP(
        [soap],
        sigma_energy=0.001,
        sigma_force=0.03,
        e0="average",
        sparse_jitter=1e-8,
        seed=0,
        verbose=verbose,
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        default=str(REPO.parent / "shared" / "data" / "rmd17"),
        help="folder with rmd17_ethanol_{train,test}_01.extxyz",
    )
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--n-sparse", type=int, default=1000, help="per centre species")
    parser.add_argument("--smoke", action="store_true", help="50 frames from tests/data")
    parser.add_argument("--json", default=None)
    parser.add_argument("--save", default=None, help="write the fitted model here")
    args = parser.parse_args(argv)

    import ase.io

    if args.smoke:
        train_path = REPO / "tests" / "data" / "ethanol_train_50.extxyz"
        test_path = REPO / "tests" / "data" / "ethanol_test_20.extxyz"
        args.n_sparse = min(args.n_sparse, 50)
    else:
        train_path = Path(args.data_dir) / "rmd17_ethanol_train_01.extxyz"
        test_path = Path(args.data_dir) / "rmd17_ethanol_test_01.extxyz"
    for path in (train_path, test_path):
        if not path.is_file():
            parser.error(f"{path} not found (use --data-dir)")
    train = ase.io.read(train_path, f":{args.n_train}")
    test = ase.io.read(test_path, f":{args.n_test}")

    model = gap_fit_settings_model(["C", "H", "O"], args.n_sparse)
    start, cpu_start = time.perf_counter(), time.process_time()
    summary = model.fit(train)
    fit_seconds = time.perf_counter() - start
    fit_cpu = time.process_time() - cpu_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if args.save:
        model.save(args.save)

    start = time.perf_counter()
    test_e, test_f = errors(model, test)
    predict_seconds = time.perf_counter() - start
    train_e, train_f = errors(model, train[:200])

    results = {
        "benchmark": "fit rMD17 ethanol (gap_fit reference settings)",
        "n_train": len(train),
        "n_test": len(test),
        "n_sparse": summary["n_sparse"],
        "fit_seconds": fit_seconds,
        "fit_cpu_seconds": fit_cpu,
        "phase_seconds": summary["phase_seconds"],
        "phase_cpu_seconds": summary["phase_cpu_seconds"],
        "peak_memory_MB": peak_mb,
        "test_energy_mae_meV": test_e,
        "test_force_mae_meV_per_A": test_f,
        "train200_energy_mae_meV": train_e,
        "train200_force_mae_meV_per_A": train_f,
        "predict_seconds_test_set": predict_seconds,
        "full_design_matrix_MB": summary["full_design_matrix_bytes"] / 1e6,
        "gap_fit_reference": GAP_FIT_REFERENCE,
        "smoke": args.smoke,
        "machine": machine_info(),
    }
    print(f"train {len(train)} frames, test {len(test)}, sparse {summary['n_sparse']}")
    print(f"fit wall time      {fit_seconds:8.1f} s   (gap_fit ~750 s on 2 threads)")
    print(f"fit CPU time       {fit_cpu:8.1f} s   (all threads; wall/CPU shows the load)")
    phases = ", ".join(f"{k} {v:.1f}" for k, v in summary["phase_seconds"].items())
    print(f"fit phases (wall s): {phases}")
    print(f"peak memory        {peak_mb:8.0f} MB")
    print(f"test energy MAE    {test_e:8.2f} meV     (gap_fit 4.35)")
    print(f"test force MAE     {test_f:8.2f} meV/Å   (gap_fit 24.2)")
    print(f"train energy MAE   {train_e:8.2f} meV     (first 200 frames; gap_fit 2.52 on all)")
    print(f"train force MAE    {train_f:8.2f} meV/Å   (gap_fit 20.4)")
    load = results["machine"].get("load_average")
    print(f"load average {load} (a shared machine makes the times noisy)")
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
