"""``GAP.to_quip``: a gapx model as a QUIP/GAP XML file that quippy and LAMMPS's ``pair_style
quip`` read, with one ``sparseX`` file per block beside it.

Only terms QUIP can express are written (:data:`gapx.quip.terms.TERM_EXPORTERS`: SOAP with the
QUIP radial basis, TwoBody, ThreeBody); anything else raises ValueError saying what to do
instead. QUIP's format has no place for what only gapx uses (the weights' posterior
covariance, noise settings, calibration), so the complete gapx model is also written beside the
XML (``<xml>.gapx``) and named, with its md5 sum, by a ``<gapx_model>`` element that QUIP ignores:
:func:`gapx.from_quip` then returns exactly the model that was exported.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ElementTree

from ase.data import atomic_numbers

from ..io import atomic_write
from .sparse_points import write_sparse_file
from .terms import TERM_EXPORTERS

#: The gap_version written: that of the gap_fit (QUIP v0.10.3) the format was checked against.
GAP_VERSION = "1769700636"
#: Suffix of the complete gapx model written beside the XML.
GAPX_SIDECAR = ".gapx"


def _check_expressible(model) -> None:
    if model.baseline is not None:
        raise ValueError(
            f"the model has a {type(model.baseline).__name__} baseline, which QUIP's GAP "
            "cannot express: export a model without a baseline (fit the short-range GAP alone) "
            "or keep the .gapx file"
        )
    for term in model.terms:
        if term.type_name not in TERM_EXPORTERS:
            raise ValueError(
                f"a {type(term).__name__} term cannot be expressed in QUIP's XML (exportable: "
                f"{', '.join(sorted(TERM_EXPORTERS))}); keep the .gapx file"
            )


def _blocks(model):
    for s in model.sparse_sets:
        term = model.terms[s.term]
        exporter = TERM_EXPORTERS[term.type_name]
        yield exporter(term, s.kind, s.points, model.alpha[s.columns], s.delta)


def write_quip(model, path, label: str = "GAP_gapx", gapx_copy: bool = True) -> None:
    """Write ``model`` to ``path`` (QUIP XML), its sparseX files and (``gapx_copy``) its
    ``.gapx`` sidecar.

    Every file goes through :func:`gapx.io.atomic_write`; the XML is written last, so a reader
    never finds an XML whose sparse files are not complete."""
    model._check_fitted()
    _check_expressible(model)
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    root = ElementTree.Element(label)
    ElementTree.SubElement(root, "Potential", label=label, init_args=f"IP GAP label={label}")
    params = ElementTree.SubElement(root, "GAP_params", label=label, gap_version=GAP_VERSION)
    data = ElementTree.SubElement(params, "GAP_data", do_core="F")
    for symbol, value in sorted(model.e0.items(), key=lambda item: atomic_numbers[item[0]]):
        ElementTree.SubElement(data, "e0", Z=str(atomic_numbers[symbol]), value=repr(float(value)))
    blocks = list(_blocks(model))
    sparse = ElementTree.SubElement(
        params, "gpSparse", label=label, n_coordinate=str(len(blocks)), fitted="T"
    )
    for n, block in enumerate(blocks, start=1):
        sparse_name = f"{name}.sparseX.{label}{n}"
        md5 = write_sparse_file(os.path.join(folder, sparse_name), block.points)
        attributes = {
            "label": f"{label}{n}",
            "dimensions": str(block.points.shape[1]),
            "signal_variance": repr(float(block.signal_variance)),
            "signal_mean": "0.0",
            "sparsified": "T",
            "n_permutations": "1",
            "covariance_type": str(block.covariance_type),
        }
        if block.zeta is not None:
            attributes["zeta"] = repr(float(block.zeta))
        attributes.update(
            n_sparseX=str(len(block.points)), sparseX_filename=sparse_name, sparseX_md5sum=md5
        )
        coordinates = ElementTree.SubElement(sparse, "gpCoordinates", attributes)
        if block.theta is not None:
            theta = ElementTree.SubElement(coordinates, "theta")
            theta.text = " ".join(repr(float(t)) for t in block.theta)
        ElementTree.SubElement(coordinates, "descriptor").text = block.descriptor
        ElementTree.SubElement(coordinates, "permutation", i="1").text = block.permutation
        for i, (alpha, cutoff) in enumerate(zip(block.alpha, block.cutoffs, strict=True), 1):
            ElementTree.SubElement(
                coordinates,
                "sparseX",
                i=str(i),
                alpha=repr(float(alpha)),
                sparseCutoff=repr(float(cutoff)),
            )
    if gapx_copy:
        sidecar = name + GAPX_SIDECAR
        model.save(os.path.join(folder, sidecar))
        with open(os.path.join(folder, sidecar), "rb") as handle:
            sidecar_md5 = hashlib.md5(handle.read()).hexdigest()
        ElementTree.SubElement(params, "gapx_model", filename=sidecar, md5sum=sidecar_md5)
    ElementTree.indent(root)
    with atomic_write(path) as handle:
        handle.write(ElementTree.tostring(root, encoding="utf-8") + b"\n")
