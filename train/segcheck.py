"""`python -m train.segcheck --data DIR`: our segmentation against the authors' saved masks.

Comparison rule (fixed): the authors' Segmented/ images store HSV values written as if BGR on a
black background, so their mask is `channel 0 (their H) > 60`; JPEG noise and speckle are then
removed from both masks the same way: a 3x3 opening and dropping 8-connected components under
40 px (`edge_infer.image.segment.clean_mask`). IoU of two empty masks counts as 1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from edge_infer.image.decode import load_image
from edge_infer.image.segment import clean_mask, overlay, segment
from edge_infer.image.spec import PreprocessSpec

from .dataset import CLASSES, default_data_root, image_root

REFERENCE_H_MIN = 60
CLEAN_OPEN = 3
CLEAN_MIN_PX = 40


def reference_mask(segmented_bgr: np.ndarray) -> np.ndarray:
    return clean_mask(segmented_bgr[:, :, 0] > REFERENCE_H_MIN, CLEAN_OPEN, CLEAN_MIN_PX)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def segmented_path(root: Path, rel: str) -> Path:
    """The authors' segmented version of an original image (same class folder and name)."""
    p = Path(rel)
    return Path(root) / "Segmented" / p.parent.name / p.name


def compare(root: Path, rel_paths: list[str], spec: PreprocessSpec) -> list[float]:
    """Cleaned IoU per image (our mask also gets the same clean-up, idempotent for ours)."""
    out = []
    for rel in rel_paths:
        ours = clean_mask(segment(load_image(Path(root) / rel), spec), CLEAN_OPEN, CLEAN_MIN_PX)
        ref = reference_mask(load_image(segmented_path(root, rel)))
        out.append(iou(ours, ref))
    return out


def montage(
    root: Path,
    rel_paths: list[str],
    scores: list[float],
    spec: PreprocessSpec,
    out: Path,
    n: int = 12,
) -> None:
    """The n worst images: original | ours | the authors' reference, one row each."""
    worst = np.argsort(scores)[:n]
    rows = []
    for i in worst:
        rel = rel_paths[i]
        img = load_image(Path(root) / rel)
        ref = reference_mask(load_image(segmented_path(root, rel)))
        tiles = [img, overlay(img, segment(img, spec)), overlay(img, ref)]
        row = np.hstack([cv2.resize(t, (224, 224)) for t in tiles])
        cv2.putText(
            row,
            f"IoU {scores[i]:.2f} {Path(rel).name}",
            (4, 14),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
        rows.append(row)
    if rows:
        ok, buf = cv2.imencode(".png", np.vstack(rows))
        out.write_bytes(buf.tobytes())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.segcheck", description=__doc__)
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--sample", type=int, default=0, help="images per class (0 = all)")
    ap.add_argument("--montage", type=Path, default=Path("reports/segmentation_worst.png"))
    ap.add_argument("--json", type=Path, default=Path("reports/segcheck.json"))
    args = ap.parse_args(argv)
    spec = PreprocessSpec()
    base = image_root(args.data)
    per_class: dict[str, list[float]] = {}
    all_paths, all_scores = [], []
    for c in CLASSES:
        files = sorted((base / c).glob("*.jpg"))
        if args.sample:
            files = files[:: max(1, len(files) // args.sample)][: args.sample]
        rel = [f.relative_to(args.data).as_posix() for f in files]
        per_class[c] = compare(args.data, rel, spec)
        all_paths += rel
        all_scores += per_class[c]
        print(f"{c:7s} n={len(rel):4d} mean IoU {np.mean(per_class[c]):.4f}", flush=True)
    s = np.array(all_scores)
    summary = {
        "images": int(len(s)),
        "mean_iou": float(s.mean()),
        "median_iou": float(np.median(s)),
        "share_below_0_5": float((s < 0.5).mean()),
        "per_class_mean_iou": {c: float(np.mean(v)) for c, v in per_class.items()},
        "spec": json.loads(spec.to_json()),
        "rule": __doc__.split("\n\n")[1].replace("\n", " "),
    }
    print(
        f"all     n={len(s)} mean {s.mean():.4f} median {np.median(s):.4f} "
        f"below 0.5: {(s < 0.5).mean() * 100:.1f}%"
    )
    args.montage.parent.mkdir(parents=True, exist_ok=True)
    montage(args.data, all_paths, all_scores, spec, args.montage)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2))
    print(f"worst cases -> {args.montage}; summary -> {args.json}")
    return summary


if __name__ == "__main__":
    main()
