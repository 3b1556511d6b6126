"""`python -m train.scale_fit --run RUN [--model M.onnx]`: the scale rule's reference and range.

The reference (`cell_diameter_share` of the preprocessing spec) is the median red-cell reading
(edge_infer.image.scale) of the run's training images as the camera saved them. With
`--model` (the run exported once without a scale rule, or with any), the range read whole
(`field_scale_min`, `field_scale_max`) is chosen on the validation images only: each pair of a
small grid is applied to the validation split at magnifications 0.35-3x (train.acquisition's
geometry, as the shift suite does), and the pair kept is the one with the fewest silent errors
at its worst point, then the most images served on average. Writes RUN/scale.json, which the
exporter puts into the model's preprocessing spec. Runtime only, plus the run's manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from edge_infer import Classifier
from edge_infer.image import scale
from edge_infer.image.decode import load_image
from edge_infer.image.preprocess import resize_to_input
from edge_infer.image.spec import PreprocessSpec
from edge_infer.result import Status

from . import acquisition as A
from .dataset import CLASSES, default_data_root, read_manifest, run_manifest, select

SCALE_FILE = "scale.json"
#: magnifications the range is judged at (1.0 is the clean split)
POINTS = (0.35, 0.5, 0.6, 0.8, 1.0, 1.25, 1.6, 2.0, 3.0)
GRID_MIN = (0.6, 0.7, 0.8)
GRID_MAX = (2.0, 2.5, 3.0)


def reading(bgr: np.ndarray, spec: PreprocessSpec) -> float:
    """The quick reading the runtime makes (edge_infer.image.scale.magnification), as a share
    of the side: the red-cell diameter at the network's input."""
    return scale.quick_reading(resize_to_input(bgr, spec))


def judge(clf: Classifier, images: list[np.ndarray], truth: np.ndarray) -> dict:
    """Served, refused, uncertain and silent errors of one spec over the validation images at
    each magnification point."""
    meta = clf.meta
    rows = {}
    for m in POINTS:
        shifted = images if m == 1.0 else [A.geometry(x, 0.0, m) for x in images]
        preds = clf.predict_arrays(shifted, [f"<{i}>" for i in range(len(shifted))])
        ok = np.array([p.status is Status.OK for p in preds])
        right = np.array([clf.classes.index(p.raw_label) for p in preds]) == truth
        malignant = np.array([meta.is_malignant(clf.classes[t]) for t in truth])
        benign = np.array([not meta.is_malignant(p.raw_label) for p in preds])
        rows[str(m)] = {
            "served": round(float((ok & right).mean()), 4),
            "not_recognised": round(
                float(np.mean([p.status is Status.OUT_OF_DISTRIBUTION for p in preds])), 4
            ),
            "tiled": round(float(np.mean([p.tiles is not None for p in preds])), 4),
            "silent_errors": round(float((ok & ~right).mean()), 4),
            "silent_missed_malignant": round(float((ok & benign & malignant).mean()), 4),
        }
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--model", type=Path, help="the run exported, to choose the range on val")
    ap.add_argument("--limit", type=int, default=0, help="images per class (0: all)")
    args = ap.parse_args(argv)
    metrics = json.loads((args.run / "metrics.json").read_text())
    spec = PreprocessSpec.from_json(metrics["preprocess"])
    records = read_manifest(run_manifest(metrics))

    def load(split: str) -> tuple[list[np.ndarray], np.ndarray]:
        rs = select(records, split, metrics["split_column"])
        if args.limit:
            rs = [r for c in CLASSES for r in [x for x in rs if x.label == c][: args.limit]]
        return [load_image(args.data / r.path) for r in rs], np.array(
            [CLASSES.index(r.label) for r in rs]
        )

    train_imgs, _ = load("train")
    train_read = np.array([reading(x, spec) for x in train_imgs])
    usable = train_read[np.isfinite(train_read) & (train_read > 0)]
    reference = float(np.median(usable))
    val_imgs, val_y = load("val")
    val_m = np.array([reading(x, spec) for x in val_imgs]) / reference
    out: dict = {
        "cell_diameter_share": round(reference, 5),
        "train": {
            "n": len(train_read),
            "unreadable": round(float(1.0 - len(usable) / len(train_read)), 4),
            "magnification_quantiles": {
                q: round(float(np.quantile(usable / reference, float(q))), 3)
                for q in ("0.005", "0.05", "0.5", "0.95", "0.995")
            },
        },
        "val_clean_magnification_quantiles": {
            q: round(float(np.nanquantile(val_m, float(q))), 3)
            for q in ("0.005", "0.05", "0.5", "0.95", "0.995")
        },
        "field_scale_min": PreprocessSpec.field_scale_min,
        "field_scale_max": PreprocessSpec.field_scale_max,
        "chosen_on": None,
        "command": "python -m train.scale_fit "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    }
    if args.model:
        clf = Classifier(args.model)
        base = clf.model.meta
        grid = []
        for lo in GRID_MIN:
            for hi in GRID_MAX:
                trial = dataclasses.replace(
                    spec, cell_diameter_share=reference, field_scale_min=lo, field_scale_max=hi
                )
                clf.model.meta = dataclasses.replace(base, preprocess=trial)
                rows = judge(clf, val_imgs, val_y)
                worst = max(r["silent_errors"] for r in rows.values())
                served = float(np.mean([r["served"] for r in rows.values()]))
                grid.append({"min": lo, "max": hi, "worst_silent": worst, "mean_served": served})
                grid[-1]["points"] = rows
                print(f"[scale] {lo}-{hi}: worst silent {worst:.4f}, served {served:.4f}")
        clf.model.meta = dataclasses.replace(base, preprocess=spec)  # without the rule
        without = judge(clf, val_imgs, val_y)
        best = min(grid, key=lambda g: (g["worst_silent"], -g["mean_served"]))
        out.update(
            field_scale_min=best["min"],
            field_scale_max=best["max"],
            chosen_on="val: fewest silent errors at the worst magnification, then most served",
            grid=grid,
            without_rule=without,
        )
    (args.run / SCALE_FILE).write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"[scale] reference {reference:.4f} of the side; range {out['field_scale_min']}-"
        f"{out['field_scale_max']} -> {args.run / SCALE_FILE}"
    )
    return out


if __name__ == "__main__":
    main()
