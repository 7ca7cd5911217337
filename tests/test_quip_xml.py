"""QUIP/GAP XML import (gapx.from_quip) and export (GAP.to_quip) against quippy, on models
gap_fit fits in the test (skipped where quippy-ase is not installed)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil

import numpy as np
import pytest
from quip_models import (
    assert_matches_quippy,
    comparison_structures,
    fit_quip_model,
    quippy_results,
    training_frames,
)

import gapx
from gapx import serialization
from gapx.descriptors.three_body import triplet_kind
from gapx.fitting import FittedState

pytest.importorskip("quippy")

SOAP_CU = (
    "soap cutoff=4.0 n_max=4 l_max=3 atom_sigma=0.5 zeta={zeta} delta=0.2 n_sparse=12 "
    "sparse_method=cur_points covariance_type=dot_product"
)
MODELS = {
    # name: (gap string, species, extra gap_fit arguments)
    "soap_zeta4": (SOAP_CU.format(zeta=4), ["Cu"], ""),
    "soap_zeta2_inline": (
        SOAP_CU.format(zeta=2) + " central_weight=0.5 cutoff_transition_width=1.0",
        ["Cu"],
        "sparse_separate_file=F",
    ),
    "two_body_soap_CuAu": (
        "distance_2b cutoff=4.5 covariance_type=ard_se delta=0.3 theta_uniform=0.8 n_sparse=10 "
        "sparse_method=uniform : " + SOAP_CU.format(zeta=2),
        ["Au", "Cu"],
        "",
    ),
    "two_three_body_soap_CuAu": (
        "distance_2b cutoff=4.5 covariance_type=ard_se delta=0.3 theta_uniform=0.8 n_sparse=10 "
        "sparse_method=uniform add_species=T : angle_3b cutoff=3.0 cutoff_transition_width=0.7 "
        "covariance_type=ard_se delta=0.05 theta_uniform=1.3 n_sparse=8 sparse_method=random "
        "add_species=T : " + SOAP_CU.format(zeta=2),
        ["Au", "Cu"],
        "rnd_seed=1",
    ),
}


@pytest.fixture(scope="module")
def quip_models(tmp_path_factory):
    out = {}
    for name, (gap, symbols, extra) in MODELS.items():
        folder = tmp_path_factory.mktemp(name)
        out[name] = (fit_quip_model(str(folder), gap, symbols, extra), symbols)
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_imported_model_matches_quippy(quip_models, name):
    xml, symbols = quip_models[name]
    model = gapx.from_quip(xml)
    assert_matches_quippy(model, xml, comparison_structures(symbols))


def test_import_finds_the_blocks(quip_models):
    model = gapx.from_quip(quip_models["two_body_soap_CuAu"][0])
    two_body, soap = model.terms
    assert isinstance(two_body, gapx.TwoBody)
    assert two_body.theta == 0.8
    assert (soap.radial_basis, soap.zeta, soap.species) == ("quip", 2.0, ("Au", "Cu"))
    kinds = sorted((s.term, s.kind) for s in model.sparse_sets)
    assert kinds == [(0, 29029), (0, 29079), (0, 79079), (1, 29), (1, 79)]
    assert model.sigma_force == 0.03


def test_import_finds_the_angle_3b_blocks(quip_models):
    """add_species=T writes one angle_3b block per species triplet: one ThreeBody, six kinds."""
    model = gapx.from_quip(quip_models["two_three_body_soap_CuAu"][0])
    two_body, three_body, soap = model.terms
    assert isinstance(three_body, gapx.ThreeBody)
    assert (three_body.cutoff, three_body.cutoff_transition_width) == (3.0, 0.7)
    assert three_body.theta == (1.3, 1.3, 1.3)
    assert (three_body.Z, three_body.Z1, three_body.Z2) == (None, None, None)
    kinds = sorted(s.kind for s in model.sparse_sets if s.term == 1)
    expected = [triplet_kind(c, a, b) for c in (29, 79) for a, b in ((29, 29), (29, 79), (79, 79))]
    assert kinds == expected
    assert all(s.points.shape[1] == 4 for s in model.sparse_sets if s.term == 1)


def test_imported_model_is_a_full_gapx_model(quip_models, tmp_path):
    """predict with stds, save and load as .gapx, the ASE calculator, select, calibrate."""
    xml, symbols = quip_models["two_body_soap_CuAu"]
    chosen = gapx.select(gapx.from_quip(xml), comparison_structures(symbols), 2)
    assert len(set(chosen.tolist())) == 2
    model = gapx.from_quip(xml)
    atoms = comparison_structures(symbols)[0]
    result = model.predict(atoms)
    assert np.all(result["forces_std"] > 0)
    assert result["energy_std"] > 0
    model.save(tmp_path / "imported.gapx")
    again = gapx.load(tmp_path / "imported.gapx")
    np.testing.assert_array_equal(again.predict(atoms)["forces"], result["forces"])
    atoms.calc = gapx.GAPCalculator(again)
    assert atoms.get_potential_energy() == pytest.approx(result["energy"], abs=1e-12)
    atoms.calc = gapx.GAPCalculator(xml)  # a path to the XML itself
    assert atoms.get_potential_energy() == pytest.approx(result["energy"], abs=1e-12)
    report = model.calibrate(training_frames(symbols, n_frames=3, seed=5))
    assert model.calibration is not None
    assert "after" in report


def _gapx_fitted_model():
    frames = training_frames(["Au", "Cu"], n_frames=5, seed=3)
    terms = [
        gapx.TwoBody(cutoff=4.5, delta=0.3, theta=0.8, n_sparse=8),
        gapx.ThreeBody(cutoff=3.0, delta=0.05, theta=(1.5, 2.0, 1.2), n_sparse=6),
        gapx.SOAP(
            species=["Cu", "Au"],
            cutoff=4.0,
            n_max=4,
            l_max=3,
            zeta=2,
            delta=0.2,
            n_sparse=10,
            radial_basis="quip",
        ),
    ]
    model = gapx.GAP(terms, verbose=False)
    model.fit(frames)
    return model


def _model_file_contents(model):
    header = serialization.model_header(model)
    return header, serialization.model_arrays(model)


def test_export_reproduces_gapx_in_quippy_and_round_trips(tmp_path):
    model = _gapx_fitted_model()
    model.save(tmp_path / "original.gapx")
    original = gapx.load(tmp_path / "original.gapx")
    original.to_quip(tmp_path / "exported.xml")
    structures = comparison_structures(["Au", "Cu"])
    assert_matches_quippy(original, str(tmp_path / "exported.xml"), structures)

    back = gapx.from_quip(tmp_path / "exported.xml")
    header, arrays = _model_file_contents(original)
    header_back, arrays_back = _model_file_contents(back)
    assert header_back == header
    assert arrays_back.keys() == arrays.keys()
    for name, value in arrays.items():
        np.testing.assert_array_equal(arrays_back[name], value)

    # The XML alone (no .gapx beside it) still predicts the same numbers, warning once.
    folder = tmp_path / "xml_only"
    folder.mkdir()
    for path in tmp_path.glob("exported.xml*"):
        if not path.name.endswith(".gapx"):
            shutil.copy(path, folder / path.name)
    with pytest.warns(UserWarning, match="file missing"):
        xml_only = gapx.from_quip(folder / "exported.xml")
    for atoms in structures[:2]:
        ours, theirs = xml_only.predict(atoms, std=False), original.predict(atoms, std=False)
        assert ours["energy"] == pytest.approx(theirs["energy"], abs=1e-9)
        np.testing.assert_allclose(ours["forces"], theirs["forces"], atol=1e-9)


def test_export_of_a_three_body_with_species_filters(tmp_path):
    """A filtered ThreeBody exports one block per admitted triplet; quippy agrees; from_quip
    returns the exported model, filters included (the XML has no place for them), but not a
    sidecar whose settings differ from the XML's."""
    frames = training_frames(["Au", "Cu"], n_frames=3, seed=4)
    term = gapx.ThreeBody(cutoff=3.0, Z="Cu", Z1="Au", delta=0.05, theta=1.4, n_sparse=5)
    model = gapx.GAP([term], verbose=False)
    model.fit(frames)
    assert sorted(s.kind for s in model.sparse_sets) == [
        triplet_kind(29, 79, 29),
        triplet_kind(29, 79, 79),
    ]
    structures = comparison_structures(["Au", "Cu"])
    assert np.abs(model.predict(structures[0], std=False)["forces"]).max() > 1e-2
    xml = tmp_path / "filtered.xml"
    model.to_quip(xml)
    assert_matches_quippy(model, str(xml), structures)
    header, arrays = _model_file_contents(model)
    back = gapx.from_quip(xml)
    assert back.terms == [term]
    assert _model_file_contents(back)[0] == header
    np.testing.assert_array_equal(_model_file_contents(back)[1]["alpha"], arrays["alpha"])

    other = gapx.GAP([dataclasses.replace(term, theta=1.5)], verbose=False)
    other._adopt(FittedState(model.e0, model.sparse_sets, model.alpha, model.R, model.summary))
    sidecar = tmp_path / "filtered.xml.gapx"
    other.save(sidecar)
    digest = hashlib.md5(sidecar.read_bytes()).hexdigest()
    xml.write_text(re.sub(r'md5sum="[0-9a-f]+" */>', f'md5sum="{digest}" />', xml.read_text()))
    with pytest.warns(UserWarning, match="does not match the XML"):
        imported = gapx.from_quip(xml)
    assert imported.terms[0].Z is None


