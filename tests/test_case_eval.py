"""`python -m train.case_eval` runs on the real pseudo-patient groups with the bundled model."""

from __future__ import annotations

import json

from tests.conftest import run_module


def test_case_eval_reports_figures_with_intervals(data, tmp_path):
    out = tmp_path / "case_eval.json"
    r = run_module("train.case_eval", "--data", data, "--out", out, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    test = report["test"]
    assert test["cases"] >= 10
    for key in ("case_accuracy", "malignant_case_sensitivity", "left_for_review"):
        lo, hi = test[key]["ci95"]
        assert 0 <= lo <= test[key]["value"] <= hi <= 1
    assert set(report["test_images_per_case"]) == {"1", "3", "5", "10"}
    assert len(report["test_under_shift"]) == 2
    assert report["validation"]["grid"]
