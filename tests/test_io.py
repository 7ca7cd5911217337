"""Model file: bit-identical round trip, refusal of bad files; label extraction."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from structures import random_cu_al_cells, random_structure, random_triclinic_cell

import gapx
from gapx.dataset import read_frames
from gapx.io import FORMAT_VERSION, HEADER, read_model_file, write_model_file
from gapx.labels import extract_labels

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(11)
    soap = gapx.SOAP(species=["Al", "Cu"], cutoff=3.5, n_max=3, l_max=2, n_sparse=8, zeta=2)
    model = gapx.GAP(
        [gapx.TwoBody(cutoff=4.0, n_sparse=6, sparse_method="cur"), soap],
        config_type_sigma={"bulk": (0.002, 0.04, 0.06)},  # stored, not used by these frames
        verbose=False,
    )
    with pytest.warns(UserWarning, match=r"config_type_sigma has entries for \['bulk'\]"):
        model.fit(random_cu_al_cells(rng, 4))
    return model, random_cu_al_cells(rng, 2)


def test_save_load_predict_is_bit_identical(fitted, tmp_path):
    model, probes = fitted
    path = tmp_path / "model.gapx"
    model.save(path)
    loaded = gapx.load(path)
    assert loaded.e0 == model.e0
    assert loaded.config_type_sigma == model.config_type_sigma
    assert [t.to_dict() for t in loaded.terms] == [t.to_dict() for t in model.terms]
    for atoms in probes:
        a, b = model.predict(atoms), loaded.predict(atoms)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    header, _ = read_model_file(path)
    assert header["format_version"] == FORMAT_VERSION
    assert header["gapx_version"] == gapx.__version__
    assert header["training"]["n_frames"] == 4
    assert header["species"] == ["Al", "Cu"]


def test_baseline_survives_the_file(tmp_path, rng):
    frames = []
    for _ in range(3):
        atoms = random_structure(
            rng, ["Na", "Cl"], 4, cell=random_triclinic_cell(rng, 5.0), min_distance=2.0
        )
        atoms.info["energy"] = float(rng.normal())
        frames.append(atoms)
    ewald = gapx.Ewald(charges={"Na": 1.0, "Cl": -1.0}, accuracy=1e-7)
    model = gapx.GAP([gapx.TwoBody(cutoff=3.5, n_sparse=4)], baseline=ewald, verbose=False)
    model.fit(frames)
    model.save(tmp_path / "m.gapx")
    loaded = gapx.load(tmp_path / "m.gapx")
    assert loaded.baseline == ewald
    a, b = model.predict(frames[0]), loaded.predict(frames[0])
    assert a["energy"] == b["energy"]
    assert a["energy_longrange"] == b["energy_longrange"]


def _rewrite(source, target, mutate):
    """Copy a model zip, letting ``mutate(name, bytes)`` change or drop (None) members."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = mutate(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item, data)


