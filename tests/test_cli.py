"""The gapx command line end to end on tiny EMT data: fit, eval, calibrate, md, info and their
error paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

import gapx
from gapx.cli import main
from gapx.cli.config import apply_override
from gapx.io import FORMAT_VERSION

CONFIG = """\
[[terms]]
type = "two_body"
cutoff = 4.0
delta = 0.5
n_sparse = 8

[[terms]]
type = "soap"
cutoff = 4.0
n_max = 3
l_max = 2
atom_sigma = 0.5
zeta = 2
delta = 0.2
n_sparse = 20

[fit]
sigma_energy = 0.002
sigma_force = 0.05
sigma_virial = 0.05
seed = 0

[fit.config_type_sigma]
hot = [0.004, 0.1, 0.1]
"""


def labelled_frames(n_frames: int, seed: int, energy_key: str | None = None) -> list:
    """Rattled, strained 8-atom Cu cells labelled with EMT; two config types."""
    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 1, 1)
    frames = []
    for index in range(n_frames):
        atoms = base.copy()
        strain = 0.02 * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T)), True)
        hot = index % 3 == 0
        atoms.positions += (0.2 if hot else 0.08) * rng.standard_normal(atoms.positions.shape)
        atoms.info["config_type"] = "hot" if hot else "warm"
        atoms.calc = EMT()
        energy, forces, stress = (
            atoms.get_potential_energy(),
            atoms.get_forces(),
            atoms.get_stress(),
        )
        if energy_key is None:
            atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
        else:  # labels under non-standard names, read back into info / arrays
            atoms.calc = None
            atoms.info[energy_key] = energy
            atoms.arrays["ref_forces"] = forces
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Training/test files, a config and a model fitted once through `gapx fit`."""
    path = tmp_path_factory.mktemp("cli")
    ase.io.write(path / "train.xyz", labelled_frames(9, seed=1), format="extxyz")
    ase.io.write(path / "test.xyz", labelled_frames(6, seed=2), format="extxyz")
    (path / "fit.toml").write_text(CONFIG)
    nacl = bulk("NaCl", "rocksalt", a=5.64)
    nacl.calc = SinglePointCalculator(nacl, energy=-1.0, forces=np.zeros((2, 3)))
    ase.io.write(path / "nacl.xyz", nacl, format="extxyz")  # species the model never saw
    argv = ["fit", path / "train.xyz", "--config", path / "fit.toml", "-o", path / "m.gapx"]
    code = main([str(a) for a in argv])
    assert code == 0
    return path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fit_prints_summary_and_writes_model(workdir, capsys):
    code, out, err = run_cli(
        capsys,
        "fit",
        workdir / "train.xyz",
        workdir / "test.xyz",
        "--config",
        workdir / "fit.toml",
        "-o",
        workdir / "m2.gapx",
        "--set",
        "soap.n_sparse=12",
        "--set",
        "fit.seed=3",
    )
    assert code == 0, err
    assert "data: 15 frames, 120 atoms (8 per frame), 15 periodic" in out
    assert "species: Cu 120" in out
    assert "hot (5)" in out
    assert "warm (10)" in out
    assert "labelled frames: energy 15, forces 15, virial 15" in out
    assert "memory estimate" in out
    assert (workdir / "m2.gapx").is_file()
    model = gapx.load(str(workdir / "m2.gapx"))
    descriptors = [getattr(t, "descriptor", t) for t in model.terms]
    soap = next(d for d in descriptors if type(d).__name__ == "SOAP")
    assert soap.n_sparse == 12
    assert list(soap.species) == ["Cu"]  # species taken from the data


