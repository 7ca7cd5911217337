"""Time gapx.neighbor_list against ASE, matscipy and vesin on crystalline Si and a dense gas.

    python bench/bench_neighbors.py                 # 1 000, 10 000, 100 000 atoms, cutoff 5 Å
    python bench/bench_neighbors.py --threads 1 2   # gapx thread counts to time
    python bench/bench_neighbors.py --smoke         # one tiny system, for CI

Anchors that are not installed are skipped with a message. Prints µs/atom and the ratio of each
code's time to gapx's single-thread time (>1 means gapx is faster), and the pair count.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import numpy as np
from ase import Atoms
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

SI_DENSITY = 8 / 5.43**3  # atoms per Å^3 in diamond Si


def crystalline_si(n_atoms: int) -> Atoms:
    repeat = max(1, round((n_atoms / 8) ** (1 / 3)))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (repeat, repeat, repeat)
    atoms.rattle(0.05, seed=0)
    return atoms


def dense_gas(n_atoms: int) -> Atoms:
    rng = np.random.default_rng(0)
    length = (n_atoms / SI_DENSITY) ** (1 / 3)
    positions = rng.uniform(0, length, (n_atoms, 3))
    return Atoms(["Si"] * n_atoms, positions=positions, cell=np.eye(3) * length, pbc=True)


def anchors():
    """(name, fn(atoms, cutoff)) for every installed reference code."""
    from ase.neighborlist import neighbor_list as ase_nl

    codes = [("ase", lambda atoms, cutoff: ase_nl("ijSdD", atoms, cutoff))]
    try:
        from matscipy.neighbours import neighbour_list as matscipy_nl

        codes.append(("matscipy", lambda atoms, cutoff: matscipy_nl("ijSdD", atoms, cutoff)))
    except ImportError:
        print("matscipy not installed: skipped (pip install matscipy)")
    try:
        import vesin

        def vesin_nl(atoms, cutoff):
            calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
            return calculator.compute(
                points=atoms.positions,
                box=atoms.cell.array,
                periodic=bool(atoms.pbc.all()),
                quantities="ijSdD",
            )

        codes.append(("vesin", vesin_nl))
    except ImportError:
        print("vesin not installed: skipped (pip install vesin)")
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--cutoff", type=float, default=5.0)
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.threads = [64], [1]
    min_time = smoke_min_time(args)

    results = []
    reference_codes = anchors()
    header = f"{'system':>10} {'atoms':>7} {'pairs':>9} {'code':>12} {'us/atom':>9} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for system, build in [("Si", crystalline_si), ("gas", dense_gas)]:
        for size in args.sizes:
            atoms = build(size)
            n_pairs = len(gapx.neighbor_list(atoms, args.cutoff)[0])
            rows = []
            for threads in args.threads:
                mean, std, _ = time_call(
                    lambda a=atoms, t=threads: gapx.neighbor_list(a, args.cutoff, n_threads=t),
                    min_time=min_time,
                )
                rows.append((f"gapx {threads}t", mean, std))
            for name, fn in reference_codes:
                mean, std, _ = time_call(lambda a=atoms, f=fn: f(a, args.cutoff), min_time=min_time)
                rows.append((name, mean, std))
            gapx_one_thread = rows[0][1]
            for name, mean, std in rows:
                per_atom = 1e6 * mean / len(atoms)
                ratio = mean / gapx_one_thread
                print(
                    f"{system:>10} {len(atoms):>7} {n_pairs:>9} {name:>12} "
                    f"{per_atom:>9.3f} {ratio:>7.1f}"
                )
                results.append(
                    {
                        "system": system,
                        "n_atoms": len(atoms),
                        "n_pairs": n_pairs,
                        "code": name,
                        "seconds": mean,
                        "std": std,
                        "us_per_atom": per_atom,
                        "ratio_to_gapx_1t": ratio,
                    }
                )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process: {peak_mb:.0f} MB")
    if args.json:
        write_json(
            args.json, {"machine": machine_info(["ase", "matscipy", "vesin"]), "results": results}
        )


if __name__ == "__main__":
    main()
