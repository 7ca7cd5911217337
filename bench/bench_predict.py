"""Prediction benchmark: energy + forces of a 1000-atom Si cell, gapx vs quippy-ase (QUIP/GAP).

Both codes get a model of the same size: SOAP cutoff 5, transition width 1, n_max 8, l_max 6,
atom_sigma 0.5, zeta 4, delta 1 and the same number of sparse points (CUR), fitted to the same
small training set of rattled, strained 64-atom diamond Si cells. The QUIP model is made by
quippy-ase's own ``gap_fit`` binary and evaluated with ``quippy.potential.Potential``; the gapx
model by ``gapx.GAP.fit`` and ``GAP.predict(std=False)``. The training labels come from a
Lennard-Jones potential: they do not change the cost of a prediction, only the weights. Both run
in this process with the same ``OMP_NUM_THREADS``.

``--smoke``: 8-atom cells, 10 sparse points, a 64-atom prediction cell (seconds).
"""

from __future__ import annotations

import argparse
import os

# gapx's OpenMP threads otherwise spin after each parallel region and starve OpenBLAS's threads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_info, time_call, write_json  # noqa: E402

SOAP_SETTINGS = dict(
    cutoff=5.0, cutoff_transition_width=1.0, n_max=8, l_max=6, atom_sigma=0.5, zeta=4, delta=1.0
)


def training_frames(n_frames: int, repeat: int, seed: int = 0) -> list:
    from ase.build import bulk
    from ase.calculators.lj import LennardJones

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
        strain = np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
        atoms.calc = LennardJones(sigma=2.1, epsilon=1.0, rc=5.0)
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        atoms.info["energy"] = energy
        atoms.arrays["forces"] = forces
        frames.append(atoms)
    return frames


def gap_fit_binary() -> str | None:
    try:
        import quippy
    except ImportError:
        return None
    candidate = Path(quippy.__file__).parent / "gap_fit"
    if candidate.is_file():
        return str(candidate)
    return shutil.which("gap_fit")


def fit_quip(frames, n_sparse: int, folder: Path, two_body: str = "") -> Path:
    """gap_fit's model of ``frames``: the SOAP of SOAP_SETTINGS, after ``two_body`` (a
    ``distance_2b ...`` descriptor string, or none)."""
    s = SOAP_SETTINGS
    gap = (
        f"soap cutoff={s['cutoff']} cutoff_transition_width={s['cutoff_transition_width']} "
        f"n_max={s['n_max']} l_max={s['l_max']} atom_sigma={s['atom_sigma']} zeta={s['zeta']} "
        f"delta={s['delta']} n_sparse={n_sparse} sparse_method=cur_points add_species=T "
        "covariance_type=dot_product"
    )
    return run_gap_fit(frames, f"{two_body} : {gap}" if two_body else gap, folder)


def run_gap_fit(frames, gap: str, folder: Path) -> Path:
    """Fit ``frames`` with gap_fit's ``gap={...}`` settings in ``folder``; the model's XML path."""
    import ase.io

    binary = gap_fit_binary()
    train = folder / "train.xyz"
    ase.io.write(train, frames)
    command = [
        binary,
        f"at_file={train}",
        f"gap={{{gap}}}",
        "default_sigma={0.001 0.03 0.05 0}",
        "e0_method=average",
        "energy_parameter_name=energy",
        "force_parameter_name=forces",
        "sparse_jitter=1e-8",
        f"gp_file={folder / 'si.xml'}",
    ]
    log = folder / "gap_fit.log"
    with open(log, "w") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, cwd=folder)
    return folder / "si.xml"


