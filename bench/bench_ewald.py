"""Time gapx.Ewald energy + forces + stress on rocksalt NaCl supercells, against pymatgen.

    python bench/bench_ewald.py                        # 64 ... 10 648 ions at accuracy 1e-6
    python bench/bench_ewald.py --sizes 2 4 8          # supercell repeats of the 8-ion cube
    python bench/bench_ewald.py --pymatgen-max 4096    # largest system given to pymatgen
    python bench/bench_ewald.py --smoke                # one tiny system, for CI
    python bench/bench_ewald.py --threads 1 --json out.json

Prints seconds per evaluation (mean ± spread), the CPU seconds of one call, µs per ion, the
chosen Ewald parameters, the log-log slope of time against the number of ions (the scaling
exponent; the default parameter choice aims at 1.5), and pymatgen's ``EwaldSummation`` time
(energy + forces; it has no stress) with the ratio pymatgen / gapx (>1: gapx is faster) and
the relative energy difference.
pymatgen builds dense N×N matrices, so it is only run up to ``--pymatgen-max`` ions.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # noqa: E402
    add_common_arguments,
    machine_info,
    smoke_min_time,
    time_call,
    write_json,
)

import gapx  # noqa: E402

CHARGES = {"Na": 1.0, "Cl": -1.0}


def rocksalt(repeat: int):
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True) * (repeat, repeat, repeat)
    atoms.rattle(0.05, seed=repeat)
    return atoms


def pymatgen_ewald(accuracy: float):
    """A function atoms -> (energy, forces) from pymatgen, or None when it is not installed."""
    try:
        from pymatgen.analysis.ewald import EwaldSummation
        from pymatgen.io.ase import AseAtomsAdaptor
    except ImportError:
        print("pymatgen not installed: comparison skipped (pip install pymatgen)")
        return None
    # pymatgen's acc_factor is the number of significant decimal figures of each sum.
    digits = -math.log10(accuracy)

    def run(atoms):
        structure = AseAtomsAdaptor.get_structure(atoms)
        structure.add_oxidation_state_by_element(CHARGES)
        ewald = EwaldSummation(structure, acc_factor=digits, compute_forces=True)
        return ewald.total_energy, ewald.forces

    return run


def slope(sizes, times) -> float:
    """Least-squares slope of log(time) against log(size)."""
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 6, 8, 11])
    parser.add_argument("--accuracy", type=float, default=1e-6)
    parser.add_argument("--pymatgen-max", type=int, default=1728)
    parser.add_argument("--min-time", type=float, default=1.0)
    add_common_arguments(parser, threads=(2,))
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.pymatgen_max = [2], 64
    min_time = smoke_min_time(args, args.min_time)
    threads = args.threads[0]
    if len(args.threads) > 1:
        print(f"bench_ewald times one thread count: using --threads {threads}")

    ewald = gapx.Ewald(CHARGES, accuracy=args.accuracy)
    reference = pymatgen_ewald(args.accuracy)
    print(
        f"gapx.Ewald accuracy {args.accuracy:g}: energy + forces + stress, rattled NaCl, "
        f"{threads} neighbour-list thread(s)"
    )
    header = (
        f"{'ions':>6} {'gapx s':>16} {'cpu s':>8} {'us/ion':>8} {'alpha':>6} {'r_c':>6} {'n_k':>6}"
        f" {'pymatgen s':>11} {'ratio':>7} {'dE/E':>9}"
    )
    print(header)
    results = []
    for repeat in args.sizes:
        atoms = rocksalt(repeat)
        n_ions = len(atoms)
        mean, std, _ = time_call(
            lambda a=atoms: ewald.calculate(a, n_threads=threads), min_time=min_time
        )
        # CPU seconds of this process (all threads) for one call: steadier than wall time on a
        # shared machine.
        cpu = time.process_time()
        ours = ewald.calculate(atoms, n_threads=threads)
        cpu = time.process_time() - cpu
        row = {
            "n_ions": n_ions,
            "seconds": mean,
            "std": std,
            "cpu_seconds": cpu,
            "alpha": ours["alpha"],
            "real_cutoff": ours["real_cutoff"],
            "n_kvectors": ours["n_kvectors"],
        }
        line = (
            f"{n_ions:>6} {mean:>9.4f} ± {std:<5.3f}{cpu:>8.3f}{mean / n_ions * 1e6:>8.1f} "
            f"{ours['alpha']:>6.3f} {ours['real_cutoff']:>6.2f} {ours['n_kvectors']:>6}"
        )
        if reference is not None and n_ions <= args.pymatgen_max:
            start = time.perf_counter()
            energy, forces = reference(atoms)
            seconds = time.perf_counter() - start
            difference = abs(energy / ours["energy"] - 1)
            force_difference = float(np.max(np.abs(forces - ours["forces"])))
            row.update(pymatgen_seconds=seconds, pymatgen_energy_rel_diff=difference)
            row["pymatgen_max_force_diff"] = force_difference
            line += f" {seconds:>11.3f} {seconds / mean:>7.1f} {difference:>9.1e}"
        print(line, flush=True)
        results.append(row)

    if len(results) >= 2:
        sizes = [r["n_ions"] for r in results]
        times = [r["seconds"] for r in results]
        cpus = [r["cpu_seconds"] for r in results]
        print(f"scaling exponent (log-log slope, all sizes): {slope(sizes, times):.2f}")
        print(f"scaling exponent of CPU time (all sizes): {slope(sizes, cpus):.2f}")
        large = [(s, t) for s, t in zip(sizes, times, strict=True) if s >= 512]
        if len(large) >= 2:
            exponent = slope(*zip(*large, strict=True))
            print(f"scaling exponent (>= 512 ions): {exponent:.2f}")
            large_cpu = [(r["n_ions"], r["cpu_seconds"]) for r in results if r["n_ions"] >= 512]
            cpu_exponent = slope(*zip(*large_cpu, strict=True))
            print(f"scaling exponent of CPU time (>= 512 ions): {cpu_exponent:.2f}")
    if args.json is not None:
        write_json(
            args.json,
            {
                "machine": machine_info(["scipy", "ase", "pymatgen"]),
                "benchmark": "ewald",
                "accuracy": args.accuracy,
                "threads": threads,
                "results": results,
            },
        )


if __name__ == "__main__":
    main()
