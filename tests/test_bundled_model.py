"""The shipped model: present, self-describing, and reproducing its recorded test metrics
through the real CLI (files on disk -> edge_infer -> onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_infer import Classifier
from edge_infer.image.decode import load_image
from edge_infer.metadata import ALL_PBS_CLASSES
from edge_infer.result import NOT_RECOGNISED, Status
from tests.conftest import ROOT, run_cli
from train.dataset import read_manifest, select

MODELS = ROOT / "models"


def test_bundled_model_loads_by_default():
    clf = Classifier()
    assert Path(clf.model.path).name == "all_pbs_cnn.onnx"
    assert clf.classes == tuple(c.name for c in ALL_PBS_CLASSES)
    assert clf.meta.guards.feature_threshold and 0 < clf.meta.uncertain_below < 1
    assert (MODELS / "all_pbs_cnn.onnx").stat().st_size < 6_000_000


def test_parity_report_passed():
    report = json.loads((MODELS / "all_pbs_cnn.parity.json").read_text())
    assert report["passed"] and report["images"] >= 300
    assert report["edge_path"]["argmax_agreement"] == 1.0


def test_cli_reproduces_recorded_test_accuracy(data):
    metrics = json.loads((MODELS / "run" / "metrics.json").read_text())
    test = select(read_manifest(), "test", metrics["split_column"])
    r = run_cli("classify", *(data / r.path for r in test), "--format", "jsonl", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == len(test) == metrics["test"]["n"]
    truth = {str(data / t.path): t.label for t in test}
    # the recorded accuracy is the network's argmax, whatever the guards say
    correct = sum(rec["raw_label"] == truth[rec["path"]] for rec in recs)
    assert correct / len(recs) == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)
    # the out-of-distribution guard stays quiet on clean in-distribution images
    flagged = [rec for rec in recs if rec["status"] == Status.OUT_OF_DISTRIBUTION.value]
    assert len(flagged) / len(recs) <= 0.03
    assert all(rec["label"] is None for rec in flagged)


def _ood_images(sample: Path) -> dict[str, np.ndarray]:
    img = load_image(sample)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + 45) % 180
    rng = np.random.default_rng(1)
    return {
        "hue_shift.png": cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR),
        "noise.png": rng.integers(0, 256, img.shape, dtype=np.uint8),
    }


def test_guard_thresholds_travel_in_the_model_and_the_reference_set_in_the_graph():
    import onnx
    from onnx import numpy_helper

    clf = Classifier()
    guards = json.loads((MODELS / "run" / "guards.json").read_text())
    # train.guard owns the thresholds; export copies them unchanged
    assert clf.meta.guards.image_stats["threshold"] == guards["image_stats"]["threshold"]
    assert clf.meta.guards.feature_threshold == guards["feature_threshold"]
    # the reference set is a constant of the graph, not metadata
    assert "reference" not in clf.meta.guards.image_stats
    reference = np.asarray(guards["image_stats"]["reference"], np.float32)
    graph = onnx.load(str(clf.model.path)).graph
    constants = [numpy_helper.to_array(t) for t in graph.initializer]
    constants += [
        numpy_helper.to_array(a.t)
        for n in graph.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value"
    ]
    assert any(
        c.size == reference.size
        and (
            np.allclose(c.reshape(reference.shape), reference)
            or np.allclose(c.reshape(reference.shape[::-1]).T, reference)
        )
        for c in constants
    )


def test_guard_in_api_cli_and_watcher(sample_images, tmp_path):
    clf = Classifier()
    clean = sample_images[2]
    assert not clf.predict(clean).out_of_distribution
    folder = tmp_path / "in"
    folder.mkdir()
    for name, img in _ood_images(clean).items():
        assert clf.predict(img).out_of_distribution, name
        ok, buf = cv2.imencode(".png", img)
        (folder / name).write_bytes(buf.tobytes())
    (folder / clean.name).write_bytes(clean.read_bytes())
    r = run_cli("classify", folder, "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    flags = {
        Path(x["path"]).name: x["status"] == "out_of_distribution"
        for x in map(json.loads, r.stdout.splitlines())
    }
    assert flags == {"hue_shift.png": True, "noise.png": True, clean.name: False}
    results = tmp_path / "r.jsonl"
    r = run_cli(
        "watch", folder, "--once", "--settle", "0", "--interval", "0.1", "--results", results
    )
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in results.read_text().splitlines()]
    assert {Path(x["path"]).name: x["status"] == "out_of_distribution" for x in recs} == flags
    assert all(
        x["label"] is None and x["verdict"] == NOT_RECOGNISED
        for x in recs
        if flags[Path(x["path"]).name]
    )


def test_golden_outputs_of_the_shipped_model(data):
    """A few real images and the outputs the shipped model gave for them when it was built: any
    change in decoding, resizing, colour order or the guards shows up here first."""
    golden = json.loads((ROOT / "tests" / "golden.json").read_text())
    clf = Classifier()
    assert clf.version == golden["model_version"], "new model: python -m export.golden"
    for g in golden["images"]:
        p = clf.predict(data / g["path"])
        assert p.raw_label == g["label"] and p.status.value == g["status"]
        for cls, prob in g["probabilities"].items():
            assert p.probabilities[cls] == pytest.approx(prob, abs=1e-4)
        assert p.ood_score == pytest.approx(g["ood_score"], rel=1e-4, abs=1e-2)
        assert p.image_score == pytest.approx(g["image_score"], rel=1e-4, abs=1e-3)


def test_site_reference_is_what_the_runtime_measures_on_the_training_images(data):
    """The bundled model's check-site reference equals the runtime's statistics of the
    training split, recomputed now (a changed statistic without a re-written reference would
    compare a lab against the wrong numbers)."""
    from edge_infer.site.stats import SITE_STAT_KEYS, reference_from, site_statistics

    meta = Classifier().meta
    records = select(read_manifest(), "train", "split")
    stats = np.array([site_statistics(load_image(data / r.path), meta.preprocess) for r in records])
    fresh = reference_from(stats)
    bundled = meta.site_reference
    assert bundled["n"] == fresh["n"] == len(records)
    for key in SITE_STAT_KEYS:
        assert np.allclose(
            bundled["stats"][key]["quantiles"], fresh["stats"][key]["quantiles"], atol=1e-4
        ), key
