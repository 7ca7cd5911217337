"""The ``gapx`` command line: ``fit``, ``eval``, ``md`` and ``info``, a thin layer over the modules.

Every command is a function ``cmd_<name>(args) -> int`` so tests and scripts can call
``gapx.cli.main([...])`` without a subprocess. User errors (missing files, bad configs, unknown
keys, bad values) print one ``gapx <command>: error: ...`` line on stderr and return exit code 1;
argparse usage errors return 2. ``--traceback`` shows the full Python traceback instead.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import json
import math
import os
import sys
import time
from collections import Counter

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class CLIError(Exception):
    """A user error: reported as one line on stderr, exit code 1, no traceback."""


# --------------------------------------------------------------------------------------------
# Configuration of `gapx fit`
# --------------------------------------------------------------------------------------------

#: Names accepted for ``type`` in a ``[[terms]]`` table, mapped to the gapx class name.
TERM_TYPES = {
    "soap": "SOAP",
    "two_body": "TwoBody",
    "twobody": "TwoBody",
    "2b": "TwoBody",
}

#: Keys of the ``[keys]`` table: where each label lives in the extxyz files.
DEFAULT_KEYS = {
    "energy": "energy",
    "forces": "forces",
    "virial": "virial",
    "stress": "stress",
    "config_type": "config_type",
}

TOP_LEVEL_KEYS = ("terms", "fit", "keys", "baseline", "output")

EXAMPLE_CONFIG = """\
[[terms]]
type = "two_body"
cutoff = 5.0
delta = 1.0
theta = 1.0
n_sparse = 20

[[terms]]
type = "soap"          # species default to those in the training data
cutoff = 5.0
n_max = 6
l_max = 4
atom_sigma = 0.5
zeta = 4
delta = 1.0
n_sparse = 300
sparse_method = "cur"

[fit]
sigma_energy = 0.001   # eV/atom
sigma_force = 0.03     # eV/A
sigma_virial = 0.05    # eV/atom
e0 = "average"
seed = 0

[fit.config_type_sigma]  # energy, force, virial sigmas per config_type
liquid = [0.003, 0.15, 0.2]

[keys]                 # names of the labels in the extxyz files
energy = "energy"
forces = "forces"
virial = "virial"
stress = "stress"
config_type = "config_type"

[output]
model = "model.gapx"
"""


def _gapx():
    import gapx

    return gapx


def _keyword_names(cls, skip=()) -> list[str]:
    """Keyword parameters accepted by ``cls`` (a dataclass or a plain class)."""
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in skip]
    params = inspect.signature(cls).parameters.values()
    return [
        p.name
        for p in params
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in skip
    ]


def _requires(cls, name: str) -> bool:
    """Whether ``cls`` needs keyword ``name`` (it has no default)."""
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name == name:
                return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        return False
    param = inspect.signature(cls).parameters.get(name)
    return param is not None and param.default is inspect.Parameter.empty


def _check_keys(table: dict, valid, where: str) -> None:
    unknown = [k for k in table if k not in valid]
    if unknown:
        raise CLIError(
            f"unknown key {unknown[0]!r} in {where}; valid keys: {', '.join(sorted(valid))}"
        )


def read_config(path: str) -> dict:
    """Read a TOML config file, turning parse errors into CLIError."""
    if not os.path.isfile(path):
        raise CLIError(f"config file not found: {path}")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise CLIError(f"cannot parse config file {path}: {error}") from None


def _parse_value(text: str):
    """A TOML value (number, bool, string, array, inline table), or the bare text as a string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(config: dict, assignment: str) -> None:
    """Apply one ``--set key.path=value`` to ``config`` in place.

    The path is dotted: ``fit.sigma_energy``, ``keys.energy``, ``terms.1.n_max`` (index into the
    ``[[terms]]`` list, from 0) or ``soap.n_max`` (the only term of that type).
    """
    if "=" not in assignment:
        raise CLIError(f"bad override {assignment!r}: expected key=value, e.g. fit.seed=1")
    path, text = assignment.split("=", 1)
    parts = [p.strip() for p in path.strip().split(".")]
    if not parts or any(not p for p in parts) or len(parts) < 2:
        raise CLIError(
            f"bad override {assignment!r}: key must be a dotted path such as "
            "fit.sigma_energy, terms.1.n_max or soap.n_max"
        )
    value = _parse_value(text.strip())
    head = parts[0]
    if head in TERM_TYPES:
        matches = [
            t for t in config.get("terms", []) if TERM_TYPES.get(str(t.get("type", "")).lower())
        ]
        matches = [t for t in matches if TERM_TYPES[t["type"].lower()] == TERM_TYPES[head]]
        if len(matches) != 1:
            raise CLIError(
                f"bad override {assignment!r}: {len(matches)} terms of type {head!r} in the "
                "config; use terms.<index>.<key> instead"
            )
        node, parts = matches[0], parts[1:]
    elif head == "terms":
        terms = config.get("terms", [])
        try:
            index = int(parts[1])
            node = terms[index]
        except (ValueError, IndexError):
            raise CLIError(
                f"bad override {assignment!r}: terms.{parts[1]} does not name one of the "
                f"{len(terms)} terms (indices start at 0)"
            ) from None
        parts = parts[2:]
        if not parts:
            raise CLIError(f"bad override {assignment!r}: missing the key after terms.{index}")
    elif head in TOP_LEVEL_KEYS:
        node, parts = config.setdefault(head, {}), parts[1:]
    else:
        valid = list(TOP_LEVEL_KEYS) + sorted(set(TERM_TYPES))
        raise CLIError(
            f"bad override {assignment!r}: unknown section {head!r}; valid: {', '.join(valid)}"
        )
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise CLIError(f"bad override {assignment!r}: {part!r} is not a table")
        node = child
    node[parts[-1]] = value