def test_eval_table_json_and_plot(workdir, capsys):
    code, out, err = run_cli(
        capsys,
        "eval",
        workdir / "m.gapx",
        workdir / "test.xyz",
        "--json",
        workdir / "errors.json",
        "--plots",
        workdir / "plots",
        "--quiet",
    )
    assert code == 0, err
    for word in ("config_type", "hot", "warm", "overall", "E RMSE", "F MAE", "V RMSE"):
        assert word in out
    result = json.loads((workdir / "errors.json").read_text())
    assert set(result["config_types"]) == {"hot", "warm"}
    assert result["overall"]["frames"] == 6
    # The errors are the model's: recompute them independently from predictions.
    model = gapx.load(str(workdir / "m.gapx"))
    frames = ase.io.read(workdir / "test.xyz", ":")
    force_errors, energy_errors = [], []
    for atoms in frames:
        out_ = model.predict(atoms.copy())
        force_errors.append(out_["forces"] - atoms.get_forces())
        energy_errors.append((out_["energy"] - atoms.get_potential_energy()) / len(atoms))
    force_errors = np.concatenate(force_errors).ravel()
    energy_errors = np.asarray(energy_errors)
    overall = result["overall"]
    assert np.isclose(overall["forces"]["rmse"], np.sqrt(np.mean(force_errors**2)), rtol=1e-10)
    assert np.isclose(overall["forces"]["mae"], np.mean(np.abs(force_errors)), rtol=1e-10)
    assert np.isclose(overall["energy"]["mae"], np.mean(np.abs(energy_errors)), rtol=1e-10)
    assert overall["forces"]["n"] == 6 * 8 * 3
    assert overall["virial"]["n"] == 6 * 9
    # A model fitted to EMT is far better than predicting zero forces.
    assert overall["forces"]["rmse"] < 0.5 * np.sqrt(
        np.mean(np.concatenate([a.get_forces().ravel() for a in frames]) ** 2)
    )
    png = workdir / "plots" / "parity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrate_end_to_end(workdir, capsys):
    out_model, plots, report = workdir / "cal.gapx", workdir / "cal_plots", workdir / "cal.json"
    code, out, err = run_cli(
        capsys, "calibrate", workdir / "m.gapx", workdir / "test.xyz", "-o", out_model,
        "--plots", plots, "--json", report, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "data: 6 frames, 48 atoms" in out
    for word in ("calibration: energy scale", "Spearman", "mean z²", "in 95%", "before", "after"):
        assert word in out
    assert (plots / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads(report.read_text())
    calibrated, raw = gapx.load(str(out_model)), gapx.load(str(workdir / "m.gapx"))
    assert raw.calibration is None
    assert calibrated.calibration.to_dict() == result["calibration"]
    assert result["before"]["energy"]["n"] == 6
    assert result["after"]["energy"]["mean_z2"] == pytest.approx(1.0, abs=1e-9)
    assert result["before"]["energy"]["mean_z2"] != pytest.approx(1.0, abs=0.05)
    # The table shows the JSON's numbers.
    assert f"{result['before']['energy']['mean_z2']:9.3f}" in out
    # The calibrated file predicts the same means and the calibrated stds.
    atoms = ase.io.read(workdir / "test.xyz", 0)
    a, b = raw.predict(atoms.copy()), calibrated.predict(atoms.copy())
    assert b["energy"] == a["energy"]
    scale, floor = calibrated.calibration.energy_scale, calibrated.calibration.energy_floor
    assert b["energy_std"] == pytest.approx(np.hypot(scale * a["energy_std"], 8 * floor))
    # gapx info reports the calibration; gapx eval the calibrated metrics on the same frames.
    code, out, err = run_cli(capsys, "info", out_model)
    assert code == 0, err
    assert f"calibration: energy scale {scale:.4g}" in out
    code, out, err = run_cli(
        capsys, "eval", out_model, workdir / "test.xyz", "--json", workdir / "cal_eval.json", "-q"
    )
    assert code == 0, err
    assert "energy/atom    calibrated" in out
    uncertainty = json.loads((workdir / "cal_eval.json").read_text())["uncertainty"]
    assert uncertainty["energy"] == pytest.approx(result["after"]["energy"], abs=1e-12)


def test_calibrate_error_paths(workdir, capsys, tmp_path):
    frames = ase.io.read(workdir / "test.xyz", ":2")
    for atoms in frames:
        atoms.calc = None
    ase.io.write(tmp_path / "unlabelled.xyz", frames, format="extxyz")
    target = tmp_path / "out.gapx"
    for argv, message in [
        (["missing.gapx", workdir / "test.xyz"], "model file not found: missing.gapx"),
        ([workdir / "m.gapx", "missing.xyz"], "file not found: missing.xyz"),
        ([workdir / "m.gapx", tmp_path / "unlabelled.xyz"], "frame 0: no labels"),
        ([workdir / "fit.toml", workdir / "test.xyz"], "cannot load model"),
    ]:
        code, out, err = run_cli(capsys, "calibrate", *argv, "-o", target)
        assert code == 1
        assert err.startswith("gapx calibrate: error: ")
        assert message in err
        assert err.count("\n") == 1
        assert not target.exists()
    code, _, err = run_cli(capsys, "calibrate", workdir / "m.gapx", workdir / "test.xyz")
    assert code == 2
    assert "-o/--output" in err


def test_info_describes_the_model(workdir, capsys):
    code, out, err = run_cli(capsys, "info", workdir / "m.gapx")
    assert code == 0, err
    for line in (
        f"format: gapx-model version {FORMAT_VERSION}",
        "species: Cu",
        "term 0: two_body",
        "term 1: soap",
        "    n_max = 3",
        "    l_max = 2",
        "    sigma_force = 0.05",
        "    n_frames = 9",
    ):
        assert line in out


def test_md_nve_and_langevin(workdir, capsys):
    traj = workdir / "md.traj"
    log = workdir / "md.log"
    code, out, err = run_cli(
        capsys,
        "md",
        workdir / "m.gapx",
        workdir / "test.xyz",
        "--steps",
        20,
        "--temperature",
        300,
        "--timestep",
        1.0,
        "--trajectory",
        traj,
        "--trajectory-interval",
        5,
        "--log",
        log,
        "--std-interval",
        10,
        "--quiet",
    )
    assert code == 0, err
    assert "20 steps, 0.0200 ps simulated" in out
    assert "energy drift" in out
    assert "steps/s" in out
    frames = ase.io.read(traj, ":")
    assert len(frames) == 5  # steps 0, 5, 10, 15, 20
    assert not np.allclose(frames[0].positions, frames[-1].positions)
    rows = np.loadtxt(log)
    assert rows.shape == (21, 7)
    assert np.allclose(rows[:, 1], rows[:, 2] + rows[:, 3], atol=1e-5)  # Etot = Epot + Ekin
    # Energy and max force std every --std-interval steps, nan in between.
    assert np.all(rows[::10, 5:] > 0)
    assert np.all(np.isnan(np.delete(rows, [0, 10, 20], axis=0)[:, 5:]))
    assert np.isclose(rows[-1, 0], 0.02)
    code, out, err = run_cli(
        capsys, "md", workdir / "m.gapx", workdir / "test.xyz", "--steps", 5,
        "--ensemble", "langevin", "--friction", 0.02, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "MD summary (langevin" in out
    code, out, err = run_cli(
        capsys, "md", workdir / "m.gapx", workdir / "test.xyz", "--steps", 3, "--no-std",
        "--log", workdir / "nostd.log", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert np.all(np.isnan(np.loadtxt(workdir / "nostd.log")[:, 5:]))


def test_label_keys_from_the_config(workdir, capsys, tmp_path):
    ase.io.write(tmp_path / "k.xyz", labelled_frames(4, 3, energy_key="REF_E"), format="extxyz")
    config = tmp_path / "k.toml"
    config.write_text(CONFIG + '\n[keys]\nenergy = "REF_E"\nforces = "ref_forces"\n')
    code, out, err = run_cli(
        capsys, "fit", tmp_path / "k.xyz", "--config", config, "-o", tmp_path / "k.gapx"
    )
    assert code == 0, err
    assert "labelled frames: energy 4, forces 4, virial 0" in out
    # Without the [keys] table nothing is labelled: a clear error, not a silent empty fit.
    config.write_text(CONFIG)
    code, out, err = run_cli(
        capsys, "fit", tmp_path / "k.xyz", "--config", config, "-o", tmp_path / "k2.gapx"
    )
    assert code == 1
    assert "frame 0: no labels" in err
    assert "[keys]" in err


@pytest.mark.parametrize(
    ("config_text", "override", "message"),
    [
        ("[[terms]\ntype=", None, "cannot parse config file"),
        (CONFIG + "\n[fitt]\nx = 1\n", None, "unknown key 'fitt' in the config"),
        (CONFIG.replace("n_max = 3", "n_maxx = 3"), None, "unknown key 'n_maxx' in terms[1]"),
        (CONFIG.replace('"two_body"', '"four_body"'), None, "unknown type 'four_body'"),
        (CONFIG.replace("seed = 0", "sed = 0"), None, "unknown key 'sed' in [fit]"),
        ("[fit]\nseed = 0\n", None, "no [[terms]]"),
        (CONFIG, "soap.n_max", "expected key=value"),
        (CONFIG, "soap.bogus=1", "unknown key 'bogus' in terms[1]"),
        (CONFIG, "nothing.n_max=1", "unknown section 'nothing'"),
        (CONFIG, "terms.7.n_max=1", "terms.7 does not name one of the 2 terms"),
        (CONFIG, "soap.n_max=-2", "terms[1] (soap)"),
        (CONFIG, "fit.sigma_energy=-1", "[fit]: sigma_energy"),
        (CONFIG, "keys.energy=1", "[keys] energy must be a string"),
    ],
)
def test_fit_config_errors(workdir, capsys, tmp_path, config_text, override, message):
    config = tmp_path / "bad.toml"
    config.write_text(config_text)
    argv = ["fit", workdir / "train.xyz", "--config", config, "-o", tmp_path / "x.gapx"]
    if override:
        argv += ["--set", override]
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.gapx").exists()


def test_unknown_key_message_lists_valid_keys(workdir, capsys, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(CONFIG.replace("l_max = 2", "lmax = 2"))
    code, _, err = run_cli(capsys, "fit", workdir / "train.xyz", "--config", config)
    assert code == 1
    assert "valid keys:" in err
    assert "l_max" in err
    assert "n_sparse" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "missing.xyz", "--config", "{w}/fit.toml"], "file not found: missing.xyz"),
        (["fit", "{w}/train.xyz", "--config", "missing.toml"], "config file not found"),
        (["eval", "missing.gapx", "{w}/test.xyz"], "model file not found: missing.gapx"),
        (["eval", "{w}/m.gapx", "missing.xyz"], "file not found: missing.xyz"),
        (["info", "missing.gapx"], "model file not found"),
        (["info", "{w}/fit.toml"], "cannot load model"),
        (["md", "missing.gapx", "{w}/test.xyz"], "model file not found"),
        (["md", "{w}/m.gapx", "{w}/test.xyz", "--steps", "0"], "--steps must be at least 1"),
        (["md", "{w}/m.gapx", "{w}/test.xyz", "--timestep", "-1"], "--timestep must be"),
        (["md", "{w}/m.gapx", "missing.xyz"], "file not found: missing.xyz"),
        (["md", "{w}/m.gapx", "{w}/test.xyz", "--log-interval", "0"], "--log-interval must"),
        (["md", "{w}/m.gapx", "{w}/test.xyz", "--std-interval", "0"], "--std-interval must"),
        (["md", "{w}/m.gapx", "{w}/test.xyz", "--friction", "-1"], "--friction must be"),
        (["eval", "{w}/m.gapx", "{w}/nacl.xyz"], "are not in the model"),
    ],
)
def test_user_errors_exit_1(workdir, capsys, argv, message):
    code, _, err = run_cli(capsys, *[a.format(w=workdir) for a in argv])
    assert code == 1
    assert message in err
    assert "Traceback" not in err


def test_usage_errors_and_help(capsys):
    assert main(["fit"]) == 2
    assert "required" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert main([]) == 2
    for command in ("fit", "eval", "calibrate", "md", "info"):
        assert main([command, "--help"]) == 0
        assert f"usage: gapx {command}" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert gapx.__version__ in capsys.readouterr().out


def test_override_parsing():
    config = {"terms": [{"type": "two_body"}, {"type": "soap", "n_max": 4}], "fit": {}}
    apply_override(config, "soap.n_max=6")
    apply_override(config, "terms.0.cutoff=4.5")
    apply_override(config, 'fit.e0="average"')
    apply_override(config, "fit.config_type_sigma.liquid=[0.003, 0.15, 0.2]")
    apply_override(config, "keys.energy=DFT_energy")  # bare strings need no quotes
    assert config["terms"][1]["n_max"] == 6
    assert config["terms"][0]["cutoff"] == 4.5
    assert config["fit"]["e0"] == "average"
    assert config["fit"]["config_type_sigma"]["liquid"] == [0.003, 0.15, 0.2]
    assert config["keys"]["energy"] == "DFT_energy"


def test_console_script_subprocess(workdir):
    script = os.path.join(os.path.dirname(sys.executable), "gapx")
    assert os.path.isfile(script), "the gapx console script is not installed"
    done = subprocess.run(
        [script, "info", str(workdir / "m.gapx")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "term 1: soap" in done.stdout
    done = subprocess.run(
        [script, "eval", str(workdir / "nope.gapx"), "x.xyz"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "gapx eval: error: model file not found" in done.stderr
    assert "Traceback" not in done.stderr


def test_shipped_configs_are_valid():
    """The example in `gapx fit --help` and examples/ethanol.toml pass validation and build."""
    from gapx.cli.config import (
        EXAMPLE_CONFIG,
        build_model,
        read_config,
        tomllib,  # tomli on Python 3.10
        validate_config,
    )

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for config in (
        tomllib.loads(EXAMPLE_CONFIG),
        read_config(os.path.join(root, "examples", "ethanol.toml")),
    ):
        model = build_model(validate_config(config), ["H", "C", "O"])
        assert len(model.terms) == 2
    model = build_model(validate_config(tomllib.loads(EXAMPLE_CONFIG)), ["Si"])
    assert model.config_type_sigma == {"liquid": (0.003, 0.15, 0.2)}


def test_three_body_term_from_the_config():
    from gapx.cli.common import CLIError
    from gapx.cli.config import (
        build_model,
        tomllib,  # tomli on Python 3.10
        validate_config,
    )

    text = CONFIG + (
        '\n[[terms]]\ntype = "angle_3b"\ncutoff = 3.0\nZ = "O"\ntheta = [1.0, 0.5, 2.0]\n'
        "n_sparse = 15\n"
    )
    model = build_model(validate_config(tomllib.loads(text)), ["H", "O"])
    assert model.terms[2] == gapx.ThreeBody(cutoff=3.0, Z=8, theta=(1.0, 0.5, 2.0), n_sparse=15)
    with pytest.raises(CLIError, match=r"terms\[2\] \(angle_3b\): theta"):
        build_model(validate_config(tomllib.loads(text.replace("0.5, 2.0", "0.5"))), ["H"])


def test_ewald_baseline_from_the_config():
    from gapx.cli.common import CLIError
    from gapx.cli.config import (
        build_model,
        tomllib,  # tomli on Python 3.10
        validate_config,
    )

    text = CONFIG + '\n[baseline]\ntype = "ewald"\ncharges = {Na = 1.0, Cl = -1.0}\n'
    model = build_model(validate_config(tomllib.loads(text)), ["Na", "Cl"])
    assert isinstance(model.baseline, gapx.Ewald)
    with pytest.raises(CLIError, match="unknown key 'charge' in \\[baseline\\]"):
        validate_config(tomllib.loads(text.replace("charges =", "charge =")))
    with pytest.raises(CLIError, match='type = "ewald"'):
        validate_config(tomllib.loads(text.replace('"ewald"', '"coulomb"')))


def test_thread_limit():
    from threadpoolctl import threadpool_info

    from gapx.cli.common import CLIError, thread_limit

    def counts(api):
        return {d["num_threads"] for d in threadpool_info() if d["user_api"] == api}

    before = counts("blas")
    with thread_limit(None, n_atoms=9, single_blas=True):
        assert counts("blas") == {1}
        assert counts("openmp") in (set(), {1})  # small system: one OpenMP thread
    assert counts("blas") == before
    with thread_limit(1):
        assert counts("blas") == {1}
    with pytest.raises(CLIError, match="--threads must be at least 1"):
        thread_limit(0)


# Output paths are checked before any work: each case fails in milliseconds, prints one line and
# creates nothing.
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "{w}/train.xyz", "-c", "{w}/fit.toml", "-o", "{w}"], "-o {w}: is a directory"),
        (
            ["fit", "{w}/train.xyz", "-c", "{w}/fit.toml", "-o", "{w}/no/m.gapx"],
            "output folder does not exist",
        ),
        (
            ["fit", "{w}/train.xyz", "-c", "{w}/fit.toml", "-o", "{w}/fit.toml/m.gapx"],
            "fit.toml is not a folder",
        ),
        (["eval", "{w}/m.gapx", "{w}/test.xyz", "--json", "{w}"], "--json {w}: is a directory"),
        (["eval", "{w}/m.gapx", "{w}/test.xyz", "--plots", "{w}/fit.toml"], "is not a folder"),
        (
            ["eval", "{w}/m.gapx", "{w}/test.xyz", "--plots", "{w}/fit.toml/plots"],
            "which is not a folder",
        ),
        (["calibrate", "{w}/m.gapx", "{w}/test.xyz", "-o", "{w}"], "-o {w}: is a directory"),
        (
            ["calibrate", "{w}/m.gapx", "{w}/test.xyz", "-o", "{w}/c.gapx", "--json", "{w}"],
            "--json {w}: is a directory",
        ),
        (
            [
                "calibrate",
                "{w}/m.gapx",
                "{w}/test.xyz",
                "-o",
                "{w}/c.gapx",
                "--plots",
                "{w}/fit.toml",
            ],
            "--plots {w}/fit.toml: exists and is not a folder",
        ),  # fmt: skip
        (["select", "{w}/m.gapx", "{w}/test.xyz", "-n", "1", "-o", "{w}"], "is a directory"),
        (
            [
                "select",
                "{w}/m.gapx",
                "{w}/test.xyz",
                "-n",
                "1",
                "-o",
                "{w}/s.xyz",
                "--report",
                "{w}",
            ],
            "--report {w}: is a directory",
        ),  # fmt: skip
        (["md", "{w}/m.gapx", "{w}/test.xyz", "--trajectory", "{w}"], "--trajectory {w}: is a"),
        (
            [
                "md",
                "{w}/m.gapx",
                "{w}/test.xyz",
                "--log",
                "{w}/md2.log",
                "--trajectory",
                "{w}/no/md.traj",
            ],
            "--trajectory {w}/no/md.traj: output folder does not exist",
        ),  # fmt: skip
        (
            ["md", "{w}/m.gapx", "{w}/test.xyz", "--log", "{w}/same", "--trajectory", "{w}/same"],
            "--trajectory and --log name the same file",
        ),
    ],
)
def test_unwritable_outputs_are_refused_before_the_work(workdir, capsys, argv, message):
    before = set(os.listdir(workdir))
    code, out, err = run_cli(capsys, *[a.format(w=workdir) for a in argv])
    assert code == 1
    assert message.format(w=workdir) in err
    assert err.count("\n") == 1
    assert out == ""  # refused before reading anything
    assert set(os.listdir(workdir)) == before  # no empty log, no partial file


def test_unwritable_folder_is_refused(workdir, capsys, tmp_path, monkeypatch):
    import gapx.cli.common

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root writes anywhere: make the probe fail instead
            monkeypatch.setattr(
                gapx.cli.common.tempfile,
                "TemporaryFile",
                lambda dir: (_ for _ in ()).throw(PermissionError(13, "Permission denied")),
            )
        for argv in (
            ["fit", workdir / "train.xyz", "-c", workdir / "fit.toml", "-o", folder / "m.gapx"],
            ["eval", workdir / "m.gapx", workdir / "test.xyz", "--json", folder / "e.json"],
            ["md", workdir / "m.gapx", workdir / "test.xyz", "--trajectory", folder / "md.traj"],
        ):
            code, _, err = run_cli(capsys, *argv)
            assert code == 1
            assert f"cannot write into {folder} (Permission denied)" in err
    finally:
        folder.chmod(0o755)
    assert os.listdir(folder) == []


def test_md_outputs_are_opened_together(workdir, tmp_path):
    from gapx.calculator import GAPCalculator
    from gapx.md import run_md

    atoms = ase.io.read(workdir / "test.xyz", 0)
    calc = GAPCalculator(gapx.load(workdir / "m.gapx"))
    settings = {"steps": 2, "temperature": 100, "timestep": 1.0, "progress": False}
    with pytest.raises(FileNotFoundError):  # the trajectory cannot be opened: no empty log
        run_md(
            atoms, calc, trajectory=str(tmp_path / "no" / "t"), log=str(tmp_path / "a"), **settings
        )
    with pytest.raises(FileNotFoundError):  # the log cannot be: the trajectory is removed again
        run_md(
            atoms, calc, trajectory=str(tmp_path / "t"), log=str(tmp_path / "no" / "a"), **settings
        )
    nacl = bulk("NaCl", "rocksalt", a=5.64)
    with pytest.raises(ValueError, match="not in the model"):  # fails before opening anything
        run_md(nacl, calc, trajectory=str(tmp_path / "t"), log=str(tmp_path / "a"), **settings)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["fit", "{w}/train.xyz", "-c", "{w}/fit.toml", "--set", "soap.n_max=1000000"],
            "terms[1] (soap): n_max = 1000000 is too large",
        ),
        (["md", "{w}/m.gapx", "{w}/test.xyz", "--friction", "nan"], "--friction must be a"),
        (["md", "{w}/m.gapx", "{w}/test.xyz", "--friction", "inf"], "--friction must be a"),
        (
            ["md", "{w}/m.gapx", "{w}/test.xyz", "--index", "99"],
            "test.xyz: index 99 is out of range, the file has 6 frames",
        ),
        (["md", "{w}/m.gapx", "{w}/test.xyz", "--index", "-7"], "index -7 is out of range"),
        (["info", "{w}/m.gapx/x"], "model file not found"),
    ],
)
def test_bad_values_are_one_line_errors(workdir, capsys, argv, message):
    code, _, err = run_cli(capsys, *[a.format(w=workdir) for a in argv])
    assert code == 1
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (MemoryError(), "gapx info: error: out of memory\n"),
        (MemoryError("Unable to allocate 8 TiB"), "gapx info: error: out of memory: Unable to"),
        (OSError(28, "No space left on device"), "gapx info: error: [Errno 28] No space left"),
        (PermissionError(13, "Permission denied", "x"), "error: [Errno 13] Permission denied"),
    ],
)
def test_os_and_memory_errors_are_one_line_errors(capsys, monkeypatch, error, message):
    import gapx.cli.info

    def fail(args):
        raise error

    monkeypatch.setattr(gapx.cli.info, "run", fail)
    assert main(["info", "m.gapx"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) or message in err
    assert err.count("\n") == 1
