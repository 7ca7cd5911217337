"""On-the-fly learning benchmark: incremental update vs full refit, and gapx learn vs random MD.

1. **Update vs refit.** An :class:`gapx.learning.IncrementalFit` holds ``--n-frames`` (200)
   frames of EMT Langevin MD of fcc Cu (``--repeat`` cells, 32 atoms by default; TwoBody +
   SOAP n_max 6, l_max 4, 200 CUR points); one more frame is added (with new sparse points),
   timed against a full ``GAP.fit`` of all the frames and against ``gapx.fitting.fit`` with the
   same sparse points (which the update must equal: the largest force difference is printed).
   Goal: update <= 0.2 x refit.
2. **gapx learn vs random frames.** ``OnTheFly`` runs ``--steps`` of Langevin MD at
   ``--temperature`` with EMT as the oracle. The same number of oracle calls is then spent on
   random frames of an EMT-driven Langevin MD at the same temperature (the start plus random
   frames, ``--draws`` draws), fitted with the same settings. Force RMSE on held-out frames of
   an independent EMT MD at that temperature. Goal: learn >= 10 % lower than random. The frames
   gapx learn chose are also refitted from scratch, separating the choice of frames from the
   sparse points the updates added.

``--smoke``: 8-atom cells, 12 frames, 40 MD steps (seconds; numbers not meaningful).

Measured (2 shared cores, load about 3, OpenBLAS; gapx 0.1.0 at the commit adding this file;
``python bench/bench_learn.py --seeds 3 4 5``):

* update vs refit, 200 frames x 32 atoms, 239 sparse points, 8 new per update: update
  2.0-3.1 s, full refit 24 s: 0.11 of the refit in wall time, 0.15 in CPU time (goal <= 0.2).
  A profiled update with 4 new points at a quieter moment: 0.61 s, of which 0.37 s the kernel
  of the kept rows at the new columns and 0.21 s the QR of the kept rows (refit then 11-12 s).
  Update vs refit with the same sparse points: forces agree to 1.2e-9 eV/Å.
  Descriptors kept for 200 frames: 537 MB.
* 3000 steps at 800 K, threshold 0.01 eV/Å on the max predicted force std, min interval 50,
  4 new points per call (``--parts learn --seeds 3 4 5``, a quiet machine): 60-61 oracle calls,
  89-105 s per run. Held-out force RMSE (meV/Å), mean of 3 runs: gapx learn 9.1; its frames
  refitted from scratch with the config (50 CUR points) 12.5; as many random frames with the
  config 11.3 (learn / random = 0.81, goal <= 0.9); random frames with as many sparse points as
  the learned model (about 120) 8.0. The gain comes from the sparse points the updates add: with
  the config's 50 points, the frames the std chose are 10 % worse than random ones (they are the
  high-std outliers of the trajectory, where random frames sample its typical structures).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_info, write_json  # noqa: E402


def model_settings(args, n_sparse: int | None = None):
    import gapx

    return gapx.GAP(
        [
            gapx.TwoBody(cutoff=args.cutoff, n_sparse=15),
            gapx.SOAP(
                species=["Cu"],
                cutoff=args.cutoff,
                n_max=args.n_max,
                l_max=args.l_max,
                n_sparse=n_sparse or args.n_sparse,
            ),
        ],
        sigma_energy=0.001,
        sigma_force=0.03,
        sigma_virial=0.05,
        verbose=False,
    )


def start_structure(args):
    from ase.build import bulk

    return bulk("Cu", "fcc", a=3.61, cubic=True) * tuple(args.repeat)


def emt_md(atoms, steps: int, every: int, temperature: float, seed: int) -> list:
    """EMT Langevin MD at ``temperature``: labelled frames every ``every`` steps."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    from gapx.md import langevin, start_velocities

    atoms = atoms.copy()
    rng = np.random.default_rng(seed)
    start_velocities(atoms, temperature, rng)
    dyn = langevin(atoms, 2.0, temperature, 0.01, rng)
    atoms.calc = EMT()
    frames = []
    for _ in range(steps // every):
        dyn.run(every)
        frame = atoms.copy()
        frame.set_constraint()
        frame.calc = SinglePointCalculator(
            frame,
            energy=atoms.get_potential_energy(),
            forces=atoms.get_forces(),
            stress=atoms.get_stress(),
        )
        frames.append(frame)
    return frames


def force_rmse(model, frames) -> float:
    from gapx.evaluation import error_metrics

    errors = [model.predict(a, std=False)["forces"] - a.get_forces() for a in frames]
    return float(error_metrics(np.concatenate(errors))["rmse"])


def update_vs_refit(args) -> dict:
    from gapx import fitting
    from gapx.learning import IncrementalFit

    frames = emt_md(start_structure(args), args.n_frames * 10 + 30, 10, 800.0, seed=1)
    old, new = frames[: args.n_frames], frames[args.n_frames : args.n_frames + 3]
    model = model_settings(args)
    start = time.perf_counter()
    # A tolerance below every residual: each update adds its 4 points per kind, so what is
    # timed is the update with new columns (without, it only folds the new rows into R).
    learner = IncrementalFit.fit(model, old, sparse_tolerance=1e-12)
    first_fit = time.perf_counter() - start
    updates, update_cpu = [], []
    for n, frame in enumerate(new):
        cpu = time.process_time()
        report = learner.add([frame])
        update_cpu.append(time.process_time() - cpu)
        updates.append(report["seconds"])
        print(
            f"update {n + 1}: {report['seconds']:.3f} s, {report['sparse_added']} sparse points "
            f"added (total {report['n_sparse_total']})"
        )
    state = learner.state()
    everything = old + new
    start, cpu = time.perf_counter(), time.process_time()
    model_settings(args).fit(everything)
    refit, refit_cpu = time.perf_counter() - start, time.process_time() - cpu
    points = {(s.term, s.kind): s.points for s in state.sparse_sets}
    start = time.perf_counter()
    same = fitting.fit(model_settings(args), everything, e0=state.e0, sparse_points=points)
    refit_same = time.perf_counter() - start
    a, b = model_settings(args), model_settings(args)
    a._adopt(state)
    b._adopt(same)
    difference = max(
        float(np.abs(a.predict(f, std=False)["forces"] - b.predict(f, std=False)["forces"]).max())
        for f in new
    )
    update = float(np.median(updates))
    cpu_ratio = float(np.median(update_cpu)) / refit_cpu
    out = {
        "n_frames": args.n_frames,
        "atoms_per_frame": len(frames[0]),
        "n_sparse": state.summary["n_sparse"],
        "first_fit_seconds": first_fit,
        "update_seconds": updates,
        "refit_seconds": refit,
        "refit_same_points_seconds": refit_same,
        "update_cpu_seconds": update_cpu,
        "refit_cpu_seconds": refit_cpu,
        "update_over_refit": update / refit,
        "update_over_refit_cpu": cpu_ratio,
        "kept_descriptor_MB": learner.stats["kept_bytes"] / 1e6,
        "max_force_difference_vs_refit_same_points": difference,
    }
    print(
        f"{args.n_frames} frames x {len(frames[0])} atoms, sparse {state.summary['n_sparse']}: "
        f"update {update:.3f} s (median of {len(updates)}), full refit {refit:.2f} s, refit "
        f"with the same points {refit_same:.2f} s: update / refit = {update / refit:.3f} "
        f"(goal <= 0.2); in CPU time {cpu_ratio:.3f}"
    )
    print(
        f"update vs refit with the same sparse points: max force difference {difference:.1e} "
        f"eV/Å; descriptors kept {out['kept_descriptor_MB']:.0f} MB"
    )
    return out


def learn_once(args, start, held_out, pool, seed: int) -> dict:
    """One gapx learn run and its random-frame baselines with as many oracle calls."""
    import ase.io

    import gapx
    from gapx.learning import OnTheFly

    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        OnTheFly(
            model_settings(args, args.learn_sparse),
            "ase.calculators.emt:EMT",
            folder,
            threshold=args.threshold,
            temperature=args.temperature,
            timestep=2.0,
            std_interval=args.std_interval,
            min_interval=args.min_interval,
            seed=seed,
            new_sparse_per_frame=args.new_sparse,
        ).run(start, args.steps)
        seconds = time.perf_counter() - t0
        learned = gapx.load(os.path.join(folder, "model.gapx"))
        calls = ase.io.read(os.path.join(folder, "calls.extxyz"), ":")
    n_calls = len(calls)
    n_sparse = learned.summary["n_sparse"]["soap[Cu]"]
    refit = model_settings(args, args.learn_sparse)
    refit.fit(calls)
    random, matched = [], []
    for draw in range(args.draws):
        rng = np.random.default_rng([seed, draw])
        picked = [pool[k] for k in rng.choice(len(pool), n_calls - 1, replace=False)]
        for points, out in ((args.learn_sparse, random), (n_sparse, matched)):
            model = model_settings(args, points)
            model.fit([calls[0], *picked])  # the start, labelled, as gapx learn's first call
            out.append(force_rmse(model, held_out))
    result = {
        "seed": seed,
        "n_calls": n_calls,
        "seconds": seconds,
        "n_sparse": learned.summary["n_sparse"],
        "rmse_learn": force_rmse(learned, held_out),
        "rmse_learned_frames_refit": force_rmse(refit, held_out),
        "rmse_random": random,
        "rmse_random_matched_sparse": matched,
    }
    print(
        f"seed {seed}: {n_calls} oracle calls in {seconds:.0f} s, sparse {result['n_sparse']}; "
        f"force RMSE (meV/Å) learn {1000 * result['rmse_learn']:.1f}, its frames refitted "
        f"{1000 * result['rmse_learned_frames_refit']:.1f}, random {1000 * np.mean(random):.1f}"
        f" ± {1000 * np.std(random):.1f}, random with {n_sparse} SOAP points "
        f"{1000 * np.mean(matched):.1f}"
    )
    return result


def learn_vs_random(args) -> dict:
    start = start_structure(args)
    if args.equilibrate:  # both runs start from the same equilibrated snapshot
        start = emt_md(start, args.equilibrate, args.equilibrate, args.temperature, seed=55)[-1]
        start.calc = None
    held_out = emt_md(start, args.held_out * 20, 20, args.temperature, seed=101)
    pool = emt_md(start, args.steps, 1, args.temperature, seed=7)
    print(
        f"gapx learn, {args.steps} steps at {args.temperature:g} K, threshold {args.threshold} "
        f"eV/Å, vs random frames of an EMT MD; held-out: {len(held_out)} frames of another"
    )
    runs = [learn_once(args, start, held_out, pool, seed) for seed in args.seeds]
    mean = {
        key: float(np.mean([np.mean(r[key]) for r in runs]))
        for key in ("rmse_learn", "rmse_learned_frames_refit", "rmse_random")
    }
    matched = float(np.mean([np.mean(r["rmse_random_matched_sparse"]) for r in runs]))
    result = {
        "steps": args.steps,
        "temperature": args.temperature,
        "threshold": args.threshold,
        "min_interval": args.min_interval,
        "new_sparse_per_frame": args.new_sparse,
        "held_out_frames": len(held_out),
        "runs": runs,
        **{f"mean_{k}": v for k, v in mean.items()},
        "mean_rmse_random_matched_sparse": matched,
        "learn_over_random": mean["rmse_learn"] / mean["rmse_random"],
        "learned_frames_over_random": mean["rmse_learned_frames_refit"] / mean["rmse_random"],
        "learn_over_random_matched_sparse": mean["rmse_learn"] / matched,
    }
    print(
        f"mean over {len(runs)} runs: learn / random = {result['learn_over_random']:.3f} "
        f"(goal <= 0.9); its frames refitted / random = "
        f"{result['learned_frames_over_random']:.3f}; learn / random with as many sparse "
        f"points = {result['learn_over_random_matched_sparse']:.3f}"
    )
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-frames", type=int, default=200)
    parser.add_argument("--repeat", type=int, nargs=3, default=[2, 2, 2], help="fcc cells")
    parser.add_argument("--cutoff", type=float, default=4.5)
    parser.add_argument("--n-max", type=int, default=6)
    parser.add_argument("--l-max", type=int, default=4)
    parser.add_argument("--n-sparse", type=int, default=200, help="SOAP points, update bench")
    parser.add_argument("--learn-sparse", type=int, default=50, help="SOAP points, learn bench")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--temperature", type=float, default=800.0)
    parser.add_argument("--threshold", type=float, default=0.01)
    parser.add_argument("--std-interval", type=int, default=5)
    parser.add_argument("--new-sparse", type=int, default=4, help="per call and kind")
    parser.add_argument("--min-interval", type=int, default=50, help="steps between calls")
    parser.add_argument(
        "--equilibrate", type=int, default=400, help="EMT MD steps giving the start structure"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[3], help="of gapx learn's MD")
    parser.add_argument("--held-out", type=int, default=50)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--parts", nargs="+", default=["update", "learn"])
    parser.add_argument("--smoke", action="store_true", help="tiny cases (seconds)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_frames, args.repeat, args.n_max, args.l_max = 12, [2, 1, 1], 3, 2
        args.n_sparse, args.learn_sparse, args.steps, args.held_out = 20, 10, 40, 3
        args.draws, args.std_interval, args.threshold = 1, 2, 0.02
        args.min_interval, args.equilibrate = 2, 20
    results = {"smoke": args.smoke, "machine": machine_info()}
    if "update" in args.parts:
        results["update_vs_refit"] = update_vs_refit(args)
    if "learn" in args.parts:
        results["learn_vs_random"] = learn_vs_random(args)
    print(f"load average {results['machine'].get('load_average')} (shared machine: noisy times)")
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
