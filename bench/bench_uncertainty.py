"""Uncertainty benchmark: cost of the predictive stds against the mean, and its scaling in atoms.

A TwoBody + SOAP (n_max 8, l_max 6, cutoff 5 Å) model with 20 + 500 sparse points, fitted to
rattled, strained 64-atom diamond Si cells (Lennard-Jones labels: they change the weights, not
the cost), predicts 1000- and 4096-atom cells with ``std=False``, ``std="energy"`` (energies_std,
energy_std) and ``std=True`` (also forces_std, stress_std). Printed: µs per atom for each, the
ratios to the mean per size, and the per-atom cost at 4096 atoms relative to 1000 (1.0 = linear
in atoms).

``--smoke``: 8-atom training cells, 10 sparse points, 64- and 216-atom cells (seconds).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_info, time_call, write_json  # noqa: E402
from bench_predict import SOAP_SETTINGS, training_frames  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--min-time", type=float, default=3.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from ase.build import bulk

    import gapx

    if args.smoke:
        frames, n_sparse, repeats, min_time = training_frames(2, 1), 10, (2, 3), 0.01
    else:
        frames, n_sparse, repeats, min_time = training_frames(8, 2), 500, (5, 8), args.min_time
    model = gapx.GAP(
        [
            gapx.TwoBody(cutoff=5.0, n_sparse=20),
            gapx.SOAP(species=["Si"], n_sparse=n_sparse, sparse_method="cur", **SOAP_SETTINGS),
        ],
        sigma_energy=0.001,
        sigma_force=0.03,
        verbose=False,
    )
    model.fit(frames)
    results = {"n_sparse": int(model.alpha.size), "sizes": {}, "smoke": args.smoke}
    print(f"TwoBody + SOAP, {model.alpha.size} sparse points")
    modes = {"mean": False, "energy_std": "energy", "std": True}
    print(f"{'atoms':>6} " + " ".join(f"{m + ' us/atom':>16}" for m in modes) + "  ratios")
    for repeat in repeats:
        cell = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
        cell.rattle(0.05, seed=1)
        n_atoms = len(cell)
        row = {}
        for name, std in modes.items():
            mean, spread, _ = time_call(lambda c=cell, s=std: model.predict(c, std=s), min_time)
            row[f"{name}_us_per_atom"] = 1e6 * mean / n_atoms
            row[f"{name}_spread_us_per_atom"] = 1e6 * spread / n_atoms
        for name in ("energy_std", "std"):
            row[f"{name}_over_mean"] = row[f"{name}_us_per_atom"] / row["mean_us_per_atom"]
        results["sizes"][n_atoms] = row
        print(
            f"{n_atoms:6d} "
            + " ".join(f"{row[f'{m}_us_per_atom']:16.1f}" for m in modes)
            + f"  energy_std {row['energy_std_over_mean']:.2f}x, std {row['std_over_mean']:.2f}x"
        )
    small, large = (results["sizes"][n] for n in sorted(results["sizes"]))
    results["std_per_atom_large_over_small"] = large["std_us_per_atom"] / small["std_us_per_atom"]
    print(
        "per-atom std cost, largest over smallest cell: "
        f"{results['std_per_atom_large_over_small']:.2f} (1.0 = linear in atoms)"
    )
    results["machine"] = machine_info()
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
