"""Selection benchmark: force RMSE after adding frames chosen by gapx.select vs random frames.

EMT copper, 32-atom cells (``--repeat 2``). An initial model is fitted to a few 300 K bulk MD
frames. The pool holds unlabelled candidates of five kinds: bulk MD snapshots (Langevin, 300,
700, 1100 and 1500 K), strained bulk cells (hydrostatic -6..+8 % or random shear, rattled), a
vacancy cell in MD at 300 and 900 K, bulk cells with one atom displaced 0.4-0.7 Å in a random
direction (close contacts), and (100)/(111) slabs in MD at 300 and 800 K; MD snapshots
outnumber each other kind four to one (``--pool-md``, ``--pool-other``), as they would in a
pool harvested from simulations. The held-out test set holds the same five kinds in equal
numbers, from other seeds. ``--n-add`` frames are added to the initial training set, chosen
either by ``gapx.select`` or uniformly at random from the same pool (``--seeds`` draws),
labelled by EMT, and the model is refitted with the same settings. The script prints the
test-set force RMSE (eV/Å, components) per kind, the mean of the per-kind RMSEs and overall,
and the ratio select / random (the issue's goal: at most 0.85) against the mean over the random
draws, against the median draw, and on the per-kind mean. A draw that misses the rare
high-force frames does badly, which is what makes the mean larger than the median.

Measured (commit 8df5da3 + this script, shared 2-core machine, defaults: 25 added frames, 10
random draws; RMSE in eV/Å, ratio = select / random):

=========  ========  ===========  =============  ===============  ==================  ======
data seed  select    random mean  random median  ratio vs mean    ratio vs median     beats
=========  ========  ===========  =============  ===============  ==================  ======
0          0.0105    0.0201       0.0114         0.524            0.921               8/10
1          0.0136    0.0252       0.0179         0.538            0.760               7/10
2          0.0108    0.0260       0.0148         0.416            0.730               10/10
=========  ========  ===========  =============  ===============  ==================  ======

Select is worse than random on bulk MD and the vacancy (it adds 4-6 of the 80 MD frames) and
much better on surfaces and close contacts, which random draws often miss.

``--smoke`` runs a tiny pool and model in seconds (CI; judge no numbers from it).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_info, write_json  # noqa: E402

KINDS = ("md", "strained", "vacancy", "interstitial", "surface")


def _emt(atoms):
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.cell.rank == 3:
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _md_snapshots(start, temperature, n_frames, rng, interval=10, burn=40):
    """``n_frames`` EMT Langevin snapshots of ``start`` at ``temperature`` K (2 fs steps)."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin

    atoms = start.copy()
    atoms.calc = EMT()
    masses = atoms.get_masses()[:, None]
    kT = units.kB * temperature
    atoms.set_momenta(np.sqrt(masses * kT) * rng.standard_normal((len(atoms), 3)))
    dyn = Langevin(
        atoms, 2 * units.fs, temperature_K=temperature, friction=0.02, rng=rng, fixcm=False
    )
    dyn.run(burn)
    frames = []
    for _ in range(n_frames):
        dyn.run(interval)
        snapshot = atoms.copy()
        snapshot.calc = None
        frames.append(snapshot)
    return frames