def test_export_refuses_what_quip_cannot_express(tmp_path):
    frames = training_frames(["Cu"], n_frames=2)
    gto = gapx.GAP([gapx.SOAP(species=["Cu"], n_max=3, l_max=2, n_sparse=4)], verbose=False)
    gto.fit(frames)
    with pytest.raises(ValueError, match="radial_basis='quip'"):
        gto.to_quip(tmp_path / "gto.xml")
    with_ewald = gapx.GAP(
        [gapx.SOAP(species=["Cu"], n_max=3, l_max=2, n_sparse=4, radial_basis="quip")],
        baseline=gapx.Ewald({"Cu": 0.1}, background=True),
        verbose=False,
    )
    with_ewald.fit(frames)
    with pytest.raises(ValueError, match="Ewald baseline"):
        with_ewald.to_quip(tmp_path / "ewald.xml")
    assert not list(tmp_path.glob("*.xml*"))


def _copy_model_files(xml, folder):
    """Copies of a gap_fit model's XML and sparseX files in ``folder``: (xml path, its text)."""
    source = os.path.dirname(xml)
    for name in os.listdir(source):
        if name.startswith("gap.xml"):
            shutil.copy(os.path.join(source, name), folder / name)
    path = folder / "gap.xml"
    return path, path.read_text()