def validate_config(config: dict) -> dict:
    """Check sections and keys; return a normalised copy with defaults filled in."""
    gapx = _gapx()
    config = copy.deepcopy(config)
    _check_keys(config, TOP_LEVEL_KEYS, "the config")
    terms = config.get("terms")
    if not terms:
        raise CLIError("the config has no [[terms]]: give at least one descriptor term")
    if not isinstance(terms, list) or not all(isinstance(t, dict) for t in terms):
        raise CLIError("'terms' must be an array of tables ([[terms]])")
    for index, term in enumerate(terms):
        kind = term.get("type")
        if kind is None:
            raise CLIError(f"terms[{index}] has no 'type'; valid types: {', '.join(TERM_TYPES)}")
        name = TERM_TYPES.get(str(kind).lower())
        if name is None or not hasattr(gapx, name):
            raise CLIError(
                f"terms[{index}]: unknown type {kind!r}; valid types: {', '.join(TERM_TYPES)}"
            )
        _check_keys(
            {k: v for k, v in term.items() if k != "type"},
            _keyword_names(getattr(gapx, name)),
            f"terms[{index}] ({kind})",
        )
    fit = config.setdefault("fit", {})
    fit_keys = _keyword_names(gapx.GAP, skip=("terms", "descriptors", "baseline", "self"))
    _check_keys(fit, fit_keys, "[fit]")
    keys = config.setdefault("keys", {})
    _check_keys(keys, DEFAULT_KEYS, "[keys]")
    for key, value in keys.items():
        if not isinstance(value, str):
            raise CLIError(f"[keys] {key} must be a string, got {value!r}")
    config["keys"] = {**DEFAULT_KEYS, **keys}
    baseline = config.get("baseline")
    if baseline is not None:
        if not isinstance(baseline, dict) or str(baseline.get("type", "")).lower() != "ewald":
            raise CLIError('[baseline] must have type = "ewald" (the only baseline)')
        _check_keys(
            {k: v for k, v in baseline.items() if k != "type"},
            _keyword_names(gapx.Ewald),
            "[baseline] (ewald)",
        )
    output = config.setdefault("output", {})
    _check_keys(output, ("model",), "[output]")
    return config


def build_model(config: dict, species: list[str]):
    """Construct an unfitted ``gapx.GAP`` from a validated config."""
    gapx = _gapx()
    terms = []
    for index, table in enumerate(config["terms"]):
        cls = getattr(gapx, TERM_TYPES[str(table["type"]).lower()])
        kwargs = {k: v for k, v in table.items() if k != "type"}
        if _requires(cls, "species") and "species" not in kwargs:
            kwargs["species"] = list(species)
        try:
            terms.append(cls(**kwargs))
        except (TypeError, ValueError) as error:
            raise CLIError(f"terms[{index}] ({table['type']}): {error}") from None
    fit = dict(config["fit"])
    if "config_type_sigma" in fit:
        table = fit["config_type_sigma"]
        if not isinstance(table, dict):
            raise CLIError("[fit] config_type_sigma must be a table: name = [e, f, v]")
        fit["config_type_sigma"] = {k: tuple(v) for k, v in table.items()}
    baseline = None
    if config.get("baseline") is not None:
        kwargs = {k: v for k, v in config["baseline"].items() if k != "type"}
        try:
            baseline = gapx.Ewald(**kwargs)
        except (TypeError, ValueError) as error:
            raise CLIError(f"[baseline]: {error}") from None
    try:
        if baseline is not None:
            return gapx.GAP(terms, baseline=baseline, **fit)
        return gapx.GAP(terms, **fit)
    except (TypeError, ValueError) as error:
        raise CLIError(f"[fit]: {error}") from None


