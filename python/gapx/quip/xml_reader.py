"""``gapx.from_quip``: a QUIP/GAP XML model (as gap_fit writes it) as a :class:`gapx.GAP`.

The XML is untrusted: it is parsed by defusedxml with DTDs, entities and external references
refused, so it can neither read other local files nor expand without bound; sparse-point files
must lie beside it (see :mod:`gapx.quip.sparse_points`). What gapx cannot represent raises
NotImplementedError naming the descriptor, setting or potential; a malformed or inconsistent
file raises ValueError naming the file and element.

The imported model predicts exactly as quippy's ``Potential(param_filename=...)``. QUIP's file
holds no posterior covariance of the weights, so its standard deviations are the prior's
(the sparse GP conditioned on nothing); :meth:`gapx.GAP.calibrate` on held-out frames scales
them to the errors seen.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np
from ase.data import chemical_symbols
from defusedxml import DefusedXmlException, ElementTree

from ..fitting import FittedState
from ..gp.sparse_set import SparseSet
from ..model import GAP, load
from .settings_string import parse_settings
from .sparse_points import read_inline, read_sparse_file
from .terms import DESCRIPTOR_BUILDERS, RawBlock, settings_in_xml


def _parse(path: str):
    try:
        return ElementTree.parse(path, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as error:
        raise ValueError(f"{path}: refused XML construct ({error!r})") from None
    except ElementTree.ParseError as error:
        raise ValueError(f"{path}: malformed XML ({error})") from None


def _attribute(element, name: str, convert, where: str, default=None):
    value = element.get(name)
    if value is None:
        if default is not None:
            return default
        raise ValueError(f"{where}: missing attribute {name!r}")
    try:
        result = convert(value.replace("D", "E").replace("d", "e") if convert is float else value)
    except ValueError:
        raise ValueError(f"{where}: attribute {name}={value!r} is not valid") from None
    if isinstance(result, float) and not np.isfinite(result):
        raise ValueError(f"{where}: attribute {name}={value!r} is not finite")
    return result


def _check_potential(root, path: str) -> str:
    """The label of the GAP, refusing anything but a plain ``IP GAP`` potential."""
    potentials = [p for p in root.iter("Potential") if p.get("init_args")]
    if not potentials:
        raise ValueError(f"{path}: no <Potential init_args=...> element")
    init_args = potentials[0].get("init_args").strip()
    words = init_args.split()
    if words[:2] != ["IP", "GAP"]:
        raise NotImplementedError(
            f"{path}: the potential {init_args!r} is not implemented by gapx (only a plain "
            "'IP GAP'; core potentials such as IP Glue in a Sum are not)"
        )
    _, settings = parse_settings(init_args[3:], f"{path}, <Potential>")
    return settings.get("label", "")


def _gap_params(root, path: str, label: str):
    candidates = [g for g in root.iter("GAP_params") if not label or g.get("label") == label]
    if len(candidates) != 1:
        raise ValueError(
            f"{path}: expected one <GAP_params label={label!r}>, found {len(candidates)}"
        )
    params = candidates[0]
    data = params.find("GAP_data")
    if data is None:
        raise ValueError(f"{path}: <GAP_params> has no <GAP_data>")
    if data.get("do_core", "F").strip().upper().startswith("T"):
        raise NotImplementedError(
            f"{path}: <GAP_data do_core=T>: the model includes a core potential, which gapx "
            "does not implement"
        )
    return params, data


def _e0(data, path: str) -> dict[int, float]:
    e0 = {}
    for element in data.findall("e0"):
        where = f"{path}, <e0 Z={element.get('Z')!r}>"
        z = _attribute(element, "Z", int, where)
        if not 0 < z < len(chemical_symbols):
            raise ValueError(f"{where}: not an atomic number")
        e0[z] = _attribute(element, "value", float, where)
    return e0


def _raw_block(coordinates, folder: str, path: str) -> RawBlock:
    where = f"{path}, <gpCoordinates label={coordinates.get('label')!r}>"
    descriptor = coordinates.find("descriptor")
    if descriptor is None or not (descriptor.text or "").strip():
        raise ValueError(f"{where}: no <descriptor>")
    name, settings = parse_settings(descriptor.text, where)
    if _attribute(coordinates, "signal_mean", float, where, 0.0) != 0.0:
        raise NotImplementedError(f"{where}: a non-zero signal_mean is not supported by gapx")
    dimensions = _attribute(coordinates, "dimensions", int, where)
    n_sparse = _attribute(coordinates, "n_sparseX", int, where)
    elements = coordinates.findall("sparseX")
    if dimensions < 1 or n_sparse < 1 or len(elements) != n_sparse:
        raise ValueError(
            f"{where}: n_sparseX={n_sparse} and dimensions={dimensions}, but "
            f"{len(elements)} <sparseX> elements"
        )
    alpha = np.array(
        [_attribute(e, "alpha", float, f"{where}, <sparseX i={e.get('i')!r}>") for e in elements]
    )
    cutoffs = np.array(
        [
            _attribute(e, "sparseCutoff", float, f"{where}, <sparseX i={e.get('i')!r}>", 1.0)
            for e in elements
        ]
    )
    filename = coordinates.get("sparseX_filename")
    if filename:
        md5 = coordinates.get("sparseX_md5sum")
        points = read_sparse_file(folder, filename, (n_sparse, dimensions), md5, where)
    else:
        points = read_inline(elements, dimensions, where)
    theta_element = coordinates.find("theta")
    theta = np.zeros(0)
    if theta_element is not None:
        theta = np.array(
            [float(t.replace("D", "E")) for t in (theta_element.text or "").split()], dtype=float
        )
        if not np.all(np.isfinite(theta)) or np.any(theta <= 0):
            raise ValueError(f"{where}: <theta> must hold positive numbers")
    zeta = coordinates.get("zeta")
    return RawBlock(
        where=where,
        descriptor=name,
        settings=settings,
        covariance_type=_attribute(coordinates, "covariance_type", int, where),
        n_permutations=_attribute(coordinates, "n_permutations", int, where, 1),
        signal_variance=_attribute(coordinates, "signal_variance", float, where),
        zeta=None if zeta is None else _attribute(coordinates, "zeta", float, where),
        theta=theta,
        points=points,
        cutoffs=cutoffs,
        alpha=alpha,
    )


def _imported(raw: RawBlock):
    builder = DESCRIPTOR_BUILDERS.get(raw.descriptor)
    if builder is None:
        raise NotImplementedError(
            f"{raw.where}: the QUIP descriptor {raw.descriptor!r} is not supported by gapx "
            f"(supported: {', '.join(sorted(DESCRIPTOR_BUILDERS))})"
        )
    try:
        return builder(raw)
    except ValueError as error:  # settings gapx's terms refuse (n_max too large, ...)
        if raw.where in str(error):
            raise
        raise ValueError(f"{raw.where}: {error}") from None


def _assemble(blocks, e0: dict[int, float], model_settings: dict):
    """The GAP: blocks grouped into terms by their settings (a kind seen twice starts a new
    term) and the sparse sets in that order; its R (the prior's, see the module docstring) is
    computed by GAP.R when first needed."""
    groups: list[tuple[tuple, object, list]] = []
    for block in blocks:
        for key, _, members in groups:
            if key == block.key and all(m.kind != block.kind for m in members):
                members.append(block)
                break
        else:
            groups.append((block.key, block.term, [block]))
    terms = [term for _, term, _ in groups]
    species = sorted({z for block in blocks for z in block.species})
    e0_symbols = {chemical_symbols[z]: float(e0.get(z, 0.0)) for z in species}
    model = GAP(terms, e0=e0_symbols, verbose=False, **model_settings)
    sparse_sets = []
    offset = 0
    for t, (_, _, members) in enumerate(groups):
        for block in sorted(members, key=lambda b: b.kind):
            # factor None: GAP.R computes K_MM's Cholesky factors when a std first needs them
            sparse_sets.append(SparseSet(t, block.kind, block.points, offset, block.delta))
            offset += len(block.points)
    alpha = np.concatenate(
        [b.alpha for _, _, ms in groups for b in sorted(ms, key=lambda b: b.kind)]
    )
    summary = {"imported_from": "QUIP XML", "n_sparse_total": offset}
    model._adopt(FittedState(e0_symbols, sparse_sets, alpha, None, summary))
    return model


def _command_line_sigmas(params) -> dict:
    """gap_fit's ``default_sigma`` (energy, force, virial) from the stored command line, so
    that refitting the imported model uses the same noise; {} when absent or unreadable."""
    element = params.find("command_line")
    if element is None or not element.text:
        return {}
    try:
        _, settings = parse_settings("gap_fit " + element.text, "command line")
        values = [float(v) for v in settings["default_sigma"].split()]
    except (ValueError, KeyError):
        return {}
    if len(values) < 3 or not all(v > 0 for v in values[:2]):
        return {}
    out = {"sigma_energy": values[0], "sigma_force": values[1]}
    if values[2] > 0:
        out["sigma_virial"] = values[2]
    return out


def from_quip(path):
    """Load a QUIP/GAP XML model (``gap_fit``'s ``gp_file``) as a fitted :class:`gapx.GAP`.

    Supported: ``soap`` (dot_product, any zeta, QUIP's radial basis: imported as
    ``gapx.SOAP(radial_basis="quip")``), ``distance_2b`` (ard_se, as ``gapx.TwoBody``) and
    ``angle_3b`` (ard_se, one block per species triplet, as ``gapx.ThreeBody``) blocks, several
    of each, e0 per species, sparse points inline or in sparseX files. The
    model predicts what quippy predicts; its stds are the prior's (the file has no posterior
    covariance) until calibrated. Raises NotImplementedError for descriptors, settings or core
    potentials gapx does not implement, ValueError for malformed or inconsistent files.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    root = _parse(path).getroot()
    label = _check_potential(root, path)
    params, data = _gap_params(root, path, label)
    e0 = _e0(data, path)
    folder = os.path.dirname(os.path.abspath(path))
    coordinates = list(params.iter("gpCoordinates"))
    if not coordinates:
        raise ValueError(f"{path}: the GAP has no <gpCoordinates> blocks")
    blocks = [_imported(_raw_block(c, folder, path)) for c in coordinates]
    model = _assemble(blocks, e0, _command_line_sigmas(params))
    return _exported_model(params, folder, path, model) or model


def _same_prediction(a, b) -> bool:
    """Whether two models predict the same mean: the terms' settings that the XML holds, e0,
    sparse sets and weights equal (a loaded model's terms admit every kind of its sparse
    sets, so the settings the XML lacks do not change its prediction)."""
    return (
        [settings_in_xml(t) for t in a.terms] == [settings_in_xml(t) for t in b.terms]
        and a.e0 == b.e0
        and [(s.term, s.kind, s.offset) for s in a.sparse_sets]
        == [(s.term, s.kind, s.offset) for s in b.sparse_sets]
        and all(
            np.array_equal(s.points, u.points)
            for s, u in zip(a.sparse_sets, b.sparse_sets, strict=True)
        )
        and np.array_equal(a.alpha, b.alpha)
    )


def _exported_model(params, folder: str, path: str, imported):
    """The complete gapx model ``GAP.to_quip`` wrote beside the XML, when the XML names it
    (``<gapx_model>``), its md5 sum matches and it predicts what the XML does; else None
    (with a warning when it is named but missing, altered or inconsistent)."""
    element = params.find("gapx_model")
    if element is None:
        return None
    name = element.get("filename", "")
    where = f"{path}, <gapx_model filename={name!r}>"
    sidecar = os.path.join(folder, name)
    if os.path.basename(name) != name or not os.path.isfile(sidecar):
        warnings.warn(f"{where}: file missing; using the XML alone", UserWarning, stacklevel=3)
        return None
    with open(sidecar, "rb") as handle:
        digest = hashlib.md5(handle.read()).hexdigest()
    if digest != (element.get("md5sum") or "").strip().lower():
        warnings.warn(f"{where}: md5 sum differs; using the XML alone", UserWarning, stacklevel=3)
        return None
    model = load(sidecar)
    if not _same_prediction(model, imported):
        warnings.warn(
            f"{where}: the model does not match the XML; using the XML alone",
            UserWarning,
            stacklevel=3,
        )
        return None
    return model
