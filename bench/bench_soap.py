"""Time gapx.SOAP against featomic, dscribe and quippy-ase on rattled diamond silicon.

    python bench/bench_soap.py                      # 216 and 1 000 atoms, n8l6 and n12l6,
                                                    # values and gradients, 1 and 2 threads
    python bench/bench_soap.py --threads 1 --sizes 1000 --settings n8l6
    python bench/bench_soap.py --codes gapx featomic --modes gradients
    python bench/bench_soap.py --smoke              # one tiny structure, seconds, for CI
    python bench/bench_soap.py --json soap.json     # also write results + machine info

Every code computes the same thing: the SOAP power spectrum of every atom with cutoff 5 Å,
Gaussian width 0.5 Å, the given n_max / l_max (GTO radial basis for gapx, featomic and dscribe;
QUIP's own basis for quippy), and in "gradients" mode also its derivatives with respect to the
atomic positions. Anchors that are not installed are skipped with a message.

Threads: each (code, thread count) runs in a fresh subprocess with OMP_NUM_THREADS,
RAYON_NUM_THREADS (featomic's pool, fixed at its first use), OPENBLAS/MKL_NUM_THREADS set, and
gapx additionally gets ``n_threads``. dscribe parallelises only over structures (``n_jobs``),
never within one, so it is timed at 1 thread only. quippy-ase wheels follow OMP_NUM_THREADS if
they were built with OpenMP (compare its 1- and 2-thread rows to see whether it was).

Per-code notes:
* gapx: ``compute(atoms, gradients=True)`` returns position AND strain gradients (the others:
  positions only), so the gradient comparison is conservative for gapx.
* featomic: ``SoapPowerSpectrum.compute(atoms, gradients=["positions"])``; its output keeps
  both (n1, n2) and (n2, n1), i.e. ~2x the features of the others.
* dscribe: ``SOAP(rbf="gto", periodic=True)``; ``create`` for values; ``derivatives`` for
  gradients, which for periodic systems is numerical (dscribe has no analytical derivatives with
  periodicity) and returns a dense (centres, atoms, 3, features) array, so it is timed on the
  first ``--dscribe-centres`` (default 64) centres and reported per centre.
* quippy: ``Descriptor("soap ...").calc(atoms, grad=True)``, QUIP's cosine transition of 1 Å.

Table: µs per atom (mean ± standard deviation over the repeats), and ``ratio`` = time / time of
the fastest anchor (non-gapx code) at the same thread count, so gapx's ratio < 1 means faster.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

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

CUTOFF = 5.0
ATOM_SIGMA = 0.5
TRANSITION_WIDTH = 1.0
SETTINGS = {"n8l6": (8, 6), "n12l6": (12, 6)}
SMOKE_SETTING = {"n4l3": (4, 3)}
CODES = ("gapx", "featomic", "dscribe", "quippy")
PACKAGES = {"gapx": "gapx", "featomic": "featomic", "dscribe": "dscribe", "quippy": "quippy-ase"}
DSCRIBE_GRADIENT_CENTRES = 64
RESULT_PREFIX = "BENCH_SOAP_RESULTS "


def rattled_silicon(n_atoms: int) -> Atoms:
    """Diamond Si, the cubic 8-atom cell repeated to ``n_atoms`` (a cube number times 8),
    rattled by 0.05 Å with a fixed seed."""
    repeat = round((n_atoms / 8) ** (1 / 3))
    if 8 * repeat**3 != n_atoms:
        raise ValueError(f"n_atoms must be 8 k^3 (8, 64, 216, 512, 1000, ...), got {n_atoms}")
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (repeat, repeat, repeat)
    atoms.rattle(0.05, seed=0)
    return atoms


def make_case(
    code: str,
    n_max: int,
    l_max: int,
    threads: int,
    gradients: bool,
    atoms: Atoms,
    dscribe_centres: int = DSCRIBE_GRADIENT_CENTRES,
):
    """(fn, n_centres) computing ``code``'s SOAP (and position gradients) of ``atoms``."""
    if code == "gapx":
        import gapx

        soap = gapx.SOAP(
            species=["Si"],
            cutoff=CUTOFF,
            n_max=n_max,
            l_max=l_max,
            atom_sigma=ATOM_SIGMA,
            cutoff_transition_width=TRANSITION_WIDTH,
            n_threads=threads,
        )
        return (lambda: soap.compute(atoms, gradients=gradients)), len(atoms)
    if code == "featomic":
        import featomic

        calculator = featomic.SoapPowerSpectrum(
            cutoff={
                "radius": CUTOFF,
                "smoothing": {"type": "ShiftedCosine", "width": TRANSITION_WIDTH},
            },
            density={"type": "Gaussian", "width": ATOM_SIGMA, "center_atom_weight": 1.0},
            basis={
                "type": "TensorProduct",
                "max_angular": l_max,
                "radial": {"type": "Gto", "max_radial": n_max - 1},
            },
        )
        wanted = ["positions"] if gradients else None
        return (lambda: calculator.compute(atoms, gradients=wanted)), len(atoms)
    if code == "dscribe":
        from dscribe.descriptors import SOAP

        soap = SOAP(
            species=["Si"],
            r_cut=CUTOFF,
            n_max=n_max,
            l_max=l_max,
            sigma=ATOM_SIGMA,
            rbf="gto",
            periodic=True,
        )
        if not gradients:
            return (lambda: soap.create(atoms)), len(atoms)
        centres = list(range(min(dscribe_centres, len(atoms))))
        return (lambda: soap.derivatives(atoms, centers=centres, method="auto")), len(centres)
    if code == "quippy":
        from quippy.descriptors import Descriptor

        descriptor = Descriptor(
            f"soap cutoff={CUTOFF} cutoff_transition_width={TRANSITION_WIDTH} n_max={n_max} "
            f"l_max={l_max} atom_sigma={ATOM_SIGMA} n_species=1 species_Z={{14}}"
        )
        return (lambda: descriptor.calc(atoms, grad=gradients)), len(atoms)
    raise ValueError(f"unknown code {code!r}")