def make_frames(kind: str, n_frames: int, seed: int, repeat: int) -> list:
    """``n_frames`` unlabelled Cu structures of one kind (``info["kind"]`` set)."""
    from ase.build import bulk, fcc100, fcc111

    rng = np.random.default_rng(seed)
    cell = bulk("Cu", "fcc", a=3.61, cubic=True) * (repeat, repeat, repeat)

    def trajectories(starts_and_temperatures):
        """``n_frames`` snapshots spread over one MD run per (start, temperature)."""
        out = []
        runs = len(starts_and_temperatures)
        for index, (start, temperature) in enumerate(starts_and_temperatures):
            count = n_frames // runs + (index < n_frames % runs)
            out += _md_snapshots(start, temperature, count, rng)
        return out

    frames = []
    if kind == "md":
        frames = trajectories([(cell, t) for t in (300, 700, 1100, 1500)])
    elif kind == "strained":
        for index in range(n_frames):
            atoms = cell.copy()
            if index % 2:
                eps = 0.05 * rng.standard_normal((3, 3))
                eps = 0.5 * (eps + eps.T)
            else:
                eps = rng.uniform(-0.06, 0.08) * np.eye(3)
            atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            atoms.positions += 0.05 * rng.standard_normal(atoms.positions.shape)
            frames.append(atoms)
    elif kind == "vacancy":
        vacancy = cell.copy()
        del vacancy[int(rng.integers(len(vacancy)))]
        frames = trajectories([(vacancy, 300), (vacancy, 900)])
    elif kind == "interstitial":
        for _ in range(n_frames):
            atoms = cell.copy()
            i = int(rng.integers(len(atoms)))
            direction = rng.standard_normal(3)
            atoms.positions[i] += rng.uniform(0.4, 0.7) * direction / np.linalg.norm(direction)
            atoms.positions += 0.03 * rng.standard_normal(atoms.positions.shape)
            frames.append(atoms)
    elif kind == "surface":
        slabs = []
        for build in (fcc100, fcc111):
            slab = build("Cu", size=(repeat, repeat, 2 * repeat), a=3.61, vacuum=5.0)
            slab.pbc = True
            slabs.append(slab)
        frames = trajectories([(slabs[0], 300), (slabs[1], 300), (slabs[0], 800), (slabs[1], 800)])
    else:
        raise ValueError(kind)
    for atoms in frames:
        atoms.info["kind"] = kind
    return frames


def build_model(smoke: bool):
    import gapx

    soap = gapx.SOAP(
        species=["Cu"],
        cutoff=4.5,
        n_max=3 if smoke else 6,
        l_max=2 if smoke else 4,
        atom_sigma=0.5,
        zeta=4,
        delta=0.2,
        n_sparse=30 if smoke else 300,
        sparse_method="cur",
    )
    two_body = gapx.TwoBody(cutoff=4.5, delta=0.5, theta=0.5, n_sparse=15)
    return gapx.GAP(
        [two_body, soap],
        sigma_energy=0.002,
        sigma_force=0.03,
        sigma_virial=0.02,
        e0="average",
        seed=0,
        verbose=False,
    )