# --------------------------------------------------------------------------------------------
# Reading labelled frames
# --------------------------------------------------------------------------------------------


def read_frames(paths, index: str = ":") -> list:
    """All frames of the given extxyz (or any ase.io-readable) files, in order."""
    import ase.io

    frames = []
    for path in paths:
        if not os.path.isfile(path):
            raise CLIError(f"file not found: {path}")
        try:
            read = ase.io.read(path, index=index)
        except Exception as error:  # ase.io raises many types for unreadable files
            raise CLIError(f"cannot read {path}: {error}") from None
        read = read if isinstance(read, list) else [read]
        if not read:
            raise CLIError(f"no frames in {path}")
        frames.extend(read)
    return frames


def _calc_results(atoms) -> dict:
    calc = atoms.calc
    return dict(getattr(calc, "results", {}) or {}) if calc is not None else {}


def frame_labels(atoms, keys: dict) -> dict:
    """Reference labels of one frame: ``energy`` (eV), ``forces`` (N,3), ``virial`` (3,3) eV.

    Labels are looked up under the names in ``keys`` in the calculator results that ase.io
    attaches (standard names), then in ``atoms.info`` / ``atoms.arrays``. A stress is turned
    into a virial, ``virial = -stress * volume``.
    """
    results = _calc_results(atoms)
    labels = {}
    energy = results.get(keys["energy"], atoms.info.get(keys["energy"]))
    if energy is not None:
        labels["energy"] = float(energy)
    forces = results.get(keys["forces"])
    if forces is None:
        forces = atoms.arrays.get(keys["forces"])
    if forces is not None:
        labels["forces"] = np.asarray(forces, dtype=np.float64).reshape(len(atoms), 3)
    virial = results.get(keys["virial"], atoms.info.get(keys["virial"]))
    if virial is not None:
        labels["virial"] = np.asarray(virial, dtype=np.float64).reshape(3, 3)
    else:
        stress = results.get(keys["stress"], atoms.info.get(keys["stress"]))
        if stress is not None and atoms.cell.rank == 3:
            stress = np.asarray(stress, dtype=np.float64)
            if stress.size == 6:
                from ase.stress import voigt_6_to_full_3x3_stress

                stress = voigt_6_to_full_3x3_stress(stress)
            labels["virial"] = -stress.reshape(3, 3) * atoms.get_volume()
    return labels


def config_type(atoms, keys: dict) -> str:
    return str(atoms.info.get(keys["config_type"], "default"))