def _header_bytes(header: dict) -> bytes:
    import io as _io

    buffer = _io.BytesIO()
    np.save(buffer, np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    return buffer.getvalue()


def test_bad_files_are_refused(fitted, tmp_path):
    model, _ = fitted
    good = tmp_path / "good.gapx"
    model.save(good)
    raw = good.read_bytes()

    truncated = tmp_path / "truncated.gapx"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        gapx.load(truncated)

    corrupted = tmp_path / "corrupted.gapx"
    data = bytearray(raw)
    # Flip bytes inside the stored data of the largest member: the CRC check must fail.
    with zipfile.ZipFile(good) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    middle = info.header_offset + 30 + len(info.filename) + info.file_size // 2
    data[middle : middle + 8] = bytes(8 - k for k in range(8))
    corrupted.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted or truncated"):
        gapx.load(corrupted)

    not_zip = tmp_path / "text.gapx"
    not_zip.write_text("hello")
    with pytest.raises(ValueError, match="corrupted or truncated"):
        gapx.load(not_zip)

    with pytest.raises(FileNotFoundError):
        gapx.load(tmp_path / "missing.gapx")

    header, _ = read_model_file(good)

    def newer(name, content):
        if name == HEADER + ".npy":
            return _header_bytes({**header, "format_version": FORMAT_VERSION + 1})
        return content

    _rewrite(good, tmp_path / "newer.gapx", newer)
    with pytest.raises(ValueError, match="newer than this gapx reads"):
        gapx.load(tmp_path / "newer.gapx")

    _rewrite(good, tmp_path / "missing_array.gapx", lambda n, c: None if n == "R.npy" else c)
    with pytest.raises(ValueError, match=r"missing arrays \['R'\]"):
        gapx.load(tmp_path / "missing_array.gapx")

    def replaced_alpha(value):
        def mutate(name, content):
            if name == "alpha.npy":
                import io as _io

                buffer = _io.BytesIO()
                np.save(buffer, value)
                return buffer.getvalue()
            return content

        return mutate

    # Sizes are checked from the zip directory before anything is read, shapes from each
    # member's .npy header before its data are.
    _rewrite(good, tmp_path / "size.gapx", replaced_alpha(np.zeros(3)))
    with pytest.raises(ValueError, match="member 'alpha.npy' inflates to"):
        gapx.load(tmp_path / "size.gapx")
    _rewrite(good, tmp_path / "shape.gapx", replaced_alpha(np.zeros((model.alpha.size, 1))))
    with pytest.raises(ValueError, match="array 'alpha' has shape"):
        gapx.load(tmp_path / "shape.gapx")

    def no_header(name, content):
        return None if name == HEADER + ".npy" else content

    _rewrite(good, tmp_path / "noheader.gapx", no_header)
    with pytest.raises(ValueError, match="no gapx header"):
        gapx.load(tmp_path / "noheader.gapx")

    def unknown_term(name, content):
        if name == HEADER + ".npy":
            return _header_bytes({**header, "terms": [{"type": "os.system"}, header["terms"][1]]})
        return content

    _rewrite(good, tmp_path / "term.gapx", unknown_term)
    with pytest.raises(ValueError, match="unknown term type 'os.system'"):
        gapx.load(tmp_path / "term.gapx")


def test_pickle_is_never_loaded(tmp_path):
    path = tmp_path / "pickled.gapx"
    header = {
        "format": "gapx-model",
        "format_version": 1,
        "arrays": {"evil": {"shape": [1], "dtype": "|O"}},
    }
    with open(path, "wb") as handle:
        np.savez(
            handle,
            evil=np.array([{"a": 1}], dtype=object),
            **{HEADER: np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)},
        )
    with pytest.raises(ValueError, match="pickle"):
        gapx.load(path)
    with pytest.raises(ValueError, match="only numeric arrays"):
        write_model_file(tmp_path / "x.gapx", {}, {"evil": np.array([object()], dtype=object)})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
arrays = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.int64, np.int32, np.uint8, np.float32]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    header=st.dictionaries(
        st.text(min_size=1, max_size=6).filter(
            lambda k: k not in ("format", "format_version", "arrays")
        ),
        json_values,
        max_size=4,
    ),
    contents=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), arrays, max_size=4
    ),
)
def test_model_file_round_trip(tmp_path, header, contents):
    path = tmp_path / "roundtrip.gapx"
    write_model_file(path, header, contents)
    read_header, read_arrays = read_model_file(path)
    for key, value in header.items():
        assert read_header[key] == value
    assert read_arrays.keys() == contents.keys()
    for name, array in contents.items():
        assert read_arrays[name].dtype == array.dtype
        np.testing.assert_array_equal(read_arrays[name], array)


def test_label_extraction(rng):
    atoms = random_structure(rng, ["Cu"], 3, cell=random_triclinic_cell(rng, 4.0), min_distance=1.5)
    stress = rng.normal(size=6)
    atoms.calc = SinglePointCalculator(atoms, energy=1.5, forces=np.ones((3, 3)), stress=stress)
    labels = extract_labels(atoms, 0)
    xx, yy, zz, yz, xz, xy = stress
    full = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    np.testing.assert_allclose(labels.virial, -full * atoms.get_volume())
    assert labels.energy == 1.5
    # Custom keys in info/arrays; virial given as 9 numbers.
    plain = atoms.copy()
    plain.info.update(my_e=2.0, my_v=list(range(9)), config_type="liquid", force_sigma=0.1)
    plain.arrays["my_f"] = np.zeros((3, 3))
    labels = extract_labels(plain, 4, energy_key="my_e", forces_key="my_f", virial_key="my_v")
    assert labels.energy == 2.0
    np.testing.assert_array_equal(labels.virial, np.arange(9.0).reshape(3, 3))
    assert labels.config_type == "liquid"
    assert labels.force_sigma == 0.1
    both = plain.copy()
    both.info["stress"] = np.zeros(6)
    with pytest.raises(ValueError, match="frame 2: virial and stress labels disagree"):
        extract_labels(both, 2, energy_key="my_e", virial_key="my_v")
    bad_sigma = plain.copy()
    bad_sigma.info["energy_sigma"] = -1.0
    with pytest.raises(ValueError, match="frame 3: energy_sigma must be positive"):
        extract_labels(bad_sigma, 3, energy_key="my_e")


def test_read_frames():
    frames = read_frames(os.path.join(DATA, "ethanol_train_50.extxyz"))
    assert len(frames) == 50
    labels = extract_labels(frames[0], 0)
    assert labels.forces.shape == (9, 3)
    assert labels.virial is None
    with pytest.raises(FileNotFoundError):
        read_frames(os.path.join(DATA, "nope.extxyz"))