def force_rmse(model, frames) -> dict:
    from gapx.evaluation import error_metrics

    errors = {kind: [] for kind in KINDS}
    for atoms in frames:
        predicted = model.predict(atoms, std=False)["forces"]
        errors[atoms.info["kind"]].append((predicted - atoms.get_forces()).ravel())
    out = {k: error_metrics(np.concatenate(v))["rmse"] for k, v in errors.items() if v}
    out["overall"] = error_metrics(np.concatenate([np.concatenate(v) for v in errors.values()]))[
        "rmse"
    ]
    out["kind_mean"] = float(np.mean([out[k] for k in KINDS if k in out]))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-add", type=int, default=25, help="frames added (default 25)")
    parser.add_argument("--n-initial", type=int, default=4, help="initial 300 K MD frames")
    parser.add_argument("--pool-md", type=int, default=80, help="MD frames in the pool")
    parser.add_argument("--pool-other", type=int, default=20, help="pool frames of other kinds")
    parser.add_argument("--test-per-kind", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=10, help="random draws to average")
    parser.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="shifts the seeds of the initial, pool and test data",
    )
    parser.add_argument("--repeat", type=int, default=2, help="cubic cells per side")
    parser.add_argument("--noise", type=float, default=None, help="gapx.select noise (eV)")
    parser.add_argument("--environments", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="tiny pool and model (seconds)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_add, args.n_initial, args.pool_md, args.pool_other = 3, 2, 4, 2
        args.test_per_kind, args.seeds, args.repeat = 1, 1, 1

    import gapx

    start = time.perf_counter()
    from ase.build import bulk

    cell = bulk("Cu", "fcc", a=3.61, cubic=True) * ((args.repeat,) * 3)
    shift = 1000 * args.data_seed
    initial = [
        _emt(a) for a in _md_snapshots(cell, 300, args.n_initial, np.random.default_rng(1 + shift))
    ]
    for atoms in initial:
        atoms.info["kind"] = "md"
    pool = []
    for k, kind in enumerate(KINDS):
        count = args.pool_md if kind == "md" else args.pool_other
        pool += make_frames(kind, count, seed=shift + 100 + k, repeat=args.repeat)
    test = []
    for k, kind in enumerate(KINDS):
        test += [
            _emt(a) for a in make_frames(kind, args.test_per_kind, shift + 200 + k, args.repeat)
        ]
    labelled_pool = [_emt(a) for a in pool]
    data_seconds = time.perf_counter() - start

    model = build_model(args.smoke)
    model.fit(initial)
    baseline = force_rmse(model, test)

    start = time.perf_counter()
    selection = gapx.learning.select_frames(
        model, pool, args.n_add, noise=args.noise, environments=args.environments
    )
    select_seconds = time.perf_counter() - start
    chosen = sorted(int(i) for i in selection.indices)

    def refit(indices):
        refitted = build_model(args.smoke)
        refitted.fit(initial + [labelled_pool[i] for i in indices])
        return force_rmse(refitted, test)

    selected = refit(chosen)
    random_runs = []
    for seed in range(args.seeds):
        draw = np.random.default_rng(seed).choice(len(pool), size=args.n_add, replace=False)
        random_runs.append(refit(sorted(int(i) for i in draw)))
    random_mean = {k: float(np.mean([r[k] for r in random_runs])) for k in selected}
    random_median = {k: float(np.median([r[k] for r in random_runs])) for k in selected}
    ratio = selected["overall"] / random_mean["overall"]
    ratio_median = selected["overall"] / random_median["overall"]
    ratio_kinds = selected["kind_mean"] / random_mean["kind_mean"]
    beaten = float(np.mean([r["overall"] > selected["overall"] for r in random_runs]))

    picked_kinds = {kind: sum(pool[i].info["kind"] == kind for i in chosen) for kind in KINDS}
    print(
        f"pool {len(pool)} frames ({args.pool_md} md, {args.pool_other} of each other kind), "
        f"test {len(test)}, initial {len(initial)}, added {args.n_add}"
    )
    print("select picked: " + ", ".join(f"{k} {v}" for k, v in picked_kinds.items()))
    print(f"select time {select_seconds:.1f} s, data {data_seconds:.1f} s")
    columns = (*KINDS, "kind_mean", "overall")
    print(f"{'force RMSE (eV/A)':<18}" + "".join(f"{k:>13}" for k in columns))
    rows = [("initial", baseline), ("select", selected), ("random (mean)", random_mean)]
    rows += [("random (median)", random_median)]
    rows += [(f"random seed {s}", r) for s, r in enumerate(random_runs)]
    for name, values in rows:
        print(f"{name:<18}" + "".join(f"{values[k]:>13.4f}" for k in columns))
    print(f"ratio select / random: {ratio:.3f} (goal <= 0.85)")
    print(
        f"  against the median random draw {ratio_median:.3f}; on the mean of per-kind RMSEs "
        f"{ratio_kinds:.3f}; select beats {beaten:.0%} of the {len(random_runs)} random draws"
    )
    results = {
        "benchmark": "gapx.select vs random frames, EMT Cu, force RMSE on a mixed test set",
        "settings": vars(args),
        "select_seconds": select_seconds,
        "chosen": chosen,
        "chosen_kinds": picked_kinds,
        "scores": selection.scores.tolist(),
        "initial": baseline,
        "select": selected,
        "random": random_runs,
        "random_mean": random_mean,
        "random_median": random_median,
        "ratio": ratio,
        "ratio_median": ratio_median,
        "ratio_kind_mean": ratio_kinds,
        "fraction_of_random_draws_beaten": beaten,
        "machine": machine_info(),
    }
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
