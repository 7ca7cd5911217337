"""The README's first command: examples/quickstart.py (reduced with --small) runs end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_small(tmp_path):
    script = os.path.join(ROOT, "examples", "quickstart.py")
    done = subprocess.run(
        [sys.executable, script, "--small", "--outdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    # fit: data summary and the model file
    assert "data: 40 frames, 360 atoms (9 per frame)" in out
    assert "species: H 240, C 80, O 40" in out
    assert (tmp_path / "ethanol.gapx").is_file()
    # eval: the error table with finite numbers, and the parity plot
    assert re.search(r"^rmd17_ethanol\s+20\s", out, re.M), out  # the table's row
    errors = json.loads((tmp_path / "errors.json").read_text())["config_types"]["rmd17_ethanol"]
    assert errors["frames"] == 20
    energy_rmse = 1000 * errors["energy"]["rmse"]  # meV/atom, as the table prints it
    force_rmse = 1000 * errors["forces"]["rmse"]  # meV/Å
    # Real accuracy, even for the reduced fit: ethanol forces span about ±5 eV/Å (RMS about
    # 1 eV/Å); a working fit gets well below that.
    assert 0 < force_rmse < 500, f"force RMSE {force_rmse} meV/Å"
    assert 0 < energy_rmse < 50, f"energy RMSE {energy_rmse} meV/atom"
    png = tmp_path / "parity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # md: the summary and the trajectory
    assert "MD summary (nve, 9 atoms): 40 steps, 0.0200 ps simulated" in out
    assert "energy drift" in out
    assert (tmp_path / "md.traj").is_file()
    assert (tmp_path / "md.log").is_file()
    assert "quickstart finished" in out
