"""Cross-validated search of the descriptor hyperparameters, with the evidence inside each trial.

:func:`tune` searches cutoff, atom_sigma, n_max, l_max, zeta and n_sparse of the config's SOAP
term, and whether to add a TwoBody term, by k-fold cross-validation over frames
(:func:`kfold_splits`), with Optuna's TPE sampler (seeded: the same data, config, budget-free
trial count and seed give the same trials). Each fold's model is fitted with
``optimize="evidence"``, so delta and the noise sigmas are chosen by the evidence on that fold's
training frames and only the descriptor settings are searched. The score is
``energy_weight * energy MAE (eV/atom) + force_weight * force MAE (eV/Å)`` on the held-out folds.
The search stops at a wall-clock deadline (a trial still running is abandoned between folds).
Given a Dask client, trials run on its workers, a batch of one per worker at a time
(:func:`_search_on_cluster`); otherwise one after another here, where a trial worse than the
median after a fold stops there (:func:`_search_here`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .evaluation import error_metrics
from .labels import extract_labels

#: Default search ranges: (low, high) for numbers, a list of choices for two_body.
DEFAULT_SPACE = {
    "cutoff": (3.0, 6.0),
    "atom_sigma": (0.3, 0.7),
    "n_max": (4, 10),
    "l_max": (3, 8),
    "zeta": (1, 6),
    "n_sparse": (50, 1000),
    "two_body": [False, True],
}
INTEGER = ("n_max", "l_max", "zeta", "n_sparse")
#: Keys of the ``[tune]`` table besides the ranges.
SETTINGS = {"energy_weight": 10.0, "force_weight": 1.0, "trials": 50, "seed": 0, "folds": 5}
#: Below this budget (s) not even one trial of the smallest model can finish.
MIN_BUDGET = 5.0


def search_space(table: dict | None) -> tuple[dict, dict]:
    """``(space, settings)`` from a config's ``[tune]`` table over the defaults; raises
    ValueError (one line) on an unknown name or an empty or inverted range."""
    table = dict(table or {})
    unknown = [k for k in table if k not in DEFAULT_SPACE and k not in SETTINGS]
    if unknown:
        valid = ", ".join([*DEFAULT_SPACE, *SETTINGS])
        raise ValueError(f"[tune]: unknown hyperparameter {unknown[0]!r}; valid: {valid}")
    space = dict(DEFAULT_SPACE)
    settings = dict(SETTINGS)
    for name, value in table.items():
        if name in SETTINGS:
            settings[name] = value
            continue
        if name == "two_body":
            choices = [bool(v) for v in (value if isinstance(value, list) else [value])]
            if not choices:
                raise ValueError("[tune]: two_body has no choices (give [false, true])")
            space[name] = sorted(set(choices))
            continue
        if not isinstance(value, list) or len(value) != 2:
            raise ValueError(f"[tune]: {name} must be a range [low, high], got {value!r}")
        low, high = value
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float))):
            raise ValueError(f"[tune]: {name} range must be numbers, got {value!r}")
        if low > high or (low == high and name not in INTEGER):
            raise ValueError(f"[tune]: {name} range [{low}, {high}] is empty or inverted")
        if low <= 0:
            raise ValueError(f"[tune]: {name} range must be positive, got [{low}, {high}]")
        space[name] = (low, high)
    return space, settings


def kfold_splits(frames, k: int, seed: int, config_type_key: str = "config_type"):
    """``k`` (train, test) index lists splitting frames (never atoms): frames of each config
    type are shuffled (seeded) and dealt round-robin over the folds, so every config type
    spreads over all folds."""
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    if len(frames) < k:
        raise ValueError(f"{len(frames)} frames cannot be split into {k} folds")
    rng = np.random.default_rng(seed)
    by_type: dict[str, list[int]] = {}
    for n, atoms in enumerate(frames):
        by_type.setdefault(str(atoms.info.get(config_type_key)), []).append(n)
    folds: list[list[int]] = [[] for _ in range(k)]
    position = 0
    for name in sorted(by_type):
        for n in rng.permutation(by_type[name]):
            folds[position % k].append(int(n))
            position += 1
    return [
        (sorted(n for j, fold in enumerate(folds) if j != i for n in fold), sorted(folds[i]))
        for i in range(k)
    ]


class Deadline(Exception):
    """The wall-clock budget ended inside a trial."""


@dataclass
class CVResult:
    score: float
    energy_mae: float | None
    force_mae: float | None
    per_config_type: dict = field(default_factory=dict)
    seconds: float = 0.0


def _cv_errors(errors: dict, weights) -> CVResult:
    """The :class:`CVResult` of held-out errors ``{config_type: {"energy": [...], "forces":
    [...]}}`` (``seconds`` left 0)."""

    def metrics(groups) -> tuple:
        e = [x for g in groups for x in g["energy"]]
        f = [x for g in groups for x in g["forces"]]
        return error_metrics(e)["mae"], error_metrics(np.concatenate(f) if f else [])["mae"]

    energy, force = metrics(errors.values())
    score = weights[0] * (energy or 0.0) + weights[1] * (force or 0.0)
    per_type = {}
    for name, group in errors.items():
        e, f = metrics([group])
        per_type[name] = {"energy_mae": e, "force_mae": f}
    return CVResult(score, energy, force, per_type)


def cross_validate(
    make_model, frames, splits, weights, deadline=math.inf, client=None, on_fold=None
):
    """Fit ``make_model()`` on each split's training frames, predict its test frames; returns a
    :class:`CVResult` (MAEs over all held-out frames, per config type too). ``on_fold(i,
    score)`` is called after split i with the score of the splits so far (it may raise to stop
    the trial, e.g. Optuna's pruning)."""
    start = time.perf_counter()
    errors: dict[str, dict[str, list]] = {}
    for i, (train, test) in enumerate(splits):
        if time.perf_counter() > deadline:
            raise Deadline
        model = make_model()
        model.fit([frames[n] for n in train], client=client)
        for n in test:
            atoms = frames[n]
            labels = extract_labels(atoms, n, **model.keys)
            structure = atoms.copy()
            structure.calc = None
            out = model.predict(structure, std=False)
            group = errors.setdefault(str(labels.config_type), {"energy": [], "forces": []})
            if labels.energy is not None:
                group["energy"].append((out["energy"] - labels.energy) / len(atoms))
            if labels.forces is not None:
                group["forces"].append((out["forces"] - labels.forces).ravel())
        if on_fold is not None and i + 1 < len(splits):
            on_fold(i, _cv_errors(errors, weights).score)
    result = _cv_errors(errors, weights)
    result.seconds = time.perf_counter() - start
    return result


def trial_config(base: dict, params: dict) -> dict:
    """``base`` (a validated ``gapx fit`` config) with ``params`` set on its SOAP term, a
    TwoBody term added or removed, and ``optimize = "evidence"``."""
    config = copy.deepcopy(base)
    terms = [t for t in config["terms"] if t["type"] not in ("two_body", "twobody", "2b")]
    soap = next(t for t in terms if t["type"] == "soap")
    for name in ("cutoff", "atom_sigma", "n_max", "l_max", "zeta", "n_sparse"):
        if name in params:
            soap[name] = params[name]
    soap.setdefault("cutoff_transition_width", 1.0)
    soap["cutoff_transition_width"] = min(soap["cutoff_transition_width"], soap["cutoff"])
    if params.get("two_body"):
        given = [t for t in base["terms"] if t["type"] in ("two_body", "twobody", "2b")]
        terms.insert(
            0,
            given[0]
            if given
            else {
                "type": "two_body",
                "cutoff": soap["cutoff"],
                "delta": 1.0,
                "theta": 1.0,
                "n_sparse": 20,
            },
        )
    config["terms"] = terms
    config["fit"]["optimize"] = "evidence"
    return config


def suggest(trial, space: dict) -> dict:
    """Optuna suggestions for every searched hyperparameter (fixed where a range is a point)."""
    params = {}
    for name, value in space.items():
        if name == "two_body":
            params[name] = trial.suggest_categorical(name, list(value))
        elif name in INTEGER:
            params[name] = trial.suggest_int(
                name, int(value[0]), int(value[1]), log=name == "n_sparse"
            )
        else:
            params[name] = trial.suggest_float(name, float(value[0]), float(value[1]))
    return params


def tuned_config(config: dict, model) -> dict:
    """``config`` with the deltas and sigmas of ``model`` (fitted or evidence-optimised) and
    without ``optimize``: a config ``gapx fit`` reproduces the tuned model from."""
    config = copy.deepcopy(config)
    for table, term in zip(config["terms"], model.terms, strict=True):
        table["delta"] = float(term.delta)
    fit = config["fit"]
    fit.pop("optimize", None)
    fit["sigma_energy"] = float(model.sigma_energy)
    fit["sigma_force"] = float(model.sigma_force)
    fit["sigma_virial"] = float(model.sigma_virial)
    if model.config_type_sigma:
        fit["config_type_sigma"] = {
            k: [float(x) for x in v] for k, v in model.config_type_sigma.items()
        }
    return config


def learning_curves(config, build_model, frames, splits, weights, deadline, client=None):
    """CV errors of ``config`` against the fraction of each training fold used and against
    n_sparse (fractions of the config's); stops at ``deadline``. Returns a dict of curves."""
    soap = next(t for t in config["terms"] if t["type"] == "soap")
    curves = {"n_frames": [], "n_sparse": []}
    rng = np.random.default_rng(0)
    try:
        for fraction in (0.25, 0.5, 1.0):
            sub = [
                (sorted(rng.permutation(train)[: max(1, int(round(fraction * len(train))))]), test)
                for train, test in splits
            ]
            result = cross_validate(
                lambda: build_model(config), frames, sub, weights, deadline, client
            )
            curves["n_frames"].append({"n_frames": len(sub[0][0]), **_cv_row(result)})
        for fraction in (0.25, 0.5, 1.0):
            n_sparse = max(2, int(round(fraction * soap["n_sparse"])))
            trial = copy.deepcopy(config)
            next(t for t in trial["terms"] if t["type"] == "soap")["n_sparse"] = n_sparse
            result = cross_validate(
                lambda t=trial: build_model(t), frames, splits, weights, deadline, client
            )
            curves["n_sparse"].append({"n_sparse": n_sparse, **_cv_row(result)})
    except Deadline:
        curves["complete"] = False
    else:
        curves["complete"] = True
    return curves


def _cv_row(result: CVResult) -> dict:
    return {
        "score": result.score,
        "energy_mae": result.energy_mae,
        "force_mae": result.force_mae,
        "per_config_type": result.per_config_type,
        "seconds": result.seconds,
    }


def _search_here(
    optuna, frames, base, build_model, space, splits, weights, n_trials, end, seed, client, progress
):
    """Trials one after another in this process (each fit's blocks on ``client`` when given);
    a trial whose score after a fold is worse than the median of the earlier trials at that
    fold stops there (two trials complete before any is pruned). Returns ``(rows, pruned)``."""
    rows, pruned, trial = [], 0, None

    def prune_early(fold, score):
        nonlocal pruned
        trial.report(score, fold)
        if trial.should_prune():
            pruned += 1
            raise optuna.TrialPruned(f"fold {fold + 1}: worse than the median trial")

    def objective(optuna_trial):
        nonlocal trial
        trial = optuna_trial
        params = suggest(trial, space)
        config = trial_config(base, params)
        try:
            result = cross_validate(
                lambda: build_model(config), frames, splits, weights, end, client, prune_early
            )
        except Deadline:
            raise optuna.TrialPruned("budget ended") from None
        rows.append({"number": trial.number, "params": params, **_cv_row(result)})
        if progress is not None:
            progress(rows[-1])
        return result.score

    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    study.optimize(objective, n_trials=n_trials, timeout=max(end - time.perf_counter(), 1e-3))
    return rows, pruned


def _cluster_trial(config, build_model, frames, splits, weights, seconds):
    """One trial's CV on a worker (its fits local there) within ``seconds``; None when the
    time ran out first."""
    try:
        result = cross_validate(
            lambda: build_model(config), frames, splits, weights, time.perf_counter() + seconds
        )
    except Deadline:
        return None
    return _cv_row(result)


def _search_on_cluster(
    optuna, frames, base, build_model, space, splits, weights, n_trials, end, seed, client, progress
):
    """Trials in batches of one per worker, each trial's CV on one worker: the batch is asked
    of Optuna together (TPE with the constant liar, so a batch spreads out) and told in trial
    order once all are back, so the search is deterministic for a seed and a number of workers.
    No pruning (a trial runs on its worker without talking back). Returns ``(rows, 0)``."""
    n_workers = max(1, len(client.scheduler_info()["workers"]))
    shared = client.scatter([frames, splits], broadcast=True)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True),
    )
    rows = []
    while len(study.trials) < n_trials and time.perf_counter() < end:
        batch = [study.ask() for _ in range(min(n_workers, n_trials - len(study.trials)))]
        params = [suggest(trial, space) for trial in batch]
        seconds = end - time.perf_counter()
        futures = [
            client.submit(
                _cluster_trial,
                trial_config(base, p),
                build_model,
                *shared,
                weights,
                seconds,
                pure=False,
            )
            for p in params
        ]
        for trial, p, row in zip(batch, params, client.gather(futures), strict=True):
            if row is None:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
            study.tell(trial, row["score"])
            rows.append({"number": trial.number, "params": p, **row})
            if progress is not None:
                progress(rows[-1])
    return rows, 0


