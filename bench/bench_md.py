"""MD speed of gapx's ASE calculator against quippy's on equally sized Si GAPs, and NVE drift.

    python bench/bench_md.py                  # 1 000-atom Si MD steps/s (gapx vs quippy) + drift
    python bench/bench_md.py --smoke          # tiny models and systems, for CI
    python bench/bench_md.py --no-quip        # gapx only
    python bench/bench_md.py --drift-steps 5000 --drift-repeat 3

Both models are fitted to the same Stillinger-Weber-labelled (matscipy) training set of rattled,
strained 64-atom diamond Si cells, with the same SOAP (cutoff 5 Å, transition width 1 Å,
n_max 8, l_max 6, atom_sigma 0.5, zeta 4), the same number of CUR sparse points and sigmas:
gapx through ``gapx.GAP.fit``, QUIP through the ``gap_fit`` executable shipped with quippy-ase,
loaded as ``quippy.potential.Potential``. The timed loop is ASE's VelocityVerlet at 300 K on
diamond Si 5x5x5 (1 000 atoms); a step is one energy + forces evaluation (gapx also computes the
stress and the energy std in the same pass). Reports steps/s, ms per step and µs per atom-step,
the test errors of both models against SW, and the NVE total-energy drift of a longer run with
gapx (eV/atom over the run). Timings on a shared machine are noisy: record CPU and threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    from _harness import machine_info, write_json  # noqa: E402
except ImportError:  # the shared harness is optional
    machine_info = None
    write_json = None

import gapx  # noqa: E402
from gapx.calculator import GAPCalculator  # noqa: E402
from gapx.evaluation import error_metrics  # noqa: E402
from gapx.md import thermalize  # noqa: E402

# Stillinger & Weber, PRB 31, 5262 (1985), in QUIP's units (used when matscipy is missing).
QUIP_SW_PARAMS = """<SW_params n_types="1" label="PRB_31_plus_H">
<per_type_data type="1" atomic_num="14" />
<per_pair_data atnum_i="14" atnum_j="14" AA="7.049556277" BB="0.6022245584"
      p="4" q="0" a="1.80" sigma="2.0951" eps="2.1675" />
<per_triplet_data atnum_c="14" atnum_j="14" atnum_k="14"
      lambda="21.0" gamma="1.20" eps="2.1675" />
