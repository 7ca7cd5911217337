"""The ``gapx`` command line: ``fit``, ``eval``, ``md`` and ``info``, a thin layer over the modules.

Every command is a function ``cmd_<name>(args) -> int`` so tests and scripts can call
``gapx.cli.main([...])`` without a subprocess. User errors (missing files, bad configs, unknown
keys, bad values) print one ``gapx <command>: error: ...`` line on stderr and return exit code 1;
argparse usage errors return 2. ``--traceback`` shows the full Python traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
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


def _fit_keys() -> list[str]:
    """``gapx.GAP`` keywords settable in ``[fit]`` (label names go in ``[keys]``)."""
    skip = ("terms", "baseline", "verbose", *(f"{k}_key" for k in DEFAULT_KEYS))
    return _keyword_names(_gapx().GAP, skip=skip)


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
    _check_keys(fit, _fit_keys(), "[fit]")
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
    keys = {f"{name}_key": value for name, value in config["keys"].items()}
    try:
        return gapx.GAP(terms, baseline=baseline, **keys, **fit)
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


def frame_labels(atoms, keys: dict, frame: int = 0) -> dict:
    """Reference labels of one frame: ``energy`` (eV), ``forces`` (N,3), ``virial`` (3,3) eV.

    Found exactly as ``GAP.fit`` finds them (:func:`gapx.io.extract_labels`, with the label
    names of ``keys``); a stress label is converted to ``virial = -stress * volume``.
    """
    from .io import extract_labels

    names = {f"{name}_key": value for name, value in keys.items()}
    labels = extract_labels(atoms, frame, **names)
    found = {"energy": labels.energy, "forces": labels.forces, "virial": labels.virial}
    return {k: v for k, v in found.items() if v is not None}


def config_type(atoms, keys: dict) -> str:
    return str(atoms.info.get(keys["config_type"], "default"))


def data_summary(frames, keys: dict, hint: str = "") -> dict:
    """Counts describing a training or test set."""
    n_atoms = np.array([len(a) for a in frames])
    species = Counter()
    for atoms in frames:
        species.update(atoms.get_chemical_symbols())
    types = Counter(config_type(a, keys) for a in frames)
    present = Counter()
    atoms_with_forces = 0
    for index, atoms in enumerate(frames):
        try:
            found = frame_labels(atoms, keys, index)
        except ValueError as error:
            raise CLIError(f"{error} {hint}".rstrip()) from None
        present.update(found.keys())
        atoms_with_forces += len(atoms) if "forces" in found else 0
    return {
        "n_frames": len(frames),
        "n_atoms": int(n_atoms.sum()),
        "atoms_per_frame": (int(n_atoms.min()), int(n_atoms.max())),
        "species": dict(sorted(species.items(), key=lambda kv: _atomic_number(kv[0]))),
        "config_types": dict(types),
        "labels": {k: int(present.get(k, 0)) for k in ("energy", "forces", "virial")},
        "atoms_with_forces": atoms_with_forces,
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


def memory_estimate(model, summary: dict) -> tuple[int, int]:
    """(design matrix, peak) bytes of the fit, estimated from the data before fitting.

    Mirrors ``GAP.fit``: one float64 row per energy, force component and virial component (6)
    plus one per sparse point, one column per sparse point (+1 for the targets); sparse points
    are counted per kind (centre species for SOAP, species pair for two-body terms), capped by
    the atoms available. The peak adds the descriptor-gradient block (``block_memory``).
    """
    species = summary["species"]
    n_columns = 0
    for term in model.terms:
        n_sparse = int(getattr(term, "n_sparse", 0) or 0)
        if type(term).__name__ == "TwoBody":
            n_kinds = len(species) * (len(species) + 1) // 2
            n_columns += n_sparse * n_kinds
        else:
            n_columns += sum(min(n_sparse, count) for count in species.values())
    labels = summary["labels"]
    n_obs = labels["energy"] + 6 * labels["virial"] + 3 * summary["atoms_with_forces"]
    design = 8 * (n_obs + n_columns) * (n_columns + 1)
    # The fit streams the design matrix in blocks and holds only its (M+1)^2 R factor.
    return design, 8 * (n_columns + 1) ** 2 + int(getattr(model, "block_memory", 0))


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# Below this many atoms per structure, threads cost more than they save: evaluation of small
# molecules is faster on one thread, and much faster when the cores are oversubscribed.
SMALL_SYSTEM = 100


def thread_limit(threads: int | None, n_atoms: int | None = None, single_blas: bool = False):
    """Context limiting OpenMP (and BLAS) threads with threadpoolctl for one command.

    ``threads`` None means automatic: one OpenMP thread for systems below ``SMALL_SYSTEM``
    atoms, otherwise the library default (``OMP_NUM_THREADS``). ``single_blas`` keeps BLAS on
    one thread: during evaluation its matrices are small, and BLAS threads only compete with
    the SOAP code's OpenMP threads (measured here: 1000-atom Si, 2 cores, 78 ms per step with
    one thread each, 60 ms with two OpenMP threads, 133 ms with two of each).
    """
    import contextlib

    if threads is not None and threads < 1:
        raise CLIError(f"--threads must be at least 1, got {threads}")
    if threads is None and n_atoms is not None and n_atoms < SMALL_SYSTEM:
        threads = 1
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the library defaults apply
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    if single_blas:
        stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        if threads is not None:
            stack.enter_context(threadpool_limits(limits=threads, user_api="openmp"))
    elif threads is not None:
        stack.enter_context(threadpool_limits(limits=threads))
    return stack


# --------------------------------------------------------------------------------------------
# gapx fit
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def dask_client(address: str | None):
    """A dask.distributed client for ``--dask``: a scheduler address, or "local" for a
    LocalCluster on this machine; None when the fit runs in this process."""
    if address is None:
        yield None
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise CLIError("--dask needs dask.distributed: pip install 'dask[distributed]'") from None
    if address == "local":
        with LocalCluster(threads_per_worker=1, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                print(f"dask: local cluster with {len(cluster.workers)} workers")
                yield client
        return
    try:
        client = Client(address, timeout=30)
    except OSError as error:
        raise CLIError(f"cannot reach the dask scheduler at {address}: {error}") from None
    with client:
        print(f"dask: connected to {address}")
        yield client


def cmd_fit(args) -> int:
    config = read_config(args.config)
    for assignment in args.set or []:
        apply_override(config, assignment)
    config = validate_config(config)
    keys = config["keys"]
    frames = read_frames(args.train)
    summary = data_summary(frames, keys, "(label names come from the [keys] table of the config)")
    print_summary(summary)
    species = list(summary["species"])
    model = build_model(config, species)
    design, peak = memory_estimate(model, summary)
    print(
        f"memory estimate for the fit: design matrix {_format_bytes(design)} (streamed in "
        f"blocks), peak about {_format_bytes(peak)}"
    )
    output = args.output or config["output"].get("model") or "model.gapx"
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise CLIError(f"output directory does not exist: {directory}")
    start = time.perf_counter()
    with thread_limit(args.threads), dask_client(args.dask) as client:
        model.fit(frames, client=client)
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
    bar = tqdm(frames, desc="eval", unit="frame", disable=not progress, leave=False)
    for index, atoms in enumerate(bar):
        labels = frame_labels(atoms, keys, index)
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
    print_summary(data_summary(frames, keys, "(set label names with --key NAME=KEY)"))
    largest = max(len(a) for a in frames)
    with thread_limit(args.threads, largest, single_blas=True):
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


def thermalize(atoms, temperature: float, rng) -> None:
    """Maxwell-Boltzmann momenta at ``temperature`` K (ASE >= 3.29 renamed the function)."""
    from ase.md import velocitydistribution

    if hasattr(velocitydistribution, "thermalize_momenta"):
        velocitydistribution.thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    else:  # pragma: no cover - older ASE
        velocitydistribution.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)


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
    from ase.md.velocitydistribution import Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet
    from tqdm.auto import tqdm

    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    if init_velocities:
        thermalize(atoms, temperature, rng)
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
    stds = np.asarray(record["std"])
    mean_std = float(np.mean(stds[np.isfinite(stds)])) if np.isfinite(stds).any() else math.nan
    return {
        "steps": steps,
        "n_atoms": n_atoms,
        "ensemble": ensemble,
        "time_ps": steps * timestep / 1000.0,
        "drift_per_atom": float((etot[-1] - etot[0]) / n_atoms),
        "max_deviation_per_atom": float(np.max(np.abs(etot - etot[0])) / n_atoms),
        "mean_temperature": float(np.mean(record["temperature"][1:] or record["temperature"])),
        "mean_energy_std": mean_std,
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
    for name in ("trajectory_interval", "log_interval"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise CLIError(f"{flag} must be at least 1, got {getattr(args, name)}")
    if args.friction <= 0:
        raise CLIError(f"--friction must be positive (1/fs), got {args.friction}")
    frames = read_frames([args.start], index=str(args.index))
    atoms = frames[0]
    calc = GAPCalculator(model, std=not args.no_std)
    with thread_limit(args.threads, len(atoms), single_blas=True):
        summary = _run_md_command(args, atoms, calc)
    print(format_md_summary(summary))
    if args.trajectory:
        print(f"trajectory written to {args.trajectory}")
    if args.log:
        print(f"log written to {args.log}")
    return EXIT_OK


def _run_md_command(args, atoms, calc) -> dict:
    return run_md(
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


# --------------------------------------------------------------------------------------------
# gapx info
# --------------------------------------------------------------------------------------------


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def model_info(path: str) -> str:
    """Human-readable description of a model file: what it is and how it was trained."""
    from .io import read_model_file

    header, arrays = read_model_file(path)
    lines = [
        f"model file: {path} ({_format_bytes(os.path.getsize(path))})",
        f"format: {header.get('format', '?')} version {header.get('format_version', '?')}, "
        f"written by gapx {header.get('gapx_version', '?')}",
        f"species: {', '.join(header.get('species', []))}",
    ]
    e0 = header.get("e0") or {}
    lines.append("e0 (eV/atom): " + ", ".join(f"{k} {v:.6f}" for k, v in e0.items()))
    for index, term in enumerate(header.get("terms", [])):
        term = dict(term)
        kind = term.pop("type", None) or term.pop("kind", None) or "term"
        term = {**term.pop("params", {}), **term}  # to_dict() may nest the settings
        lines.append(f"term {index}: {kind}")
        for name, value in term.items():
            lines.append(f"    {name} = {_short(value)}")
    sets = header.get("sparse_sets", [])
    if sets:
        lines.append(
            f"sparse points: {sum(int(s['size']) for s in sets)} in {len(sets)} sets, "
            f"{arrays['alpha'].size if 'alpha' in arrays else '?'} weights"
        )
    hyper = header.get("hyperparameters", {})
    if hyper:
        lines.append("fit settings:")
        for name, value in hyper.items():
            lines.append(f"    {name} = {_short(value)}")
    baseline = header.get("baseline")
    if baseline:
        lines.append(f"baseline: {baseline.get('type', '?')}")
        for name, value in (baseline.get("params") or {}).items():
            lines.append(f"    {name} = {_short(value)}")
    training = header.get("training") or {}
    if training:
        lines.append("training:")
        for name, value in training.items():
            lines.append(f"    {name} = {_short(value)}")
    return "\n".join(lines)


def cmd_info(args) -> int:
    load_model(args.model)  # validates the whole file first
    print(model_info(args.model))
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
    fit.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="OpenMP/BLAS threads (default: OMP_NUM_THREADS)",
    )
    fit.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="compute descriptors and design-matrix blocks on a dask.distributed cluster: "
        "a scheduler address (tcp://host:8786) or 'local' for a LocalCluster",
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
    ev.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=f"OpenMP threads (default: 1 below {SMALL_SYSTEM} atoms per frame; BLAS uses 1)",
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
    md.add_argument(
        "--no-std", action="store_true", help="skip the energy std (faster; logged as nan)"
    )
    md.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=f"OpenMP threads (default: 1 below {SMALL_SYSTEM} atoms; BLAS uses 1)",
    )
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
    except BrokenPipeError:  # output piped into head & co.: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the final flush silent
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"gapx {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