def tune(
    frames,
    base: dict,
    build_model,
    budget: float,
    space: dict,
    settings: dict,
    curves: bool = False,
    client=None,
    progress=None,
) -> dict:
    """Search ``space`` by CV within ``budget`` seconds; returns the report (JSON values) with
    ``best`` (params, CV errors), ``config`` (the tuned config), ``trials`` (those that
    completed), ``n_pruned`` (stopped after a fold worse than the median), ``complete`` (False
    when the budget ended the search before ``settings["trials"]`` trials) and, when
    ``curves``, ``learning_curves``. ``build_model(config)`` makes an unfitted GAP."""
    import optuna

    start = time.perf_counter()
    end = start + budget
    # The rest of the budget: the trial running at the deadline, the final evidence optimisation
    # on all frames and the learning curves (measured: 1.5x overrun when the search took 85 %).
    search_end = start + budget * (0.4 if curves else 0.6)
    weights = (float(settings["energy_weight"]), float(settings["force_weight"]))
    splits = kfold_splits(
        frames, int(settings["folds"]), int(settings["seed"]), base["keys"]["config_type"]
    )
    n_trials = int(settings["trials"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = _search_here if client is None else _search_on_cluster
    rows, pruned = search(
        optuna,
        frames,
        base,
        build_model,
        space,
        splits,
        weights,
        n_trials,
        search_end,
        int(settings["seed"]),
        client,
        progress,
    )
    if not rows:
        raise ValueError(
            f"the budget ({budget:g} s) ended before one trial finished: give a larger --budget"
        )
    best = min(rows, key=lambda r: r["score"])
    config = trial_config(base, best["params"])
    model = build_model(config)
    from .hyperparameters import apply, optimize_hyperparameters

    found, _ = optimize_hyperparameters(model, frames, client=client)
    apply(model, found)
    report = {
        "complete": len(rows) + pruned >= n_trials,
        "budget_seconds": budget,
        "n_trials": len(rows),
        "n_pruned": pruned,
        "folds": int(settings["folds"]),
        "weights": {"energy": weights[0], "force": weights[1]},
        "space": {k: list(v) for k, v in space.items()},
        "best": best,
        "evidence": found.report(),
        "trials": rows,
        "config": tuned_config(config, model),
    }
    if curves:
        report["learning_curves"] = learning_curves(
            tuned_config(config, model), build_model, frames, splits, weights, end, client
        )
    report["seconds"] = time.perf_counter() - start
    return report
