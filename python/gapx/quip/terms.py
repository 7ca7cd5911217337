"""QUIP descriptors <-> gapx terms: one builder per QUIP descriptor name, one exporter per term.

A QUIP GAP block (``<gpCoordinates>``) is one descriptor string, a covariance, delta, weights
and sparse points. :data:`DESCRIPTOR_BUILDERS` maps the descriptor's name to a function that
turns the block into a gapx term, a sparse-set kind and the points and weights in gapx's
layout; :data:`TERM_EXPORTERS` maps a term's ``type_name`` to the inverse. Another descriptor
plugs in by adding an entry to each table; a builder receives the block's ``n_permutations``
and its ``<permutation>`` handling is its own.

Conventions, found by comparing energies with quippy: a block's local energy is
``signal_variance**2 sum_s alpha_s k(x, x_s)`` (``signal_variance`` is delta); ``dot_product``
is ``(x . x_s)**zeta`` on the unit SOAP vectors (QUIP's has one more, zero element);
``ard_se`` is ``exp(-sum_d (x_d - y_d)**2 / (2 theta_d**2))`` times the cutoff weights of
both rows (``sparseCutoff``); distance_2b counts every pair in both directions, so gapx's
weights (one row per unordered pair) are twice QUIP's; angle_3b keeps both neighbour orderings
of a triplet, as :class:`gapx.ThreeBody` does, so its weights are QUIP's unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import chemical_symbols

from ..descriptors.soap import SOAP
from ..descriptors.three_body import (
    N_GEOMETRIC_FEATURES,
    TRIPLET_KIND_BASE,
    ThreeBody,
    triplet_kind,
)
from ..descriptors.two_body import PAIR_KIND_BASE, TwoBody

#: QUIP's ``covariance_type`` codes in gpCoordinates.
ARD_SE = 1
DOT_PRODUCT = 2

#: Descriptor settings that only steer gap_fit (sparsification, hyperparameters of the fit):
#: they do not change predictions and are ignored on import.
FIT_ONLY_KEYS = frozenset(
    {
        "add_species",
        "config_type_n_sparse",
        "covariance_type",
        "delta",
        "f0",
        "mark_sparse_atoms",
        "n_sparse",
        "print_sparse_index",
        "sparse_file",
        "sparse_method",
        "theta_fac",
        "theta_file",
        "theta_uniform",
        "unique_descriptor_tolerance",
        "unique_hash_tolerance",
        "zeta",
    }
)


@dataclass
class RawBlock:
    """One ``<gpCoordinates>`` as read from the XML (points in QUIP's layout)."""

    where: str
    descriptor: str
    settings: dict
    covariance_type: int
    n_permutations: int
    signal_variance: float
    zeta: float | None
    theta: np.ndarray
    points: np.ndarray
    cutoffs: np.ndarray
    alpha: np.ndarray


@dataclass
class ImportedBlock:
    """A block in gapx's terms: blocks with equal ``key`` share one term (the first's)."""

    key: tuple
    term: object
    kind: int
    points: np.ndarray
    alpha: np.ndarray
    delta: float
    species: tuple[int, ...]


def _setting(block: RawBlock, key: str, convert, default=None):
    value = block.settings.get(key)
    if value is None:
        if default is None:
            raise ValueError(f"{block.where}: the {block.descriptor} descriptor has no {key}")
        return default
    try:
        return convert(value)
    except ValueError:
        raise ValueError(f"{block.where}: {key}={value!r} is not valid") from None


def _flag(value: str) -> bool:
    text = value.strip().lower()
    if text in ("t", "true", "1"):
        return True
    if text in ("f", "false", "0"):
        return False
    raise ValueError(value)


def _check_keys(block: RawBlock, known: set, fixed: dict) -> None:
    """Refuse settings gapx does not implement: unknown keys, and ``fixed`` keys whose value
    differs from the one gapx computes (e.g. ``normalise=F``)."""
    for key, value in block.settings.items():
        if key in known or key in FIT_ONLY_KEYS:
            continue
        if key in fixed:
            convert, expected = fixed[key]
            try:
                if convert(value) == expected:
                    continue
            except ValueError:
                pass
        raise NotImplementedError(
            f"{block.where}: the QUIP {block.descriptor} setting {key}={value} is not "
            "supported by gapx"
        )


def _check_covariance(block: RawBlock, expected: int, name: str) -> None:
    if block.covariance_type != expected:
        raise NotImplementedError(
            f"{block.where}: covariance_type {block.covariance_type} for {block.descriptor}; "
            f"gapx implements {name} ({expected}) for it"
        )


def _check_no_permutations(block: RawBlock) -> None:
    if block.n_permutations != 1:
        raise NotImplementedError(
            f"{block.where}: {block.descriptor} with n_permutations={block.n_permutations} is "
            "not supported by gapx"
        )


def _check_dimensions(block: RawBlock, dimensions: int) -> None:
    if block.points.shape[1] != dimensions:
        raise ValueError(
            f"{block.where}: sparse points have {block.points.shape[1]} dimensions, the "
            f"{block.descriptor} descriptor has {dimensions}"
        )


def _species(text: str) -> list[int]:
    numbers = [int(z) for z in text.split()]
    if not numbers or any(z < 1 or z >= len(chemical_symbols) for z in numbers):
        raise ValueError(text)
    return numbers


#: Term settings QUIP's XML does not hold: they steer the fit (``n_sparse``, ``sparse_method``)
#: or only drop rows of kinds that have no sparse points (ThreeBody's species filters), so a
#: term read back from the XML may differ from the exported one in them and predict the same.
SETTINGS_NOT_IN_XML = frozenset({"n_sparse", "sparse_method", "Z", "Z1", "Z2"})


def settings_in_xml(term) -> dict:
    """The settings of ``term`` that its QUIP blocks carry."""
    return {k: v for k, v in term.to_dict().items() if k not in SETTINGS_NOT_IN_XML}


def _term_key(term) -> tuple:
    """What blocks must share to be one gapx term: every setting but the sparse-point count."""
    settings = term.to_dict()
    settings.pop("n_sparse")
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in settings.items()))


