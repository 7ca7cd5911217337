"""Model files written by earlier gapx versions load and predict exactly as they did then."""

from __future__ import annotations

import os
import sys

import numpy as np

import gapx

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
sys.path.insert(0, DATA)
from make_model_v1 import structures  # noqa: E402

# Keys whose values the model's mean prediction defines (bit-identical across versions).
MEAN_KEYS = ("energy", "energies", "forces", "stress", "energy_longrange", "energy_shortrange")


def test_format_1_model_predicts_bit_identically():
    model = gapx.load(os.path.join(DATA, "model_v1.gapx"))
    stored = np.load(os.path.join(DATA, "model_v1_predictions.npz"))
    for n, atoms in enumerate(structures()):
        out = model.predict(atoms, std=True)
        keys = [k for k in MEAN_KEYS if f"{n}_{k}" in stored]
        assert "energy" in keys
        assert "forces" in keys
        for key in keys:
            np.testing.assert_array_equal(np.asarray(out[key]), stored[f"{n}_{key}"], err_msg=key)
    assert "1_stress" in stored.files