def quip_energy_and_forces(xml, cell):
    """A call computing energy and forces of ``cell`` afresh with quippy's Potential of ``xml``
    (returns the forces)."""
    from quippy.potential import Potential

    potential = Potential(param_filename=str(xml))
    quip_cell = cell.copy()
    quip_cell.calc = potential

    def call():
        potential.reset()
        quip_cell.get_potential_energy()
        return quip_cell.get_forces()

    return call


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-sparse", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--min-time", type=float, default=3.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from ase.build import bulk

    import gapx
    from gapx.evaluation import error_metrics

    if args.smoke:
        frames, n_sparse, predict_repeat, min_time = training_frames(2, 1), 10, 2, 0.01
    else:
        n_frames = max(2, -(-args.n_sparse // 64))
        frames, n_sparse, predict_repeat, min_time = (
            training_frames(n_frames, 2),
            args.n_sparse,
            5,
            args.min_time,
        )
    cell = bulk("Si", "diamond", a=5.43, cubic=True).repeat(predict_repeat)
    cell.rattle(0.05, seed=1)
    n_atoms = len(cell)
    threads = os.environ.get("OMP_NUM_THREADS", "default")

    soap = gapx.SOAP(species=["Si"], n_sparse=n_sparse, sparse_method="cur", **SOAP_SETTINGS)
    model = gapx.GAP([soap], sigma_energy=0.001, sigma_force=0.03, verbose=False)
    start = time.perf_counter()
    model.fit(frames)
    gapx_fit = time.perf_counter() - start
    gapx_mean, gapx_std, gapx_n = time_call(lambda: model.predict(cell, std=False), min_time)
    # What a user gets by default: the ASE calculator as constructed with no options.
    calc_cell = cell.copy()
    calc_cell.calc = gapx.GAPCalculator(model)

    def calculator_call():
        calc_cell.calc.reset()
        calc_cell.get_potential_energy()
        return calc_cell.get_forces()

    calc_mean, calc_std, calc_n = time_call(calculator_call, min_time)
    results = {
        "benchmark": "energy+forces, diamond Si",
        "n_atoms": n_atoms,
        "n_sparse": n_sparse,
        "n_training_frames": len(frames),
        "omp_num_threads": threads,
        "gapx": {
            "seconds_per_call": gapx_mean,
            "std": gapx_std,
            "repeats": gapx_n,
            "us_per_atom": 1e6 * gapx_mean / n_atoms,
            "fit_seconds": gapx_fit,
        },
        "gapx_default_calculator": {
            "seconds_per_call": calc_mean,
            "std": calc_std,
            "repeats": calc_n,
            "us_per_atom": 1e6 * calc_mean / n_atoms,
        },
        "smoke": args.smoke,
    }
    print(f"{n_atoms} Si atoms, {n_sparse} sparse points, OMP_NUM_THREADS={threads}")
    print(f"gapx    {1e6 * gapx_mean / n_atoms:10.1f} us/atom  (+- {1e6 * gapx_std / n_atoms:.1f})")
    print(
        f"gapx GAPCalculator(model) {1e6 * calc_mean / n_atoms:10.1f} us/atom "
        f"(+- {1e6 * calc_std / n_atoms:.1f})"
    )

    if gap_fit_binary() is None:
        print("quippy-ase (gap_fit) not installed: QUIP comparison skipped")
    else:
        with tempfile.TemporaryDirectory(prefix="gapx_bench_predict_") as folder:
            start = time.perf_counter()
            xml = fit_quip(frames, n_sparse, Path(folder))
            quip_fit = time.perf_counter() - start
            quip_call = quip_energy_and_forces(xml, cell)

            quip_mean, quip_std, quip_n = time_call(quip_call, min_time)
            quip_forces = quip_call()
        gapx_forces = model.predict(cell, std=False)["forces"]
        results["quip"] = {
            "seconds_per_call": quip_mean,
            "std": quip_std,
            "repeats": quip_n,
            "us_per_atom": 1e6 * quip_mean / n_atoms,
            "fit_seconds": quip_fit,
        }
        results["speedup_vs_quip"] = quip_mean / gapx_mean
        results["default_calculator_speedup_vs_quip"] = quip_mean / calc_mean
        # Same data and settings but separately fitted models: forces agree only roughly.
        results["force_rms_difference_gapx_vs_quip"] = error_metrics(quip_forces - gapx_forces)[
            "rmse"
        ]
        per_atom, spread = 1e6 * quip_mean / n_atoms, 1e6 * quip_std / n_atoms
        print(f"quippy  {per_atom:10.1f} us/atom  (+- {spread:.1f})")
        print(f"speed-up gapx vs quippy: {quip_mean / gapx_mean:.1f}x")
        print(f"speed-up GAPCalculator(model) vs quippy: {quip_mean / calc_mean:.1f}x")
        print(f"fit: gapx {gapx_fit:.1f} s, gap_fit {quip_fit:.1f} s ({len(frames)} frames)")
    results["machine"] = machine_info(packages=("quippy-ase",))
    print(f"load average {results['machine'].get('load_average')} (shared machine: noisy)")
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