SOAP_KEYS = {
    "cutoff",
    "cutoff_transition_width",
    "n_max",
    "l_max",
    "atom_sigma",
    "central_weight",
    "n_species",
    "species_z",
    "z",
    "n_z",
}
SOAP_FIXED = {
    "normalise": (_flag, True),
    "average": (_flag, False),
    "diagonal_radial": (_flag, False),
    "central_reference_all_species": (_flag, False),
    "nu_r": (int, 2),
    "nu_s": (int, 1),
    "covariance_sigma0": (float, 0.0),
}


def build_soap(block: RawBlock) -> ImportedBlock:
    _check_keys(block, SOAP_KEYS, SOAP_FIXED)
    _check_covariance(block, DOT_PRODUCT, "dot_product")
    _check_no_permutations(block)
    if _setting(block, "n_z", int, 1) != 1:
        raise NotImplementedError(f"{block.where}: soap with n_Z > 1 is not supported by gapx")
    center = _setting(block, "z", int)
    species = _setting(block, "species_z", _species, [center])
    if _setting(block, "n_species", int, len(species)) != len(species):
        raise ValueError(f"{block.where}: n_species does not match species_Z")
    if block.zeta is None:
        raise ValueError(f"{block.where}: a dot_product block without zeta")
    soap = SOAP(
        species=species,
        cutoff=_setting(block, "cutoff", float),
        n_max=_setting(block, "n_max", int),
        l_max=_setting(block, "l_max", int),
        atom_sigma=_setting(block, "atom_sigma", float),
        cutoff_transition_width=_setting(block, "cutoff_transition_width", float, 0.5),
        central_weight=_setting(block, "central_weight", float, 1.0),
        zeta=block.zeta,
        delta=block.signal_variance,
        n_sparse=max(len(block.alpha), 1),
        radial_basis="quip",
    )
    _check_dimensions(block, soap.n_features + 1)
    if not np.all(block.cutoffs == 1.0):
        raise NotImplementedError(f"{block.where}: soap sparse points with sparseCutoff != 1")
    points = np.empty((len(block.points), soap.n_features))
    points[:, soap.quip_order] = block.points[:, :-1]
    key = _term_key(soap)
    return ImportedBlock(key, soap, center, points, block.alpha, soap.delta, tuple(species))


TWO_BODY_KEYS = {"cutoff", "cutoff_transition_width", "z1", "z2"}


def build_distance_2b(block: RawBlock) -> ImportedBlock:
    _check_keys(block, TWO_BODY_KEYS, {})
    _check_covariance(block, ARD_SE, "ard_se")
    _check_no_permutations(block)
    _check_dimensions(block, 1)
    if "z1" not in block.settings or "z2" not in block.settings:
        raise NotImplementedError(f"{block.where}: distance_2b without Z1 and Z2")
    z1, z2 = _setting(block, "z1", int), _setting(block, "z2", int)
    if block.theta.shape != (1,):
        raise ValueError(f"{block.where}: distance_2b needs one theta, got {block.theta.size}")
    term = TwoBody(
        cutoff=_setting(block, "cutoff", float),
        cutoff_transition_width=_setting(block, "cutoff_transition_width", float, 0.5),
        delta=block.signal_variance,
        theta=float(block.theta[0]),
        n_sparse=max(len(block.alpha), 1),
    )
    points = np.stack([block.points[:, 0], block.cutoffs], axis=1)
    kind = min(z1, z2) * PAIR_KIND_BASE + max(z1, z2)
    key = _term_key(term)
    return ImportedBlock(key, term, kind, points, 2.0 * block.alpha, term.delta, (z1, z2))


THREE_BODY_KEYS = {"cutoff", "cutoff_transition_width", "z", "z1", "z2"}