@pytest.fixture
def model_copy(quip_models, tmp_path):
    """A copy of the SOAP + TwoBody model's files to corrupt: (xml path, its text)."""
    return _copy_model_files(quip_models["two_body_soap_CuAu"][0], tmp_path)


def _sparse_files(text):
    return re.findall(r'sparseX_filename="([^"]+)"', text)


def test_malformed_and_hostile_xml(model_copy, tmp_path):
    path, text = model_copy
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="gap.xml: malformed XML"):
        gapx.from_quip(path)
    secret = tmp_path / "secret.txt"
    secret.write_text("1.0\n")
    external = f'<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>\n'
    path.write_text(external + text.replace('value="', 'value="&x;', 1))
    with pytest.raises(ValueError, match="refused XML construct"):
        gapx.from_quip(path)
    laughs = '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;">]>\n'
    path.write_text(laughs + text)
    with pytest.raises(ValueError, match="refused XML construct"):
        gapx.from_quip(path)


def test_missing_truncated_and_escaping_sparse_files(model_copy):
    path, text = model_copy
    first = _sparse_files(text)[3]  # a SOAP block's file
    sparse = path.parent / first
    content = sparse.read_bytes()
    sparse.unlink()
    with pytest.raises(ValueError, match=f"{first}.*missing"):
        gapx.from_quip(path)
    sparse.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=f"{first}.*md5"):
        gapx.from_quip(path)
    path.write_text(re.sub(r' sparseX_md5sum="[^"]*"', "", text))
    with pytest.raises(ValueError, match=f"{first}.*expected [0-9]+ numbers, found"):
        gapx.from_quip(path)
    path.write_text(text.replace(f'sparseX_filename="{first}"', 'sparseX_filename="../x"'))
    with pytest.raises(ValueError, match="must be a file name in the model's folder"):
        gapx.from_quip(path)


