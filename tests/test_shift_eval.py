"""`python -m train.shift_eval` on a handful of real images: every shift reported, with the plot."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_module
from train.shift_eval import SHIFTS


def test_shift_eval_runs_on_a_few_images(data, tmp_path):
    out = tmp_path / "shift.json"
    r = run_module("train.shift_eval", "--data", data, "--limit", "2", "--out", out, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["images"] == 8 and len(report["shifts"]) == len(SHIFTS) >= 20
    assert sum(not s["inside_ranges"] for s in report["shifts"]) >= 5
    for row in report["shifts"]:
        parts = row["served"] + row["silent_errors"] + row["flagged"] + row["uncertain"]
        assert parts == pytest.approx(1.0, abs=1e-9)  # every image counted once
        assert 0 <= row["silent_missed_malignant"] <= row["silent_errors"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stress = {s["shift"] for s in report["shifts"] if s["stress"]}
    assert {"magnification x0.5", "magnification x2.0", "lamp x1.3"} <= stress
    assert any(name.startswith("second lab") for name in stress)
    assert "stress_max_silent_missed_malignant" in report["summary"]


def test_exposure_in_linear_light_clips_like_a_sensor():
    import numpy as np

    from train.acquisition import exposure

    img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert np.array_equal(exposure(img, 1.0), img)
    bright = exposure(img, 1.5)
    assert bright[-1, -1, 0] == 255 and int(bright[8, 0, 0]) > int(img[8, 0, 0])
    # a lamp x1.5 in linear light burns out everything above ~84% of white
    assert (bright[img >= 222] == 255).all()