def build_angle_3b(block: RawBlock) -> ImportedBlock:
    """One species triplet (Z; Z1, Z2) of a ThreeBody term without species filters: blocks that
    differ only in their species share the term, each block one kind of it."""
    _check_keys(block, THREE_BODY_KEYS, {})
    _check_covariance(block, ARD_SE, "ard_se")
    _check_no_permutations(block)
    _check_dimensions(block, N_GEOMETRIC_FEATURES)
    species = tuple(_setting(block, key, int, 0) for key in ("z", "z1", "z2"))
    if 0 in species:
        raise NotImplementedError(
            f"{block.where}: angle_3b without all of Z, Z1 and Z2 (a block for any species) is "
            "not supported by gapx: fit with add_species=T or give the species"
        )
    if block.theta.shape != (N_GEOMETRIC_FEATURES,):
        raise ValueError(
            f"{block.where}: angle_3b needs {N_GEOMETRIC_FEATURES} theta, got {block.theta.size}"
        )
    term = ThreeBody(
        cutoff=_setting(block, "cutoff", float),
        cutoff_transition_width=_setting(block, "cutoff_transition_width", float, 0.5),
        delta=block.signal_variance,
        theta=tuple(float(t) for t in block.theta),
        n_sparse=max(len(block.alpha), 1),
    )
    points = np.c_[block.points, block.cutoffs]
    kind = int(triplet_kind(*species))
    key = _term_key(term)
    return ImportedBlock(key, term, kind, points, block.alpha, term.delta, species)


#: QUIP descriptor name -> builder of its gapx term.
DESCRIPTOR_BUILDERS = {
    "soap": build_soap,
    "distance_2b": build_distance_2b,
    "angle_3b": build_angle_3b,
}


@dataclass
class ExportedBlock:
    """What one ``<gpCoordinates>`` holds, in QUIP's layout."""

    descriptor: str
    covariance_type: int
    signal_variance: float
    zeta: float | None
    theta: np.ndarray | None
    points: np.ndarray
    cutoffs: np.ndarray
    alpha: np.ndarray
    #: The ``<permutation>`` text: the identity, as long as gap_fit writes it for the descriptor.
    permutation: str = "1"


def export_soap(term: SOAP, kind: int, points: np.ndarray, alpha: np.ndarray, delta: float):
    if term.radial_basis != "quip":
        raise ValueError(
            "a SOAP with the GTO radial basis cannot be expressed in QUIP, whose soap "
            "descriptor uses equispaced Gaussians: fit the model with "
            "gapx.SOAP(..., radial_basis='quip') to export it"
        )
    species = " ".join(str(z) for z in term.numbers)
    descriptor = (
        f"soap cutoff={term.cutoff!r} cutoff_transition_width={term.cutoff_transition_width!r} "
        f"n_max={term.n_max} l_max={term.l_max} atom_sigma={term.atom_sigma!r} "
        f"central_weight={term.central_weight!r} n_species={len(term.numbers)} "
        f"species_Z={{{species}}} Z={kind} covariance_type=dot_product zeta={term.zeta!r} "
        f"delta={delta!r} n_sparse={len(points)}"
    )
    quip_points = np.zeros((len(points), term.n_features + 1))
    quip_points[:, :-1] = points[:, term.quip_order]
    return ExportedBlock(
        descriptor, DOT_PRODUCT, delta, term.zeta, None, quip_points, np.ones(len(points)), alpha
    )


def export_two_body(term: TwoBody, kind: int, points: np.ndarray, alpha: np.ndarray, delta: float):
    z1, z2 = divmod(int(kind), PAIR_KIND_BASE)
    descriptor = (
        f"distance_2b cutoff={term.cutoff!r} "
        f"cutoff_transition_width={term.cutoff_transition_width!r} Z1={z1} Z2={z2} "
        f"covariance_type=ard_se delta={delta!r} theta_uniform={term.theta!r} "
        f"n_sparse={len(points)}"
    )
    return ExportedBlock(
        descriptor,
        ARD_SE,
        delta,
        None,
        np.array([term.theta]),
        points[:, :1].copy(),
        points[:, 1].copy(),
        0.5 * alpha,
    )


def export_three_body(
    term: ThreeBody, kind: int, points: np.ndarray, alpha: np.ndarray, delta: float
):
    centre, pair = divmod(int(kind), TRIPLET_KIND_BASE)
    z1, z2 = divmod(pair, PAIR_KIND_BASE)
    descriptor = (
        f"angle_3b cutoff={term.cutoff!r} "
        f"cutoff_transition_width={term.cutoff_transition_width!r} Z={centre} Z1={z1} Z2={z2} "
        f"covariance_type=ard_se delta={delta!r} n_sparse={len(points)}"
    )
    return ExportedBlock(
        descriptor,
        ARD_SE,
        delta,
        None,
        np.array(term.theta),
        points[:, :N_GEOMETRIC_FEATURES].copy(),
        points[:, N_GEOMETRIC_FEATURES].copy(),
        alpha,
        " ".join(str(d) for d in range(1, N_GEOMETRIC_FEATURES + 1)),
    )


#: gapx term type_name -> exporter of one of its sparse sets as a QUIP block.
TERM_EXPORTERS = {"soap": export_soap, "two_body": export_two_body, "three_body": export_three_body}
