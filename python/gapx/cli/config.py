"""The ``gapx fit`` configuration: TOML tables, ``--set`` overrides, and building the model.

Term and baseline types are those of :data:`gapx.serialization.REGISTRY`, and each table's keys
are the keyword arguments of the class it names, so the config accepts exactly what the Python
API does.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import sys

from ..labels import DEFAULT_KEYS
from ..model import GAP
from ..serialization import registered_class, type_names
from .common import CLIError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TOP_LEVEL_KEYS = ("terms", "fit", "keys", "baseline", "output", "tune")  # [tune]: gapx tune only

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

# [[terms]]            # a three-body term, QUIP's angle_3b
# type = "three_body"
# cutoff = 3.0
# theta = [1.0, 0.5, 1.0]  # length scales of r_ij + r_ik, (r_ij - r_ik)^2, r_jk
# delta = 0.1
# n_sparse = 50

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
    return _keyword_names(GAP, skip=skip)


def _registered(family: str, kind, where: str) -> type:
    try:
        return registered_class(family, kind)
    except ValueError:
        valid = ", ".join(f'type = "{name}"' for name in type_names(family))
        raise CLIError(f"{where}: unknown type {kind!r}; valid: {valid}") from None


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
    if head in type_names("term"):
        cls = registered_class("term", head)
        matches = [t for t in config.get("terms", []) if _term_class(t.get("type")) is cls]
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
        valid = list(TOP_LEVEL_KEYS) + sorted(type_names("term"))
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
            raise CLIError(
                f"terms[{index}] has no 'type'; valid types: {', '.join(type_names('term'))}"
            )
        cls = _registered("term", kind, f"terms[{index}]")
        _check_keys(
            {k: v for k, v in term.items() if k != "type"},
            _keyword_names(cls),
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
        if not isinstance(baseline, dict):
            raise CLIError("[baseline] must be a table with a type")
        cls = _registered("baseline", baseline.get("type"), "[baseline]")
        _check_keys(
            {k: v for k, v in baseline.items() if k != "type"},
            _keyword_names(cls),
            f"[baseline] ({cls.type_name})",
        )
    output = config.setdefault("output", {})
    _check_keys(output, ("model",), "[output]")
    return config


def build_model(config: dict, species: list[str]) -> GAP:
    """Construct an unfitted ``gapx.GAP`` from a validated config."""
    terms = []
    for index, table in enumerate(config["terms"]):
        cls = registered_class("term", table["type"])
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
        table = config["baseline"]
        kwargs = {k: v for k, v in table.items() if k != "type"}
        try:
            baseline = registered_class("baseline", table["type"])(**kwargs)
        except (TypeError, ValueError) as error:
            raise CLIError(f"[baseline]: {error}") from None
    keys = {f"{name}_key": value for name, value in config["keys"].items()}
    try:
        return GAP(terms, baseline=baseline, **keys, **fit)
    except (TypeError, ValueError) as error:
        raise CLIError(f"[fit]: {error}") from None


def _term_class(kind):
    """The registered term class of ``kind``, or None when it names none."""
    try:
        return registered_class("term", kind)
    except ValueError:
        return None


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise CLIError(f"cannot write {value!r} to a config file")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def format_config(config: dict, header: str = "") -> str:
    """A config (as :func:`validate_config` returns it) as TOML text that :func:`read_config`
    reads back to the same tables; ``header`` lines become comments at the top."""
    lines = [f"# {line}" for line in header.splitlines()]

    def table(name: str, values: dict, array: bool = False) -> None:
        plain = {k: v for k, v in values.items() if not isinstance(v, dict) and v is not None}
        lines.append("")
        lines.append(f"[[{name}]]" if array else f"[{name}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in plain.items())
        for key, sub in values.items():
            if isinstance(sub, dict):
                table(f"{name}.{_toml_key(key)}", sub)

    for term in config["terms"]:
        table("terms", term, array=True)
    for section in ("fit", "keys", "baseline", "output", "tune"):
        if config.get(section):
            table(section, config[section])
    return "\n".join(lines).lstrip("\n") + "\n"
