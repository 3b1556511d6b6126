"""`python -m train.shift_eval` on a handful of real images: every shift reported, with the plot."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_module
from train.shift_eval import SHIFTS

pytestmark = pytest.mark.slow


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
