"""The shipped model: present, self-describing, and reproducing its recorded test metrics
through the real CLI (files on disk -> edge_infer -> onnxruntime)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_infer import Classifier
from train.dataset import read_manifest, select

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def test_bundled_model_loads_by_default():
    clf = Classifier()
    assert Path(clf.info.path).name == "all_pbs_cnn.onnx"
    assert clf.classes == ("Benign", "Early", "Pre", "Pro")
    assert clf.info.ood_threshold and 0 < clf.info.uncertain_below < 1
    assert (MODELS / "all_pbs_cnn.onnx").stat().st_size < 6_000_000


def test_parity_report_passed():
    report = json.loads((MODELS / "all_pbs_cnn.parity.json").read_text())
    assert report["passed"] and report["images"] >= 300
    assert report["edge_path"]["argmax_agreement"] == 1.0


def test_cli_reproduces_recorded_test_accuracy(data):
    metrics = json.loads((MODELS / "run" / "metrics.json").read_text())
    test = select(read_manifest(), "test", metrics["split_column"])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_infer.cli",
            "classify",
            *(str(data / r.path) for r in test),
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == len(test) == metrics["test"]["n"]
    truth = {str(data / t.path): t.label for t in test}
    correct = sum(rec["label"] == truth[rec["path"]] for rec in recs)
    assert correct / len(recs) == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)
    # the out-of-distribution guard stays quiet on clean in-distribution images
    assert sum(rec["out_of_distribution"] for rec in recs) / len(recs) <= 0.03