def training_frames(frames, keys: dict) -> list:
    """Copies of ``frames`` whose labels sit where ``GAP.fit`` reads them.

    Labels go into a SinglePointCalculator under ASE's standard names (energy, forces, stress),
    and the config type into ``info["config_type"]``; other info entries (per-frame sigmas) are
    kept. The user's files may use other names (the ``[keys]`` table).
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.stress import full_3x3_to_voigt_6_stress

    out = []
    for atoms in frames:
        labels = frame_labels(atoms, keys)
        clean = atoms.copy()
        clean.calc = None
        clean.info["config_type"] = config_type(atoms, keys)
        results = {}
        if "energy" in labels:
            results["energy"] = labels["energy"]
        if "forces" in labels:
            results["forces"] = labels["forces"]
        if "virial" in labels:
            clean.info["virial"] = labels["virial"]
            if atoms.cell.rank == 3:
                stress = -labels["virial"] / atoms.get_volume()
                results["stress"] = full_3x3_to_voigt_6_stress(stress)
        if results:
            clean.calc = SinglePointCalculator(clean, **results)
        out.append(clean)
    return out


def data_summary(frames, keys: dict) -> dict:
    """Counts describing a training or test set."""
    n_atoms = np.array([len(a) for a in frames])
    species = Counter()
    for atoms in frames:
        species.update(atoms.get_chemical_symbols())
    types = Counter(config_type(a, keys) for a in frames)
    present = Counter()
    for atoms in frames:
        present.update(frame_labels(atoms, keys).keys())
    return {
        "n_frames": len(frames),
        "n_atoms": int(n_atoms.sum()),
        "atoms_per_frame": (int(n_atoms.min()), int(n_atoms.max())),
        "species": dict(sorted(species.items(), key=lambda kv: _atomic_number(kv[0]))),
        "config_types": dict(types),
        "labels": {k: int(present.get(k, 0)) for k in ("energy", "forces", "virial")},
        "periodic": int(sum(a.cell.rank == 3 and all(a.pbc) for a in frames)),
    }


def _atomic_number(symbol: str) -> int:
    from ase.data import atomic_numbers

    return atomic_numbers.get(symbol, 0)


def print_summary(summary: dict, stream=None) -> None:
    stream = stream or sys.stdout
    lo, hi = summary["atoms_per_frame"]
    size = f"{lo}" if lo == hi else f"{lo}-{hi}"
    species = ", ".join(f"{s} {n}" for s, n in summary["species"].items())
    types = ", ".join(f"{t} ({n})" for t, n in summary["config_types"].items())
    labels = ", ".join(f"{k} {n}" for k, n in summary["labels"].items())
    print(
        f"data: {summary['n_frames']} frames, {summary['n_atoms']} atoms ({size} per frame), "
        f"{summary['periodic']} periodic",
        file=stream,
    )
    print(f"  species: {species}", file=stream)
    print(f"  config types: {types}", file=stream)
    print(f"  labelled frames: {labels}", file=stream)


def memory_estimate(model, frames, summary: dict) -> int:
    """Bytes needed by the fit's design matrix: the model's own estimate when it offers one."""
    estimator = getattr(model, "estimate_memory", None)
    if callable(estimator):
        try:
            return int(estimator(frames))
        except Exception:  # fall back to the rough count below
            pass
    n_rows = summary["labels"]["energy"] + 9 * summary["labels"]["virial"]
    n_rows += 3 * sum(len(a) for a in frames)
    n_cols = sum(int(getattr(t, "n_sparse", 0) or 0) for t in getattr(model, "terms", []))
    # K_NM plus the stacked QR copy, float64.
    return 2 * 8 * n_rows * max(n_cols, 1)


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# --------------------------------------------------------------------------------------------
# gapx fit
# --------------------------------------------------------------------------------------------


def cmd_fit(args) -> int:
    config = read_config(args.config)
    for assignment in args.set or []:
        apply_override(config, assignment)
    config = validate_config(config)
    keys = config["keys"]
    frames = read_frames(args.train)
    summary = data_summary(frames, keys)
    print_summary(summary)
    if summary["labels"]["energy"] + summary["labels"]["forces"] == 0:
        raise CLIError(
            f"no frame has an energy (key {keys['energy']!r}) or forces (key "
            f"{keys['forces']!r}); set the [keys] table to the names used in the files"
        )
    species = list(summary["species"])
    model = build_model(config, species)
    print(f"memory estimate for the fit: {_format_bytes(memory_estimate(model, frames, summary))}")
    output = args.output or config["output"].get("model") or "model.gapx"
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise CLIError(f"output directory does not exist: {directory}")
    start = time.perf_counter()
    model.fit(training_frames(frames, keys))
    elapsed = time.perf_counter() - start
    model.save(output)
    print(f"fitted in {elapsed:.1f} s; model written to {output}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# gapx eval
# --------------------------------------------------------------------------------------------


def _metrics(errors: np.ndarray) -> dict:
    errors = np.asarray(errors, dtype=np.float64).ravel()
    if errors.size == 0:
        return {"rmse": None, "mae": None, "n": 0}
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "n": int(errors.size),
    }


def evaluate(model, frames, keys: dict, progress: bool = True) -> dict:
    """Predict every frame; return errors per config type and overall, plus parity data.

    Energies are compared per atom (eV/atom), forces per Cartesian component (eV/Å), virials
    per atom (eV/atom) as in gap_fit's sigma_virial.
    """
    from tqdm.auto import tqdm

    groups: dict[str, dict[str, list]] = {}
    parity = {"energy": [], "forces": [], "config_type": [], "force_config_type": []}
    for atoms in tqdm(frames, desc="eval", unit="frame", disable=not progress, leave=False):
        labels = frame_labels(atoms, keys)
        structure = atoms.copy()
        structure.calc = None
        out = model.predict(structure)
        ctype = config_type(atoms, keys)
        group = groups.setdefault(
            ctype, {"energy": [], "energy_total": [], "forces": [], "virial": [], "frames": 0}
        )
        group["frames"] += 1
        n_atoms = len(atoms)
        if "energy" in labels:
            error = float(out["energy"]) - labels["energy"]
            group["energy"].append(error / n_atoms)
            group["energy_total"].append(error)
            parity["energy"].append((labels["energy"] / n_atoms, float(out["energy"]) / n_atoms))
            parity["config_type"].append(ctype)
        if "forces" in labels:
            predicted = np.asarray(out["forces"]).reshape(n_atoms, 3)
            group["forces"].append((predicted - labels["forces"]).ravel())
            parity["forces"].append(np.stack([labels["forces"].ravel(), predicted.ravel()], 1))
            parity["force_config_type"].append((ctype, 3 * n_atoms))
        if "virial" in labels and atoms.cell.rank == 3 and out.get("stress") is not None:
            from ase.stress import voigt_6_to_full_3x3_stress

            virial = -voigt_6_to_full_3x3_stress(np.asarray(out["stress"])) * atoms.get_volume()
            group["virial"].append(((virial - labels["virial"]) / n_atoms).ravel())

    def table(parts: list[dict]) -> dict:
        row = {"frames": sum(p["frames"] for p in parts)}
        for name in ("energy", "energy_total", "forces", "virial"):
            chunks = [np.ravel(np.asarray(x, dtype=float)) for p in parts for x in p[name]]
            row[name] = _metrics(np.concatenate(chunks) if chunks else np.zeros(0))
        return row

    result = {
        "overall": table(list(groups.values())),
        "config_types": {name: table([group]) for name, group in groups.items()},
        "units": {
            "energy": "eV/atom",
            "energy_total": "eV",
            "forces": "eV/Angstrom",
            "virial": "eV/atom",
        },
    }
    return result, parity


def format_error_table(result: dict) -> str:
    """A fixed-width table of RMSE / MAE in meV units, one row per config type plus overall."""
    header = (
        f"{'config_type':<20} {'frames':>6}  {'E RMSE':>8} {'E MAE':>8}  "
        f"{'F RMSE':>8} {'F MAE':>8}  {'V RMSE':>8} {'V MAE':>8}"
    )
    units = f"{'':<20} {'':>6}  {'meV/atom':>17}  {'meV/Å':>17}  {'meV/atom':>17}"
    lines = [header, units, "-" * len(header)]

    def fmt(metric: dict, key: str) -> str:
        value = metric[key]
        return f"{'-':>8}" if value is None else f"{1000 * value:8.2f}"

    rows = list(result["config_types"].items())
    if len(rows) > 1 or not rows:
        rows.append(("overall", result["overall"]))
    for name, row in rows:
        cells = [f"{name[:20]:<20} {row['frames']:>6} "]
        for quantity in ("energy", "forces", "virial"):
            cells.append(f" {fmt(row[quantity], 'rmse')} {fmt(row[quantity], 'mae')} ")
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


def parity_plot(parity: dict, path: str) -> None:
    """Write a PNG with reference-vs-predicted energies (per atom) and force components."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), constrained_layout=True)
    panels = [
        (axes[0], "energy", "energy (eV/atom)"),
        (axes[1], "forces", "force component (eV/Å)"),
    ]
    for ax, name, label in panels:
        if not parity[name]:
            ax.text(0.5, 0.5, f"no {name} labels", ha="center", va="center")
            ax.set_axis_off()
            continue
        if name == "energy":
            data = np.asarray(parity["energy"])
            types = np.asarray(parity["config_type"])
        else:
            data = np.concatenate(parity["forces"])
            types = np.concatenate([[t] * n for t, n in parity["force_config_type"]])
        for ctype in dict.fromkeys(types):
            mask = types == ctype
            ax.scatter(data[mask, 0], data[mask, 1], s=4, alpha=0.6, label=str(ctype))
        lo, hi = float(data.min()), float(data.max())
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        rmse = float(np.sqrt(np.mean((data[:, 1] - data[:, 0]) ** 2)))
        unit = "meV/atom" if name == "energy" else "meV/Å"
        ax.set_title(f"{name}: RMSE {1000 * rmse:.2f} {unit}")
        if len(set(types)) > 1:
            ax.legend(markerscale=3, fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_model(path: str):
    if not os.path.isfile(path):
        raise CLIError(f"model file not found: {path}")
    try:
        return _gapx().load(path)
    except (ValueError, KeyError, OSError) as error:
        raise CLIError(f"cannot load model {path}: {error}") from None


def cmd_eval(args) -> int:
    model = load_model(args.model)
    keys = {**DEFAULT_KEYS}
    for assignment in args.key or []:
        name, _, value = assignment.partition("=")
        if name not in DEFAULT_KEYS or not value:
            raise CLIError(
                f"bad --key {assignment!r}: expected NAME=KEY with NAME one of "
                f"{', '.join(DEFAULT_KEYS)}"
            )
        keys[name] = value
    frames = read_frames([args.data])
    print_summary(data_summary(frames, keys))
    result, parity = evaluate(model, frames, keys, progress=not args.quiet)
    print(format_error_table(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "data": args.data, **result}, handle, indent=2)
        print(f"errors written to {args.json}")
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        path = os.path.join(args.plots, "parity.png")
        parity_plot(parity, path)
        print(f"parity plot written to {path}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# gapx md
# --------------------------------------------------------------------------------------------


def run_md(
    atoms,
    calc,
    *,
    steps: int,
    temperature: float,
    timestep: float,
    ensemble: str = "nve",
    friction: float = 0.01,
    seed: int = 0,
    trajectory: str | None = None,
    trajectory_interval: int = 10,
    log: str | None = None,
    log_interval: int = 1,
    progress: bool = True,
    init_velocities: bool = True,
) -> dict:
    """Run MD with ASE on a copy of ``atoms``; return a summary dict.

    ``temperature`` in K sets the initial Maxwell-Boltzmann velocities (and the Langevin bath),
    ``timestep`` is in fs, ``friction`` in 1/fs. The log has one line per ``log_interval`` steps:
    time (ps), total, potential and kinetic energy (eV), temperature (K), energy std (eV).
    """
    from ase import units
    from ase.io.trajectory import Trajectory
    from ase.md.velocitydistribution import (
        MaxwellBoltzmannDistribution,
        Stationary,
        ZeroRotation,
    )
    from ase.md.verlet import VelocityVerlet
    from tqdm.auto import tqdm

    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    if init_velocities:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
        if not any(atoms.pbc):
            ZeroRotation(atoms)
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=timestep * units.fs)
    elif ensemble == "langevin":
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin

        # ASE deprecates Langevin(fixcm=True); a FixCom constraint on our copy does the same.
        atoms.set_constraint(FixCom())
        dyn = Langevin(
            atoms,
            timestep=timestep * units.fs,
            temperature_K=temperature,
            friction=friction / units.fs,
            fixcm=False,
            rng=rng,
        )
    else:
        raise CLIError(f"unknown ensemble {ensemble!r}; valid: nve, langevin")

    n_atoms = len(atoms)
    record = {"time": [], "etot": [], "epot": [], "ekin": [], "temperature": [], "std": []}
    log_handle = open(log, "w") if log else None  # noqa: SIM115 - closed below
    if log_handle:
        log_handle.write(
            "# time[ps] Etot[eV] Epot[eV] Ekin[eV] T[K] E_std[eV]  "
            f"({ensemble}, {n_atoms} atoms, dt {timestep} fs)\n"
        )

    def observe():
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        std = calc.results.get("energy_std", float("nan"))
        t_ps = dyn.get_time() / (1000 * units.fs)
        temp = atoms.get_temperature()
        for key, value in zip(record, (t_ps, epot + ekin, epot, ekin, temp, std), strict=True):
            record[key].append(float(value))
        if log_handle and dyn.nsteps % log_interval == 0:
            log_handle.write(
                f"{t_ps:10.5f} {epot + ekin:16.8f} {epot:16.8f} {ekin:12.6f} {temp:9.2f} "
                f"{std:11.6f}\n"
            )

    dyn.attach(observe, interval=1)
    traj = None
    if trajectory:
        traj = Trajectory(trajectory, "w", atoms)
        dyn.attach(traj.write, interval=trajectory_interval)
    bar = tqdm(total=steps, desc=f"md ({ensemble})", unit="step", disable=not progress)
    dyn.attach(lambda: bar.update(1) if dyn.nsteps > 0 else None, interval=1)
    start = time.perf_counter()
    try:
        dyn.run(steps)
    finally:
        elapsed = time.perf_counter() - start
        bar.close()
        if log_handle:
            log_handle.close()
        if traj is not None:
            traj.close()
    etot = np.asarray(record["etot"])
    return {
        "steps": steps,
        "n_atoms": n_atoms,
        "ensemble": ensemble,
        "time_ps": steps * timestep / 1000.0,
        "drift_per_atom": float((etot[-1] - etot[0]) / n_atoms),
        "max_deviation_per_atom": float(np.max(np.abs(etot - etot[0])) / n_atoms),
        "mean_temperature": float(np.mean(record["temperature"][1:] or record["temperature"])),
        "mean_energy_std": float(np.nanmean(record["std"])) if record["std"] else float("nan"),
        "steps_per_second": steps / elapsed if elapsed > 0 else float("inf"),
        "record": record,
        "atoms": atoms,
    }


def format_md_summary(summary: dict) -> str:
    lines = [
        f"MD summary ({summary['ensemble']}, {summary['n_atoms']} atoms): "
        f"{summary['steps']} steps, {summary['time_ps']:.4f} ps simulated",
        f"  total energy drift: {summary['drift_per_atom']:+.3e} eV/atom "
        f"(max deviation {summary['max_deviation_per_atom']:.3e} eV/atom)",
        f"  mean temperature: {summary['mean_temperature']:.1f} K; "
        f"mean energy std: {summary['mean_energy_std']:.4f} eV",
        f"  speed: {summary['steps_per_second']:.1f} steps/s",
    ]
    return "\n".join(lines)


def cmd_md(args) -> int:
    from .calculator import GAPCalculator

    model = load_model(args.model)
    if args.steps < 1:
        raise CLIError(f"--steps must be at least 1, got {args.steps}")
    if not (args.timestep > 0 and math.isfinite(args.timestep)):
        raise CLIError(f"--timestep must be a positive number of fs, got {args.timestep}")
    if not (args.temperature >= 0 and math.isfinite(args.temperature)):
        raise CLIError(f"--temperature must be >= 0 K, got {args.temperature}")
    if args.friction <= 0:
        raise CLIError(f"--friction must be positive (1/fs), got {args.friction}")
    frames = read_frames([args.start], index=str(args.index))
    atoms = frames[0]
    calc = GAPCalculator(model)
    summary = run_md(
        atoms,
        calc,
        steps=args.steps,
        temperature=args.temperature,
        timestep=args.timestep,
        ensemble=args.ensemble,
        friction=args.friction,
        seed=args.seed,
        trajectory=args.trajectory,
        trajectory_interval=args.trajectory_interval,
        log=args.log,
        log_interval=args.log_interval,
        progress=not args.quiet,
    )
    print(format_md_summary(summary))
    if args.trajectory:
        print(f"trajectory written to {args.trajectory}")
    if args.log:
        print(f"log written to {args.log}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# gapx info
# --------------------------------------------------------------------------------------------


def _describe(obj) -> dict:
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.repr}
    params = {}
    for name in _keyword_names(type(obj)):
        if hasattr(obj, name):
            params[name] = getattr(obj, name)
    return params


def _short(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array{value.shape}" if value.size > 8 else np.array2string(value, precision=6)
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def model_info(model, path: str | None = None) -> str:
    """Human-readable description of a model: species, terms, hyperparameters, training."""
    gapx = _gapx()
    lines = []
    if path:
        lines.append(f"model file: {path} ({_format_bytes(os.path.getsize(path))})")
    version = getattr(model, "format_version", None)
    if version is None and path:
        version = _file_format_version(path)
    lines.append(f"format version: {version if version is not None else 'unknown'}")
    lines.append(f"gapx version: {gapx.__version__}")
    species = getattr(model, "species", None)
    if species is not None:
        lines.append(f"species: {', '.join(map(str, species))}")
    e0 = getattr(model, "e0", None)
    if e0 is not None:
        if isinstance(e0, dict):
            e0 = ", ".join(f"{k} {v:.6f}" for k, v in e0.items())
        lines.append(f"e0 (eV): {e0}")
    terms = list(getattr(model, "terms", None) or getattr(model, "descriptors", None) or [])
    for index, term in enumerate(terms):
        lines.append(f"term {index}: {type(term).__name__}")
        for name, value in _describe(term).items():
            lines.append(f"    {name} = {_short(value)}")
    for name in ("sigma_energy", "sigma_force", "sigma_virial", "config_type_sigma", "seed"):
        if hasattr(model, name):
            lines.append(f"{name} = {_short(getattr(model, name))}")
    baseline = getattr(model, "baseline", None)
    if baseline is not None:
        lines.append(f"baseline: {type(baseline).__name__}")
        for name, value in _describe(baseline).items():
            lines.append(f"    {name} = {_short(value)}")
    training = getattr(model, "training_summary", None) or getattr(model, "training", None)
    if isinstance(training, dict) and training:
        lines.append("training:")
        for name, value in training.items():
            lines.append(f"    {name} = {_short(value)}")
    return "\n".join(lines)


def _file_format_version(path: str):
    """The format version recorded in a model file's JSON header, when it can be found."""
    try:
        import zipfile

        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".json"):
                    header = json.loads(archive.read(name))
                    for key in ("format_version", "version"):
                        if key in header:
                            return header[key]
    except Exception:
        return None
    return None


def cmd_info(args) -> int:
    model = load_model(args.model)
    print(model_info(model, args.model))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gapx",
        description="Fit, evaluate and run Gaussian Approximation Potentials.",
    )
    parser.add_argument("--version", action="store_true", help="print the gapx version and exit")
    parser.add_argument(
        "--traceback", action="store_true", help="show full Python tracebacks on errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fit = sub.add_parser(
        "fit",
        help="fit a model to extxyz training data",
        description="Fit a GAP model to labelled frames (energies, forces, virials or stress).",
        epilog="Example config (TOML):\n\n" + EXAMPLE_CONFIG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("train", nargs="+", help="training file(s), extended XYZ")
    fit.add_argument("--config", "-c", required=True, help="TOML config file")
    fit.add_argument("-o", "--output", help="model file to write (default: [output] model)")
    fit.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. fit.sigma_energy=0.002, soap.n_max=4, "
        "terms.0.cutoff=4.5 (repeatable; values are TOML)",
    )
    fit.set_defaults(func=cmd_fit)

    ev = sub.add_parser(
        "eval",
        help="errors of a model on labelled data",
        description="Energy (per atom), force and virial RMSE/MAE, overall and per config_type.",
    )
    ev.add_argument("model", help="model file (.gapx)")
    ev.add_argument("data", help="labelled frames, extended XYZ")
    ev.add_argument("--json", metavar="FILE", help="also write the errors as JSON")
    ev.add_argument("--plots", metavar="DIR", help="write parity plots (PNG) into DIR")
    ev.add_argument(
        "--key",
        action="append",
        metavar="NAME=KEY",
        help="label names in the file, e.g. energy=DFT_energy (repeatable)",
    )
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_eval)

    md = sub.add_parser(
        "md",
        help="molecular dynamics with ASE",
        description="NVE (velocity Verlet) or Langevin MD with the model as ASE calculator.",
    )
    md.add_argument("model", help="model file (.gapx)")
    md.add_argument("start", help="starting structure (any ase.io format)")
    md.add_argument("--steps", type=int, default=1000, help="number of steps (default 1000)")
    md.add_argument(
        "--temperature", "-T", type=float, default=300.0, help="temperature in K (default 300)"
    )
    md.add_argument("--timestep", type=float, default=0.5, help="time step in fs (default 0.5)")
    md.add_argument("--ensemble", choices=["nve", "langevin"], default="nve")
    md.add_argument(
        "--friction", type=float, default=0.01, help="Langevin friction in 1/fs (default 0.01)"
    )
    md.add_argument("--trajectory", metavar="FILE", help="ASE trajectory file to write")
    md.add_argument("--trajectory-interval", type=int, default=10, metavar="N")
    md.add_argument("--log", metavar="FILE", help="write time, energies, T and energy std")
    md.add_argument("--log-interval", type=int, default=1, metavar="N")
    md.add_argument("--index", default="0", help="frame of the start file to use (default 0)")
    md.add_argument("--seed", type=int, default=0, help="seed for velocities and thermostat")
    md.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    md.set_defaults(func=cmd_md)

    info = sub.add_parser(
        "info",
        help="describe a model file",
        description="Species, terms and hyperparameters, training summary, format version.",
    )
    info.add_argument("model", help="model file (.gapx)")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``gapx`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2)
        return int(exit_.code or 0)
    if args.version:
        print(f"gapx {_gapx().__version__}")
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except (CLIError, ValueError, FileNotFoundError, TypeError) as error:
        if args.traceback:
            raise
        print(f"gapx {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"gapx {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