def run_worker(args) -> None:
    """Time one code at one thread count over every case; print the results as JSON."""
    code, threads = args.worker, args.threads[0]
    min_time = smoke_min_time(args)
    results = []
    for setting in args.settings:
        n_max, l_max = {**SETTINGS, **SMOKE_SETTING}[setting]
        for n_atoms in args.sizes:
            atoms = rattled_silicon(n_atoms)
            for mode in args.modes:
                gradients = mode == "gradients"
                fn, n_centres = make_case(
                    code, n_max, l_max, threads, gradients, atoms, args.dscribe_centres
                )
                mean, std, repeats = time_call(fn, min_time=min_time)
                results.append(
                    {
                        "code": code,
                        "threads": threads,
                        "setting": setting,
                        "n_max": n_max,
                        "l_max": l_max,
                        "n_atoms": n_atoms,
                        "mode": mode,
                        "n_centres_timed": n_centres,
                        "seconds": mean,
                        "std": std,
                        "repeats": repeats,
                        "us_per_atom": 1e6 * mean / n_centres,
                        "us_per_atom_std": 1e6 * std / n_centres,
                    }
                )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for row in results:
        row["worker_peak_mb"] = peak_mb
    print(RESULT_PREFIX + json.dumps(results), flush=True)


def installed(code: str) -> bool:
    module = {"quippy": "quippy.descriptors", "dscribe": "dscribe.descriptors"}.get(code, code)
    try:
        __import__(module)
    except ImportError as error:
        print(f"{code} not installed, skipped (pip install {PACKAGES[code]}): {error}")
        return False
    return True


def spawn(code: str, threads: int, args) -> list[dict]:
    """Run this script as a worker for (code, threads) with the thread variables set."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", code]
    command += ["--threads", str(threads), "--sizes", *map(str, args.sizes)]
    command += ["--settings", *args.settings, "--modes", *args.modes]
    command += ["--dscribe-centres", str(args.dscribe_centres)]
    if args.smoke:
        command.append("--smoke")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    print(f"{code} with {threads} thread(s) failed (exit {done.returncode}):")
    print((done.stderr or done.stdout).strip()[-2000:])
    return []


def print_table(results: list[dict]) -> None:
    header = (
        f"{'setting':>7} {'atoms':>6} {'mode':>9} {'code':>9} {'thr':>3} "
        f"{'us/atom':>10} {'+-':>8} {'ratio':>6} {'vs 1t':>6}"
    )
    print(header)
    print("-" * len(header))
    groups = {}
    for row in results:
        key = (row["setting"], row["n_atoms"], row["mode"])
        groups.setdefault(key, []).append(row)
    for rows in groups.values():
        rows.sort(key=lambda r: (CODES.index(r["code"]), r["threads"]))
        for row in rows:
            anchors = [
                r["us_per_atom"]
                for r in rows
                if r["code"] != "gapx" and r["threads"] == row["threads"]
            ]
            row["ratio_to_fastest_anchor"] = (
                row["us_per_atom"] / min(anchors) if anchors else float("nan")
            )
            one_thread = [
                r["us_per_atom"] for r in rows if r["code"] == row["code"] and r["threads"] == 1
            ]
            row["speedup_vs_1_thread"] = (
                one_thread[0] / row["us_per_atom"] if one_thread else float("nan")
            )
            print(
                f"{row['setting']:>7} {row['n_atoms']:>6} {row['mode']:>9} {row['code']:>9} "
                f"{row['threads']:>3} {row['us_per_atom']:>10.1f} {row['us_per_atom_std']:>8.1f} "
                f"{row['ratio_to_fastest_anchor']:>6.2f} {row['speedup_vs_1_thread']:>6.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=[216, 1000])
    parser.add_argument(
        "--settings", nargs="+", default=list(SETTINGS), choices=[*SETTINGS, *SMOKE_SETTING]
    )
    parser.add_argument("--modes", nargs="+", default=["values", "gradients"])
    parser.add_argument("--codes", nargs="+", default=list(CODES), choices=list(CODES))
    parser.add_argument(
        "--dscribe-centres",
        type=int,
        default=DSCRIBE_GRADIENT_CENTRES,
        help="centres for dscribe's dense gradients (memory: centres x atoms x 3 x features)",
    )
    parser.add_argument("--worker", choices=list(CODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.settings = [8], list(SMOKE_SETTING)
        if not args.worker:
            args.threads = [1]
    if args.worker:
        run_worker(args)
        return

    codes = [code for code in args.codes if installed(code)]
    results = []
    for code in codes:
        for threads in args.threads:
            if code == "dscribe" and threads != 1:
                print("dscribe: parallel only over structures (n_jobs), timed at 1 thread only")
                continue
            print(f"timing {code} with {threads} thread(s) ...", flush=True)
            results.extend(spawn(code, threads, args))
    print()
    print_table(results)
    print(
        "\nratio = time / fastest anchor's time at the same thread count (<1: faster);"
        " vs 1t = the code's 1-thread time / this time."
    )
    print(f"dscribe gradients are per centre on the first {args.dscribe_centres} centres.")
    info = machine_info([PACKAGES[code] for code in CODES if code != "gapx"])
    print(f"machine: {info['cpu']}, {info['usable_cpus']} usable CPUs, load {info['load_average']}")
    if args.json:
        write_json(args.json, {"machine": info, "results": results})


if __name__ == "__main__":
    main()