</SW_params>"""


def sw_calculator():
    """Stillinger-Weber Si: matscipy's, else QUIP's (quippy-ase); None if neither is installed."""
    try:
        from matscipy.calculators.manybody import Manybody
        from matscipy.calculators.manybody.explicit_forms import StillingerWeber
        from matscipy.calculators.manybody.explicit_forms.stillinger_weber import (
            Stillinger_Weber_PRB_31_5262_Si,
        )

        return Manybody(**StillingerWeber(Stillinger_Weber_PRB_31_5262_Si))
    except ImportError:
        pass
    try:
        from quippy.potential import Potential

        return Potential("IP SW", param_str=QUIP_SW_PARAMS)
    except ImportError:
        return None


def training_set(n_frames: int, repeat: int, seed: int) -> list:
    """Rattled (0.02-0.15 Å), strained (±2 %) diamond Si cells labelled with Stillinger-Weber."""
    rng = np.random.default_rng(seed)
    base = bulk("Si", "diamond", a=5.431, cubic=True) * (repeat, repeat, repeat)
    sw = sw_calculator()
    if sw is None:
        raise ImportError("no Stillinger-Weber labeller: pip install matscipy or quippy-ase")
    frames = []
    for index in range(n_frames):
        atoms = base.copy()
        strain = 0.02 * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T)), True)
        amplitude = 0.02 + 0.13 * index / max(n_frames - 1, 1)
        atoms.positions += amplitude * rng.standard_normal(atoms.positions.shape)
        atoms.calc = sw
        labels = {
            "energy": atoms.get_potential_energy(),
            "forces": atoms.get_forces(),
            "stress": atoms.get_stress(),
        }
        atoms.calc = SinglePointCalculator(atoms, **labels)
        atoms.info["config_type"] = "rattled"
        frames.append(atoms)
    return frames


def fit_gapx(frames, settings: dict):
    model = gapx.GAP(
        [
            gapx.SOAP(
                species=["Si"],
                cutoff=settings["cutoff"],
                cutoff_transition_width=1.0,
                n_max=settings["n_max"],
                l_max=settings["l_max"],
                atom_sigma=0.5,
                zeta=4,
                delta=settings["delta"],
                n_sparse=settings["n_sparse"],
                sparse_method="cur",
            )
        ],
        sigma_energy=settings["sigma"][0],
        sigma_force=settings["sigma"][1],
        sigma_virial=settings["sigma"][2],
        e0="average",
        seed=0,
        verbose=False,
    )
    model.fit(frames)
    return model


def fit_quip(frames, settings: dict, workdir: str):
    """Fit the same model with QUIP's gap_fit; return a quippy Potential or None (with why)."""
    gap_fit = shutil.which("gap_fit") or os.path.join(os.path.dirname(sys.executable), "gap_fit")
    if not os.path.isfile(gap_fit):
        return None, "gap_fit executable not found (pip install quippy-ase)"
    try:
        from quippy.potential import Potential
    except ImportError:
        return None, "quippy not importable (pip install quippy-ase)"
    import ase.io

    train = os.path.join(workdir, "train_quip.xyz")
    labelled = []
    for atoms in frames:
        copy = atoms.copy()
        copy.calc = None
        copy.info["ref_energy"] = atoms.get_potential_energy()
        copy.arrays["ref_forces"] = atoms.get_forces()
        stress = atoms.get_stress(voigt=False)
        copy.info["ref_virial"] = (-stress * atoms.get_volume()).ravel()
        labelled.append(copy)
    ase.io.write(train, labelled, format="extxyz")
    sigma = settings["sigma"]
    gap = (
        f"soap cutoff={settings['cutoff']} cutoff_transition_width=1.0 n_max={settings['n_max']} "
        f"l_max={settings['l_max']} atom_sigma=0.5 zeta=4 delta={settings['delta']} "
        f"n_sparse={settings['n_sparse']} sparse_method=cur_points covariance_type=dot_product"
    )
    xml = os.path.join(workdir, "si_quip.xml")
    command = [
        gap_fit,
        f"at_file={train}",
        f"gap={{{gap}}}",
        f"default_sigma={{{sigma[0]} {sigma[1]} {sigma[2]} 0.0}}",
        "e0_method=average",
        "energy_parameter_name=ref_energy",
        "force_parameter_name=ref_forces",
        "virial_parameter_name=ref_virial",
        "sparse_jitter=1e-8",
        f"gp_file={xml}",
        "rnd_seed=1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    if done.returncode != 0 or not os.path.isfile(xml):
        return None, f"gap_fit failed (exit {done.returncode}): {done.stdout[-400:]}"
    return Potential(param_filename=xml), None


def errors(calc, frames) -> dict:
    de, df = [], []
    for atoms in frames:
        copy = atoms.copy()
        copy.calc = calc
        de.append((copy.get_potential_energy() - atoms.get_potential_energy()) / len(atoms))
        df.append((copy.get_forces() - atoms.get_forces()).ravel())
    de, df = np.asarray(de), np.concatenate(df)
    return {
        "energy_rmse_mev_atom": 1000 * error_metrics(de)["rmse"],
        "force_rmse_mev_a": 1000 * error_metrics(df)["rmse"],
    }


def md_speed(calc, repeat: int, steps: int, seed: int = 0) -> dict:
    """Steps/s of VelocityVerlet (1 fs, 300 K) on a diamond Si repeat^3 supercell."""
    atoms = bulk("Si", "diamond", a=5.431, cubic=True) * (repeat, repeat, repeat)
    atoms.rattle(0.02, seed=seed)
    atoms.calc = calc
    thermalize(atoms, 300, np.random.default_rng(seed))
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    start = time.perf_counter()
    atoms.get_forces()  # warm-up: first evaluation (allocations, neighbour list)
    warmup = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        dyn.run(1)
        times.append(time.perf_counter() - start)
    times = np.asarray(times)
    return {
        "n_atoms": len(atoms),
        "steps": steps,
        "first_call_s": warmup,
        "ms_per_step": 1000 * float(times.mean()),
        "ms_per_step_std": 1000 * float(times.std()),
        "steps_per_s": float(1.0 / times.mean()),
        "us_per_atom_step": 1e6 * float(times.mean()) / len(atoms),
    }


def nve_drift(calc, repeat: int, steps: int, timestep: float, temperature: float) -> dict:
    """Total-energy drift of velocity Verlet: (E_end - E_0)/N, max |E - E_0|/N, and a fit slope."""
    atoms = bulk("Si", "diamond", a=5.431, cubic=True) * (repeat, repeat, repeat)
    atoms.rattle(0.02, seed=7)
    atoms.calc = calc
    thermalize(atoms, temperature, np.random.default_rng(7))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=timestep * units.fs)
    totals, temps = [], []

    def record():
        totals.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        temps.append(atoms.get_temperature())

    dyn.attach(record, interval=10)
    start = time.perf_counter()
    dyn.run(steps)
    elapsed = time.perf_counter() - start
    totals = np.asarray(totals) / len(atoms)
    times_ps = np.arange(len(totals)) * 10 * timestep / 1000
    slope = float(np.polyfit(times_ps, totals, 1)[0]) if len(totals) > 2 else float("nan")
    return {
        "n_atoms": len(atoms),
        "steps": steps,
        "timestep_fs": timestep,
        "time_ps": steps * timestep / 1000,
        "initial_temperature_K": temperature,
        "mean_temperature_K": float(np.mean(temps)),
        "drift_ev_per_atom": float(totals[-1] - totals[0]),
        "max_deviation_ev_per_atom": float(np.max(np.abs(totals - totals[0]))),
        "slope_ev_per_atom_per_ps": slope,
        "wall_s": elapsed,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--no-quip", action="store_true", help="skip quippy")
    parser.add_argument("--steps", type=int, default=5, help="timed MD steps per code")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="gapx thread counts to time"
    )
    parser.add_argument("--drift-repeat", type=int, default=3, help="drift system: 8 n^3 atoms")
    parser.add_argument("--drift-steps", type=int, default=2000)
    parser.add_argument("--drift-timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--json", default="bench/results/bench_md.json")
    args = parser.parse_args(argv)

    if args.smoke:
        settings = {"cutoff": 4.0, "n_max": 4, "l_max": 3, "n_sparse": 20, "delta": 0.2}
        n_frames, train_repeat, md_repeat = 4, 1, 2
        args.steps, args.drift_repeat, args.drift_steps = 2, 1, 20
        args.threads = args.threads[:1]
    else:
        settings = {"cutoff": 5.0, "n_max": 8, "l_max": 6, "n_sparse": 200, "delta": 0.2}
        n_frames, train_repeat, md_repeat = 30, 2, 5
    settings["sigma"] = (0.002, 0.05, 0.05)
    print(f"settings: {settings}, training: {n_frames} frames of {8 * train_repeat**3} atoms")
    try:
        frames = training_set(n_frames, train_repeat, seed=0)
    except ImportError as error:
        print(f"bench_md skipped: {error}")
        return 0
    test = training_set(max(2, n_frames // 5), train_repeat, seed=1)

    report = {"settings": settings, "n_train_frames": n_frames, "results": {}}
    start = time.perf_counter()
    model = fit_gapx(frames, settings)
    report["results"]["gapx_fit_s"] = time.perf_counter() - start
    calc = GAPCalculator(model)
    report["results"]["gapx_test_errors"] = errors(calc, test)
    print(f"gapx fit {report['results']['gapx_fit_s']:.1f} s; test errors vs SW: "
          f"{report['results']['gapx_test_errors']}")  # fmt: skip

    quip = None
    if not args.no_quip:
        with tempfile.TemporaryDirectory() as workdir:
            start = time.perf_counter()
            quip, why = fit_quip(frames, settings, workdir)
            report["results"]["quip_fit_s"] = time.perf_counter() - start
        if quip is None:
            print(f"quippy skipped: {why}")
            report["results"]["quip_skipped"] = why
        else:
            report["results"]["quip_test_errors"] = errors(quip, test)
            print(f"quip fit {report['results']['quip_fit_s']:.1f} s; test errors vs SW: "
                  f"{report['results']['quip_test_errors']}")  # fmt: skip

    from threadpoolctl import threadpool_limits

    # gapx: OpenMP threads as given, BLAS on one thread (as `gapx md` runs it): its matrices
    # are small at prediction and extra BLAS threads only compete with SOAP's OpenMP threads.
    speed = {}
    for threads in args.threads:
        with threadpool_limits(limits=1, user_api="blas"):
            with threadpool_limits(limits=threads, user_api="openmp"):
                speed[f"gapx_{threads}t"] = md_speed(calc, md_repeat, args.steps)
    fastest = max(args.threads, key=lambda t: speed[f"gapx_{t}t"]["steps_per_s"])
    with (
        threadpool_limits(limits=1, user_api="blas"),
        threadpool_limits(limits=fastest, user_api="openmp"),
    ):  # what the predictive variance costs
        no_std = GAPCalculator(model, std=False)
        speed[f"gapx_{fastest}t_nostd"] = md_speed(no_std, md_repeat, args.steps)
    if quip is not None:  # the quippy-ase wheel is serial (no OpenMP; 1-thread OpenBLAS)
        speed["quip_1t"] = md_speed(quip, md_repeat, args.steps)
    report["results"]["md_speed"] = speed
    for name, row in speed.items():
        print(
            f"MD {name:8s} {row['n_atoms']} atoms: {row['steps_per_s']:.3f} steps/s "
            f"({row['ms_per_step']:.1f} ± {row['ms_per_step_std']:.1f} ms/step, "
            f"{row['us_per_atom_step']:.1f} µs/atom-step; first call {row['first_call_s']:.2f} s)"
        )
    if "quip_1t" in speed:
        for name in [k for k in speed if k.startswith("gapx")]:
            ratio = speed[name]["steps_per_s"] / speed["quip_1t"]["steps_per_s"]
            report["results"][f"speedup_{name}_over_quip_1t"] = ratio
            print(f"{name} / quip_1t speed: {ratio:.2f}x")

    # The drift run uses the gapx thread count that was fastest above.
    report["results"]["drift_threads"] = fastest
    with (
        threadpool_limits(limits=1, user_api="blas"),
        threadpool_limits(limits=fastest, user_api="openmp"),
    ):
        drift = nve_drift(no_std, args.drift_repeat, args.drift_steps, args.drift_timestep, 300.0)
    report["results"]["nve_drift"] = drift
    print(
        f"NVE drift ({drift['n_atoms']} atoms, {drift['steps']} steps of "
        f"{drift['timestep_fs']} fs = {drift['time_ps']:.2f} ps, mean T "
        f"{drift['mean_temperature_K']:.0f} K): {drift['drift_ev_per_atom']:+.2e} eV/atom, "
        f"max deviation {drift['max_deviation_ev_per_atom']:.2e} eV/atom, slope "
        f"{drift['slope_ev_per_atom_per_ps']:+.2e} eV/atom/ps ({drift['wall_s']:.0f} s)"
    )

    report["machine"] = (
        machine_info()
        if machine_info
        else {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "python": sys.version.split()[0],
            "gapx": gapx.__version__,
        }
    )
    if args.json and not args.smoke:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        if write_json:
            write_json(args.json, report)
        else:
            with open(args.json, "w") as handle:
                json.dump(report, handle, indent=2)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
