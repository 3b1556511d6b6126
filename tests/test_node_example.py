"""examples/node: a Node.js program (onnxruntime-node) classifies with the bundled model file
alone and agrees with `edge-infer classify` on real test images, out-of-distribution images
and images at other scales (a 5 MP frame read as tiles, fields zoomed out, a close-up refused):
every plan, label, status and reason equal, each tile's box and verdict equal, probabilities
within 1e-4.

Mostly PNG files; a few test JPEGs as saved, which both decode with libjpeg-turbo (OpenCV's;
MozJPEG's decoder in WebAssembly in the example), so both see the same pixels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import BUNDLED, ROOT, run_cli
from train.dataset import read_manifest, select
from train.ood_eval import KINDS

EXAMPLE = ROOT / "examples" / "node"
NODE = shutil.which("node")
OOD_KINDS = (
    "hue +90 deg",
    "colour inversion",
    "red/blue swapped",
    "grayscale",
    "x0.5 magnification",
    "x2 magnification",
    "defocus sigma 6",
    "cells masked out",
    "colour gradient",
    "sinusoid texture",
)


def node_ready() -> None:
    if NODE and (EXAMPLE / "node_modules" / "onnxruntime-node").is_dir():
        return
    msg = "node or examples/node/node_modules missing (npm ci --ignore-scripts in examples/node)"
    if os.environ.get("CI"):
        pytest.fail(msg + "; .ci/run installs them")
    pytest.skip(msg)


@pytest.mark.skipif(not BUNDLED.exists(), reason="needs the bundled model")
def test_node_program_agrees_with_the_python_cli(tmp_path, data):
    node_ready()
    test = select(read_manifest(ROOT / "splits" / "manifest.csv"), "test")
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    real = [
        r for c in ("Benign", "Early", "Pre", "Pro") for r in [x for x in test if x.label == c][:10]
    ]
    for r in real:
        cv2.imwrite(str(folder / f"{Path(r.path).stem}.png"), cv2.imread(str(data / r.path)))
    for i, kind in enumerate(OOD_KINDS):
        src = cv2.imread(str(data / real[i * 4].path))
        cv2.imwrite(str(folder / f"ood-{i:02d}.png"), KINDS[kind](src, rng))
    # other scales (edge_infer.image.scale): a 5 MP frame of 36 fields, a 3 x 3 mosaic, a
    # close-up of part of one field
    pro = [cv2.imread(str(data / r.path)) for r in [x for x in test if x.label == "Pro"][:36]]
    six = np.vstack([np.hstack(pro[r * 6 : (r + 1) * 6]) for r in range(6)])
    frame = cv2.resize(six, (2592, 1944), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(folder / "scale-frame-5mp.png"), frame)
    cv2.imwrite(str(folder / "scale-mosaic.png"), six[: 3 * 224, : 3 * 224])
    close = cv2.resize(pro[1][80:130, 80:130], (600, 600), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(folder / "scale-close-up.png"), close)
    jpegs = [x for x in test if x.label == "Benign"][10:16] + [x for x in test if x.label == "Pre"][
        10:16
    ]
    for r in jpegs:
        shutil.copy(data / r.path, folder / f"jpeg-{Path(r.path).name}")
    files = sorted(str(p) for p in folder.iterdir())
    assert len(files) == 65

    py = run_cli("classify", *files, "--format", "jsonl")
    assert py.returncode == 0, py.stderr
    want = {rec["path"]: rec for rec in map(json.loads, py.stdout.splitlines())}
    js = subprocess.run(
        [NODE, str(EXAMPLE / "classify.mjs"), *files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert js.returncode == 0, js.stderr
    got = {rec["path"]: rec for rec in map(json.loads, js.stdout.splitlines())}
    assert set(got) == set(want)
    statuses, plans = set(), set()
    for path, w in want.items():
        g = got[path]
        assert (g["status"], g["label"], g["raw_label"], g["reason"]) == (
            w["status"],
            w["label"],
            w["raw_label"],
            w["reason"],
        ), path
        for cls, p in w["probabilities"].items():
            assert abs(g["probabilities"][cls] - p) <= 1e-4, (path, cls)
        # scores in float32 at batch 1 (node) vs batch 8 (python): compared on the threshold scale
        assert abs(g["image_score"] - w["image_score"]) <= 1e-3 * max(1.0, w["image_score"])
        # the scale rule: the same plan, the same reading, the same tiles
        assert ("magnification" in g) == ("magnification" in w), path
        if w.get("magnification") is not None:
            assert abs(g["magnification"] - w["magnification"]) <= 2e-3, path
        assert [(t["box"], t["verdict"], t["reason"]) for t in g.get("tiles", [])] == [
            (t["box"], t["verdict"], t["reason"]) for t in w.get("tiles", [])
        ], path
        statuses.add(w["status"])
        plans.add("tiles" if "tiles" in w else w["reason"] if "magnification" in w else "whole")
    assert "ok" in statuses and "out_of_distribution" in statuses  # both kinds were exercised
    assert plans == {"whole", "tiles", "magnification"}, plans  # and every plan of the scale rule
    assert "tiles" in want[str(folder / "scale-frame-5mp.png")]
    assert want[str(folder / "scale-close-up.png")]["reason"] == "magnification"
