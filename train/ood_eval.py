"""`python -m train.ood_eval --model M`: how often the guard says "not recognised", per kind of
out-of-distribution image generated from the test split, and its false alarms on clean images.

The threshold was chosen on validation data only; nothing here feeds back into it. Needs only
the runtime (no TensorFlow).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge_infer import Classifier
from edge_infer.image.decode import load_image

from .dataset import default_data_root, read_manifest, select

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def hue_shift(deg: int) -> Transform:
    def f(img, rng):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(int) + deg // 2) % 180
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    return f


def background_colour(img: np.ndarray) -> np.ndarray:
    return np.median(img.reshape(-1, 3), axis=0).astype(np.uint8)


def zoom_out(img, rng):
    """x0.5 magnification: the image shrunk, the rest filled with a 2x2 tiling of it."""
    small = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return np.tile(small, (2, 2, 1))


def zoom_in(img, rng):
    """x2 magnification: the centre quarter enlarged."""
    h, w = img.shape[:2]
    crop = img[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_CUBIC)


def cells_removed(img, rng):
    """Every violet-magenta stained pixel (and a margin) painted with the background colour."""
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    mask = cv2.inRange(hsv, (110, 30, 30), (179, 255, 255))
    mask = cv2.dilate(mask, np.ones((7, 7), np.uint8))
    out = img.copy()
    out[mask > 0] = background_colour(img)
    return out


def noise(img, rng):
    return rng.integers(0, 256, img.shape, dtype=np.uint8)


def gradient(img, rng):
    h, w = img.shape[:2]
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w)[None, :, None]
    return np.broadcast_to(a + (b - a) * t, (h, w, 3)).astype(np.uint8)


def texture(img, rng):
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    f = rng.uniform(0.05, 0.4, 3)
    out = np.stack([127 + 120 * np.sin(f[i] * xx + f[(i + 1) % 3] * yy) for i in range(3)], -1)
    return out.astype(np.uint8)


#: kinds after which the image still shows the same cells (so the class is still known)
KEEP_CELLS = {
    "hue +40 deg",
    "red/blue swapped",
    "grayscale",
    "x0.5 magnification",
    "x2 magnification",
    "blur sigma 3",
    "defocus sigma 6",
}

KINDS: dict[str, Transform] = {
    "hue +40 deg": hue_shift(40),
    "hue +90 deg": hue_shift(90),
    "hue +180 deg": hue_shift(180),
    "colour inversion": lambda img, rng: 255 - img,
    "red/blue swapped": lambda img, rng: np.ascontiguousarray(img[..., ::-1]),
    "grayscale": lambda img, rng: cv2.cvtColor(
        cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR
    ),
    "x0.5 magnification": zoom_out,
    "x2 magnification": zoom_in,
    "blur sigma 3": lambda img, rng: cv2.GaussianBlur(img, (0, 0), 3),
    "defocus sigma 6": lambda img, rng: cv2.GaussianBlur(img, (0, 0), 6),
    "cells masked out": cells_removed,
    "noise": noise,
    "colour gradient": gradient,
    "sinusoid texture": texture,
}


def flagged(
    clf: Classifier, images: list[np.ndarray], truth: list[str] | None = None
) -> dict[str, float]:
    """Flag rates per guard; with the true classes (kinds that keep a cell), also whether what
    was served (status ok) was right: a guard should flag what makes the model wrong."""
    preds = clf.predict_arrays(images, [f"<{i}>" for i in range(len(images))])
    extra = {}
    if truth is not None:
        right = np.array([p.raw_label == t for p, t in zip(preds, truth, strict=True)])
        ok = np.array([p.status.value == "ok" for p in preds])
        extra = {
            "accuracy": float(right.mean()),
            "silent_errors": float((ok & ~right).mean()),
        }
    meta = clf.meta
    thr = meta.guards.feature_threshold
    spec = meta.preprocess
    image_threshold = (meta.guards.image_stats or {}).get("threshold")
    return {
        "flagged": float(np.mean([p.out_of_distribution for p in preds])),
        "flagged_by_features": float(np.mean([(p.ood_score or 0) > thr for p in preds])),
        "flagged_no_cell": float(
            np.mean([(p.cell_fraction or 0.0) < spec.min_cell_fraction for p in preds])
        ),
        "flagged_by_image_stats": float(
            np.mean([(p.image_score or 0) > image_threshold for p in preds])
        )
        if image_threshold is not None
        else 0.0,
        "uncertain": float(np.mean([p.uncertain for p in preds])),
        "called_malignant_unflagged": float(
            np.mean([p.label is not None and meta.is_malignant(p.label) for p in preds])
        ),
        **extra,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.ood_eval", description=__doc__)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--split-column", default="split")
    ap.add_argument("--limit", type=int, default=0, help="test images to use (0 = all)")
    ap.add_argument("--out", type=Path, default=Path("reports/ood_eval.json"))
    args = ap.parse_args(argv)
    clf = Classifier(args.model)
    test = select(read_manifest(), "test", args.split_column)
    if args.limit:
        test = test[:: max(1, len(test) // args.limit)][: args.limit]
    clean = [load_image(args.data / r.path) for r in test]
    rng = np.random.default_rng(0)
    truth = [r.label for r in test]
    results = {"clean test split (false alarms)": flagged(clf, clean, truth)}
    print(
        f"{'kind':34s} flagged  features  img-stats  no-cell  malignant&unflagged  "
        "accuracy  silent-errors",
        flush=True,
    )
    for name, fn in KINDS.items():
        keeps_cells = name in KEEP_CELLS
        results[name] = flagged(
            clf, [fn(img, rng) for img in clean], truth if keeps_cells else None
        )
    for name, r in results.items():
        print(
            f"{name:34s} {r['flagged']:7.3f}  {r['flagged_by_features']:8.3f}  "
            f"{r['flagged_by_image_stats']:9.3f}  "
            f"{r['flagged_no_cell']:7.3f}  {r['called_malignant_unflagged']:7.3f}"
            + (f"  {r['accuracy']:8.3f}  {r['silent_errors']:8.3f}" if "accuracy" in r else "")
        )
    summary = {
        "model": clf.version,
        "images_per_kind": len(clean),
        "ood_threshold": clf.meta.guards.feature_threshold,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