def test_sizes_that_disagree_with_the_descriptor(model_copy):
    path, text = model_copy
    path.write_text(text.replace("n_max=4", "n_max=5", 1))
    with pytest.raises(
        ValueError, match=r"gpCoordinates label=.*sparse points have 145 dimensions"
    ):
        gapx.from_quip(path)
    path.write_text(text.replace("n_max=4", "n_max=400", 1))
    with pytest.raises(ValueError, match=r"gpCoordinates label=.*n_max must be in \[1, 64\]"):
        gapx.from_quip(path)
    block = re.search(r'n_sparseX="10"', text)
    assert block is not None
    path.write_text(text.replace('n_sparseX="10"', 'n_sparseX="11"', 1))
    with pytest.raises(ValueError, match="n_sparseX=11"):
        gapx.from_quip(path)


def test_unsupported_descriptors_settings_and_potentials(model_copy):
    path, text = model_copy
    path.write_text(text.replace("<descriptor> soap ", "<descriptor> soap_turbo ", 1))
    with pytest.raises(NotImplementedError, match="descriptor 'soap_turbo'"):
        gapx.from_quip(path)
    path.write_text(text.replace("n_max=4", "n_max=4 diagonal_radial=T", 1))
    with pytest.raises(NotImplementedError, match="diagonal_radial=T"):
        gapx.from_quip(path)
    path.write_text(re.sub(r'init_args="IP GAP', 'init_args="Sum init_args_pot1={IP Glue}', text))
    with pytest.raises(NotImplementedError, match="Glue"):
        gapx.from_quip(path)


def test_angle_3b_for_any_species_is_refused(quip_models, tmp_path):
    path, text = _copy_model_files(quip_models["two_three_body_soap_CuAu"][0], tmp_path)
    unset = re.sub(r"(<descriptor>\s*angle_3b[^<]*?) Z=\d+", r"\1", text, count=1)
    assert unset != text
    path.write_text(unset)
    with pytest.raises(NotImplementedError, match="angle_3b without all of Z, Z1 and Z2"):
        gapx.from_quip(path)


def test_quippy_results_are_not_trivial(quip_models):
    """The comparison has something to compare: forces are far from zero."""
    xml, symbols = quip_models["soap_zeta4"]
    results = quippy_results(xml, comparison_structures(symbols))
    assert min(np.abs(f).max() for _, f, _ in results) > 1e-2


def test_cli_convert_info_and_eval_read_quip_xml(quip_models, tmp_path, capsys):
    from ase.io import write

    from gapx.cli import main

    xml, symbols = quip_models["two_body_soap_CuAu"]
    assert main(["info", xml]) == 0
    out = capsys.readouterr().out
    assert "QUIP/GAP XML" in out
    assert "radial_basis = 'quip'" in out
    frames = training_frames(symbols, n_frames=2, seed=9)
    write(tmp_path / "test.xyz", frames)
    assert (
        main(["eval", xml, str(tmp_path / "test.xyz"), "--json", str(tmp_path / "e.json"), "-q"])
        == 0
    )
    assert (tmp_path / "e.json").exists()
    assert main(["convert", xml, str(tmp_path / "m.gapx")]) == 0
    assert main(["convert", str(tmp_path / "m.gapx"), str(tmp_path / "m.xml")]) == 0
    structures = comparison_structures(symbols)[:2]
    assert_matches_quippy(gapx.load(tmp_path / "m.gapx"), str(tmp_path / "m.xml"), structures)
    capsys.readouterr()
    gto = gapx.GAP([gapx.SOAP(species=["Cu"], n_max=3, l_max=2, n_sparse=4)], verbose=False)
    gto.fit(training_frames(["Cu"], n_frames=2))
    gto.save(tmp_path / "gto.gapx")
    assert main(["convert", str(tmp_path / "gto.gapx"), str(tmp_path / "gto.xml")]) == 1
    assert "radial_basis='quip'" in capsys.readouterr().err
    assert not (tmp_path / "gto.xml").exists()
