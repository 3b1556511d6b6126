"""`python -m train.cam_eval --model M`: does the class activation map look at a cell?

For every test image: the grid cell where the model's CAM (an output of the graph) is highest,
and whether that cell of the image holds stained-cell pixels (edge_infer.image.segment's broad
stained mask, at the network's input size): the share "on a cell" is reported (the target is
at least 90%), and the misclassified test images are drawn with their CAM into
reports/cam_misclassified.png for the model card. Writes reports/cam_eval.json. Runtime only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from edge_infer import Classifier
from edge_infer.image.decode import load_image
from edge_infer.image.preprocess import resize_to_input
from edge_infer.image.segment import cam_overlay, stained_mask

from .dataset import CLASSES, default_data_root, read_manifest, select

REPORTS = Path(__file__).resolve().parent.parent / "reports"
#: a CAM grid cell is "on a cell" when at least this share of its pixels is stained
MIN_STAINED_SHARE = 0.05


def on_cell(cam: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the CAM's highest grid cell covers stained pixels of the (input-size) mask."""
    gh, gw = cam.shape
    i, j = np.unravel_index(int(np.argmax(cam)), cam.shape)
    h, w = mask.shape
    ys, xs = slice(i * h // gh, (i + 1) * h // gh), slice(j * w // gw, (j + 1) * w // gw)
    return float(mask[ys, xs].mean()) >= MIN_STAINED_SHARE


def montage(tiles: list[np.ndarray], captions: list[str], cols: int = 6) -> np.ndarray:
    size = 160
    rows = max(1, -(-len(tiles) // cols))
    out = np.full((rows * (size + 22), cols * size, 3), 255, np.uint8)
    for k, (tile, text) in enumerate(zip(tiles, captions, strict=True)):
        r, c = divmod(k, cols)
        y, x = r * (size + 22), c * size
        out[y : y + size, x : x + size] = cv2.resize(tile, (size, size))
        cv2.putText(out, text, (x + 3, y + size + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.cam_eval", description=__doc__)
    ap.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--split-column", default="split", choices=("split", "group_split"))
    ap.add_argument("--out", type=Path, default=REPORTS / "cam_eval.json")
    args = ap.parse_args(argv)
    clf = Classifier(args.model)
    records = select(read_manifest(), "test", args.split_column)
    images = [load_image(args.data / r.path) for r in records]
    preds = clf.predict_arrays(images, [r.path for r in records])
    if all(p.cam is None for p in preds):
        raise SystemExit(f"{clf.version}: the model has no CAM output (re-export it)")
    spec = clf.meta.preprocess
    hits, wrong_tiles, wrong_captions = [], [], []
    # an image the scale rule reads as tiles has no single map: left out, and counted
    tiled = sum(p.tiles is not None for p in preds)
    for img, rec, pred in zip(images, records, preds, strict=True):
        if pred.cam is None:
            continue
        small = resize_to_input(img, spec)
        hits.append(on_cell(pred.cam, stained_mask(small, spec)))
        if pred.raw_label != rec.label:
            wrong_tiles.append(cam_overlay(small, pred.cam))
            wrong_captions.append(f"{rec.label} called {pred.raw_label}")
    share = float(np.mean(hits))
    report = {
        "model": clf.version,
        "split": f"test ({args.split_column})",
        "images": len(records) - tiled,
        "read_as_tiles_left_out": tiled,
        "cam_grid": list(next(p.cam for p in preds if p.cam is not None).shape),
        "cam_max_on_a_stained_cell": share,
        "target": 0.90,
        "misclassified": len(wrong_tiles),
        "rule": f"the CAM's highest grid cell holds >= {MIN_STAINED_SHARE:.0%} stained pixels",
        "classes": list(CLASSES),
        "command": "python -m train.cam_eval " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    if wrong_tiles:
        cv2.imwrite(
            str(args.out.with_name("cam_misclassified.png")), montage(wrong_tiles, wrong_captions)
        )
    print(
        f"{clf.version}: CAM maximum on a stained cell for {share:.3f} of {len(hits)} test "
        f"images; {len(wrong_tiles)} misclassified drawn",
        file=sys.stderr,
    )
    return report


if __name__ == "__main__":
    main()
