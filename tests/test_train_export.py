"""A real (tiny) training run and export: files written, pipeline parity, ONNX metadata."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from edge_infer import Classifier, ModelError
from edge_infer.image.decode import load_image
from edge_infer.image.preprocess import dihedral, prepare
from edge_infer.image.spec import PreprocessSpec
from edge_infer.metadata import (
    ALL_PBS_CLASSES,
    CAM,
    GRAPH_OUTPUTS,
    METADATA_DIGEST,
    STATUS_CODE,
    ModelMetadata,
)
from edge_infer.result import STATUS_CODES, Status
from tests.conftest import ENV, ROOT, train_tiny

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_training_run_writes_everything(tiny_run):
    for name in (
        "model.keras",
        "history.csv",
        "curves.png",
        "confusion_matrix.png",
        "metrics.json",
        "config.json",
        "ood_stats.npz",
        "guards.json",
    ):
        assert (tiny_run / name).stat().st_size > 0, name
    for png in ("curves.png", "confusion_matrix.png"):
        assert (tiny_run / png).read_bytes()[:8] == PNG_MAGIC
    m = json.loads((tiny_run / "metrics.json").read_text())
    cm = np.array(m["test"]["confusion_matrix"])
    assert cm.sum() == m["test"]["n"] == 48
    assert 0.0 <= m["test"]["accuracy"] <= 1.0
    assert m["calibration"]["temperature"] > 0
    assert m["model"]["parameters"] > 0 and len(m["manifest_sha256"]) == 64
    assert set(m["versions"]) >= {"tensorflow", "keras", "numpy"}
    with open(tiny_run / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == m["epochs_run"] == 2


def test_keras_probabilities_sum_to_one(tiny_run, sample_images):
    import keras

    model = keras.models.load_model(tiny_run / "model.keras")
    x = np.stack([prepare(load_image(p)) for p in sample_images])
    p = np.asarray(model(x, training=False))
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_pipeline_tensors_equal_edge_preprocessing_bit_for_bit(sample_images):
    from train.pipeline import make_dataset

    spec = PreprocessSpec()
    ds = make_dataset(sample_images, [0] * len(sample_images), spec, 4, training=False)
    got = np.concatenate([x.numpy() for x, _ in ds])
    want = np.stack([prepare(load_image(p), spec) for p in sample_images])
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_tf_augmentations_are_the_8_dihedral_transforms():
    import tensorflow as tf

    from train.pipeline import dihedral_tf

    x = np.random.default_rng(0).random((6, 6, 3)).astype(np.float32)
    tf_views = [dihedral_tf(tf.constant(x), tf.constant(k)).numpy() for k in range(8)]
    assert len({v.tobytes() for v in tf_views}) == 8
    for k in range(8):
        assert np.array_equal(tf_views[k], dihedral(x, k))


def test_export_parity_report_and_metadata(tiny_onnx):
    report = json.loads(tiny_onnx.with_suffix(".parity.json").read_text())
    assert report["passed"] and report["images"] == 48
    assert report["conversion"]["max_abs_diff"] <= 1e-4
    assert report["edge_path"]["argmax_agreement"] == 1.0
    proto = onnx.load(str(tiny_onnx))
    meta = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    assert meta.classes == ALL_PBS_CLASSES
    assert meta.input.layout == "NHWC" and meta.version == "tiny-test"
    # the run's spec, with the scale rule's reference train.scale_fit fitted on its images
    scale_rule = json.loads((tiny_onnx.parent / "tiny" / "scale.json").read_text())
    assert 0.05 < scale_rule["cell_diameter_share"] < 0.2
    assert meta.preprocess == dataclasses.replace(
        PreprocessSpec(), cell_diameter_share=scale_rule["cell_diameter_share"]
    )
    # train.guard wrote the thresholds once; export copied them unchanged
    guards = json.loads((tiny_onnx.parent / "tiny" / "guards.json").read_text())
    assert meta.guards.feature_threshold == guards["feature_threshold"] > 0
    # the image guard's threshold and description travel as metadata; its reference set,
    # whitening and mean are constants of the graph, not metadata
    bulky = ("reference", "whiten", "mean")
    assert meta.guards.image_stats == {
        k: v for k, v in guards["image_stats"].items() if k not in bulky
    }
    assert [o.name for o in proto.graph.output] == [*GRAPH_OUTPUTS, CAM, METADATA_DIGEST]
    assert meta.guards.codes[STATUS_CODE] == [s.value for s in STATUS_CODES]


def test_edge_infer_loads_the_export(tiny_onnx, sample_images):
    clf = Classifier(tiny_onnx)
    assert clf.version == "tiny-test" and clf.classes == tuple(c.name for c in ALL_PBS_CLASSES)
    p = clf.predict(sample_images[0])
    assert abs(sum(p.probabilities.values()) - 1) < 1e-5
    assert p.raw_label in clf.classes and p.status in set(Status) - {Status.ERROR}


def test_bad_model_files_are_refused_clearly(tmp_path, tiny_onnx):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(tiny_onnx.read_bytes()[:5000])
    text = tmp_path / "notes.onnx"
    text.write_text("hello, I am not a model\n")
    proto = onnx.load(str(tiny_onnx))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    cases = {
        truncated: "not a loadable ONNX model",
        text: "not a loadable ONNX model",
        bare: "no edge_infer metadata",
        tmp_path / "missing.onnx": "not found",
    }
    for path, reason in cases.items():
        with pytest.raises(ModelError) as exc:
            Classifier(path)
        assert str(exc.value).startswith(str(path)) and reason in str(exc.value)
        assert "\n" not in str(exc.value)


def test_mirrored_strategy_trains_on_one_cpu_replica(data, tmp_path):
    out = tmp_path / "mirrored"
    train_tiny(data, out, "--strategy", "mirrored", epochs=1, limit=4, batch=8)
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["strategy"] == "mirrored" and m["test"]["n"] == 16


def test_training_is_deterministic_given_a_seed(data, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        train_tiny(data, out, epochs=2, limit=4, batch=8, seed=5)
        outs.append(out)
    assert (outs[0] / "history.csv").read_text() == (outs[1] / "history.csv").read_text()
    a, b = (json.loads((o / "metrics.json").read_text()) for o in outs)
    assert a["test"] == b["test"] and a["calibration"] == b["calibration"]


def test_acquisition_recipe_trains_and_fits_the_guards_on_shifted_views(data, tmp_path):
    out = tmp_path / "acq"
    train_tiny(data, out, "--acquisition", "--normalise", "white_patch", epochs=1, limit=4, batch=8)
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["acquisition"] and m["preprocess"]["normalise"] == "white_patch"
    guards = json.loads((out / "guards.json").read_text())
    assert guards["acquisition_views"] == 2 and "acquisition-shifted" in guards["feature_rule"]
    assert len(guards["image_stats"]["stats"]) == len(guards["image_stats"]["median"]) == 10


TINY = ("--width", "0.25", "--limit", "4", "--batch-size", "8", "--seed", "3")


def test_a_consistency_run_killed_mid_training_resumes_and_saves_the_network(data, tmp_path):
    """`--consistency` (train.consistency) on real images: killed with SIGKILL after its first
    epoch, the same command resumes from the checkpoint instead of starting again, and the run
    saves the functional network itself (what export reads), not the trainer around it."""
    import keras

    from train.model import LOGITS_LAYER

    out = tmp_path / "cons"
    cmd = [
        sys.executable, "-m", "train", "--data", str(data), "--out", str(out), "--epochs", "3",
        "--acquisition", "--consistency", "1", *TINY,
    ]  # fmt: skip
    first = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    for line in first.stdout:
        if line.startswith("epoch   1/3"):
            first.kill()
            break
    first.wait(timeout=60)
    first.stdout.close()
    assert (out / "backup").is_dir(), "no checkpoint after the first epoch"
    again = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    epochs = [ln.split()[1] for ln in again.stdout.splitlines() if ln.startswith("epoch ")]
    assert epochs and epochs[0] != "1/3" and epochs[-1] == "3/3", epochs
    with open(out / "epochs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted({int(r["epoch"]) for r in rows}) == [0, 1, 2] and "consistency" in rows[0]
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["consistency"] == 1.0 and m["recipe"]["consistency"] == 1.0
    assert m["manifest"] == "splits/manifest.csv"  # not the build machine's folder
    net = keras.models.load_model(out / "model.keras")
    assert isinstance(net, keras.Model) and net.get_layer(LOGITS_LAYER) is not None
    assert type(net).__name__ == "Functional" and not (out / "backup").exists()


def test_the_graphs_decision_equals_decide_on_every_combination():
    """train.graph_guards.decision (what the exported graph computes) and result.decide (the
    runtime's TTA path) come from one table; checked on all 16 combinations."""
    import itertools

    import tensorflow as tf

    from edge_infer.result import REASON_CODES, decide
    from train.graph_guards import decision

    combos = list(itertools.product((False, True), repeat=4))
    cols = [tf.constant([c[i] for c in combos]) for i in range(4)]
    status, reason = decision(*cols)
    for i, (no_cell, image, features, low) in enumerate(combos):
        probs = [0.5, 0.5] if low else [1.0, 0.0]
        _, s, r = decide(probs, 0.9, no_cell, image, features)
        assert STATUS_CODES[int(status[i])] is s and REASON_CODES[int(reason[i])] is r


def test_the_graph_carries_a_class_activation_map_equal_to_keras(tiny_run, tiny_onnx, data):
    """The CAM output: one h x w map per image in [0, 1] with its maximum at 1, the same
    in onnxruntime as in the Keras export model, and handed to the runtime's predictions."""
    import onnxruntime as ort

    from edge_infer.metadata import CAM
    from export.onnx_export import build_export_model

    export_model, _ = build_export_model(tiny_run)
    spec = Classifier(tiny_onnx).meta.preprocess
    paths = sorted((data / "Original").glob("*/*.jpg"))[::400][:6]
    x = np.stack([prepare(load_image(p), spec) for p in paths])
    keras_cam = np.asarray(export_model.predict(x, verbose=0)[-1])
    session = ort.InferenceSession(str(tiny_onnx))
    (onnx_cam,) = session.run([CAM], {"image": x})
    assert onnx_cam.shape == keras_cam.shape and onnx_cam.ndim == 3
    assert onnx_cam.shape[1] == onnx_cam.shape[2] >= 2
    assert np.abs(onnx_cam - keras_cam).max() < 1e-4
    assert onnx_cam.min() >= 0 and np.all(np.isclose(onnx_cam.max(axis=(1, 2)), 1, atol=1e-3))
    preds = Classifier(tiny_onnx).predict_batch(paths)
    assert all(p.cam is not None and p.cam.shape == onnx_cam.shape[1:] for p in preds)


def test_a_class_threshold_is_applied_by_the_graph(tiny_run, data, tmp_path):
    """With a stricter Benign threshold in the run, the graph's status equals decide() with
    the per-class thresholds, in Keras and after conversion to ONNX."""
    import shutil

    import onnxruntime as ort

    from edge_infer.result import REASON_CODES, decide
    from export.onnx_export import build_export_model, convert

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["uncertainty"]["threshold"] = 0.3
    metrics["uncertainty"]["by_class"] = {"Benign": 0.6}
    (run / "metrics.json").write_text(json.dumps(metrics))
    model, _ = build_export_model(run)
    spec = PreprocessSpec.from_json(metrics["preprocess"])
    paths = sorted((data / "Original").glob("*/*.jpg"))[::150][:20]
    x = np.stack([prepare(load_image(p), spec) for p in paths])
    outs = model.predict(x, verbose=0)
    proto = convert(model, spec.input_size)
    onnx_outs = ort.InferenceSession(proto.SerializeToString()).run(None, {"image": x})
    thresholds = [0.6 if c == "Benign" else 0.3 for c in metrics["classes"]]
    probs, ood, _, image_score, cells, status, reason = outs[:7]
    assert np.array_equal(np.asarray(onnx_outs[5]), np.asarray(status))
    from edge_infer.result import Reason

    compared = 0
    for i in range(len(x)):
        if REASON_CODES[int(reason[i])] in (Reason.IMAGE, Reason.FEATURES):
            continue  # a guard (not recomputed here) refused it first
        no_cell = float(cells[i]) < spec.min_cell_fraction
        _, s, r = decide([float(v) for v in probs[i]], thresholds, no_cell, False, False)
        assert (STATUS_CODES[int(status[i])], REASON_CODES[int(reason[i])]) == (s, r)
        compared += 1
    assert compared >= 5


def test_the_cell_checks_bound_chosen_on_validation_goes_into_the_graph_and_the_spec(
    tiny_run, tiny_onnx, data, tmp_path
):
    """`train.cell_check_sweep` on a real (tiny) export writes RUN/cell_check.json with a
    bound from its candidates; exported again, the graph's stained-cell share is computed at
    that bound (pale violet pixels count at 30, not at 50) and the metadata's spec says it."""
    import shutil

    from export.onnx_export import build_export_model, metadata_for
    from train.cell_check_sweep import CANDIDATES
    from train.cell_check_sweep import main as sweep

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    report = sweep(["--model", str(tiny_onnx), "--run", str(run), "--data", str(data),
                    "--limit", "12"])  # fmt: skip
    assert report["cell_sat_min"] in CANDIDATES and report["chosen_on"] == "val"
    assert set(report["sets"]) >= {"clean", "lamp x1.25", "cells masked out"}
    assert (run / "reports" / "cell_check_sweep.json").exists()
    (run / "cell_check.json").write_text(json.dumps({"cell_sat_min": 30, "chosen_on": "val"}))
    model, metrics = build_export_model(run)
    assert metrics["preprocess"]["cell_sat_min"] == 30
    guards = json.loads((run / "guards.json").read_text())
    meta = metadata_for(metrics, "t", 0.9, guards, [])
    assert meta.preprocess.cell_sat_min == 30
    # a pale violet field: RGB (200, 170, 230) has HSV saturation 255 * 60 / 230 = 66.5 ...
    # and (220, 200, 240) 42.5: a stained cell at 30, none at 50
    spec = PreprocessSpec.from_json(metrics["preprocess"])
    x = np.zeros((2, spec.input_size, spec.input_size, 3), np.float32)
    x[0] = np.array([200, 170, 230]) / 255.0
    x[1] = np.array([220, 200, 240]) / 255.0
    cells = np.asarray(model.predict(x, verbose=0)[4]).reshape(-1)
    assert cells[0] > 0.9 and cells[1] > 0.9
    default, _ = build_export_model(tiny_run)
    cells = np.asarray(default.predict(x, verbose=0)[4]).reshape(-1)
    assert cells[0] > 0.9 and cells[1] < 0.01


def test_the_metadata_names_no_folder_of_the_build_machine() -> None:
    from export.onnx_export import PROJECT_ROOT, portable_command

    cmd = f"python -m train --recipe recipes/r.toml --out {PROJECT_ROOT}/runs/x --data /srv/data"
    got = portable_command(cmd)
    assert got.startswith("python -m train --recipe recipes/r.toml --out runs/x --data ")
    assert str(PROJECT_ROOT) not in got and " /" not in got
