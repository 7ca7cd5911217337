"""Calibration benchmark: are the predicted stds, once calibrated, right on data never seen?

A TwoBody + SOAP ethanol model (the bundled examples/ethanol_train.xyz, the settings of
examples/ethanol.toml) is calibrated on one half of examples/ethanol_test.xyz and judged on the
other half: Spearman rank correlation of |error| with std, mean squared z-score, 68 % and 95 %
interval coverage and miscalibration area, for energies per atom and force components, before
and after calibration. The issue's goals on the held-out half: Spearman >= 0.4, mean z^2 in
[0.5, 2], 95 % coverage in [0.85, 0.99]. Beside each Spearman, "(ideal)" is what a perfectly
calibrated model with the same stds would score (``uncertainty.calibrated_spearman``): an
observed value near it means the ranking is as good as these stds allow.

Measured (2 shared cores, 200 training frames, 50 + 50 test frames): held-out Spearman 0.360
(ideal 0.281) for energies and 0.321 (ideal 0.333) for force components; mean z^2 1.03 / 0.79;
95 % coverage 0.92 / 0.96.

``--smoke``: 20 training frames, 10 + 10 test frames, small SOAP (seconds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_info, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"spearman": (0.4, None), "mean_z2": (0.5, 2.0), "coverage_95": (0.85, 0.99)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import ase.io

    import gapx
    from gapx.uncertainty import QUANTITIES, calibration_metrics, residuals

    train = ase.io.read(ROOT / "examples" / "ethanol_train.xyz", ":")
    test = ase.io.read(ROOT / "examples" / "ethanol_test.xyz", ":")
    soap = {"cutoff": 4.0, "n_max": 6, "l_max": 4, "atom_sigma": 0.5, "zeta": 4, "n_sparse": 300}
    if args.smoke:
        train, test = train[:20], test[:20]
        soap.update(n_max=3, l_max=2, n_sparse=30)
    half = len(test) // 2
    calibration_frames, held_out = test[:half], test[half:]
    model = gapx.GAP(
        [gapx.TwoBody(cutoff=4.0, n_sparse=20), gapx.SOAP(species=["C", "H", "O"], **soap)],
        sigma_energy=0.0005,
        sigma_force=0.02,
        verbose=False,
    )
    model.fit(train)
    report = model.calibrate(calibration_frames)
    errors, stds = residuals(model, held_out)  # the model's own stds (calibration not applied)
    calibrated = {q: model.calibration.calibrated(q, s) for q, s in stds.items()}
    results = {
        "n_train": len(train),
        "n_calibration": len(calibration_frames),
        "n_held_out": len(held_out),
        "calibration": report["calibration"],
        "held_out_before": calibration_metrics(errors, stds),
        "held_out_after": calibration_metrics(errors, calibrated),
        "smoke": args.smoke,
    }
    print(
        f"ethanol: {len(train)} training frames, calibrated on {len(calibration_frames)}, "
        f"judged on {len(held_out)} held-out frames"
    )
    print(
        f"{'':24}{'Spearman':>9} {'(ideal)':>8} {'mean z2':>8} {'cov68':>6} {'cov95':>6} "
        f"{'area':>6}"
    )
    for quantity in QUANTITIES:
        for when in ("held_out_before", "held_out_after"):
            m = results[when][quantity]
            if not m["n"]:
                continue
            print(
                f"{quantity:8} {when.removeprefix('held_out_'):>6} (n={m['n']:5d}) "
                f"{m['spearman']:9.3f} {m['spearman_calibrated']:8.3f} {m['mean_z2']:8.3f} "
                f"{m['coverage_68']:6.3f} "
                f"{m['coverage_95']:6.3f} {m['miscalibration_area']:6.3f}"
            )
    met = {
        f"{q}.{name}": (lo is None or results["held_out_after"][q][name] >= lo)
        and (hi is None or results["held_out_after"][q][name] <= hi)
        for q in QUANTITIES
        for name, (lo, hi) in GOALS.items()
        if results["held_out_after"][q]["n"]
    }
    results["goals_met"] = met
    print("goals met on held-out data: " + ", ".join(f"{k} {v}" for k, v in met.items()))
    results["machine"] = machine_info()
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
