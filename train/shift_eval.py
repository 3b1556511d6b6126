"""`python -m train.shift_eval [--model M] [--split test]`: the model under acquisition shifts.

Each shift (train.acquisition: lamp, tone curve, white balance, stain, hue, focus, sensor noise,
JPEG, orientation, magnification, camera resolution) is applied to every image of the split, at
points inside the ranges the model is trained to handle and a few beyond them. Per shift: accuracy
of the network's answer, the share flagged "not recognised", uncertain, served (status ok and
right), silent errors (status ok and wrong) and silent missed malignant (status ok, called benign,
truly malignant). The stress sweep (magnification 0.5-2x, a brighter lamp, and several changes
at once as a second lab has them) is where a wrong answer must not happen, refused or not.
Writes reports/shift_eval.json and reports/shift_eval.png. Runtime only: no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_infer import Classifier
from edge_infer.image.decode import load_image
from edge_infer.result import Status

from . import acquisition as A
from .dataset import CLASSES, default_data_root, read_manifest, select

REPORTS = Path(__file__).resolve().parent.parent / "reports"


@dataclass(frozen=True)
class Shift:
    name: str
    family: str
    inside: bool  # within train.acquisition.RANGES (2.x's realistic ranges)
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    #: another objective or camera adapter, a brighter lamp, a second lab (several at once):
    #: where answering wrongly must not happen, whether the model answers or refuses
    stress: bool = False


def _s(name, family, inside, fn, stress: bool = False) -> Shift:
    return Shift(name, family, inside, fn, stress)


def _second_lab(lamp: float, db: float, stain: float, blur: float, scale: float, q: int):
    """Several acquisition differences at once, as a second lab's microscope has them."""

    def apply(x: np.ndarray, r: np.random.Generator) -> np.ndarray:
        x = A.geometry(x, 0.0, scale)
        x = A.saturation(x, stain)
        x = A.defocus(x, blur)
        x = A.white_balance(x, 0.0, db)
        x = A.exposure(x, lamp)
        return A.jpeg(x, q)

    return apply


SHIFTS: tuple[Shift, ...] = (
    _s("clean", "none", True, lambda x, r: x),
    _s("lamp x0.80", "brightness", True, lambda x, r: A.brightness(x, 0.80)),
    _s("lamp x0.85", "brightness", True, lambda x, r: A.brightness(x, 0.85)),
    _s("lamp x1.15", "brightness", True, lambda x, r: A.brightness(x, 1.15)),
    _s("lamp x1.25", "brightness", True, lambda x, r: A.brightness(x, 1.25)),
    _s("gamma 0.75", "gamma", True, lambda x, r: A.gamma(x, 0.75)),
    _s("gamma 1.3", "gamma", True, lambda x, r: A.gamma(x, 1.3)),
    _s("warm (b +10)", "white balance", True, lambda x, r: A.white_balance(x, 0, 10)),
    _s("cool (b -10)", "white balance", True, lambda x, r: A.white_balance(x, 0, -10)),
    _s("magenta (a +10)", "white balance", True, lambda x, r: A.white_balance(x, 10, 0)),
    _s("green (a -10)", "white balance", True, lambda x, r: A.white_balance(x, -10, 0)),
    _s("stain x0.75", "stain", True, lambda x, r: A.saturation(x, 0.75)),
    _s("stain x1.3", "stain", True, lambda x, r: A.saturation(x, 1.3)),
    _s("hue +6", "hue", True, lambda x, r: A.hue(x, 6)),
    _s("hue -6", "hue", True, lambda x, r: A.hue(x, -6)),
    _s("defocus 1 px", "focus", True, lambda x, r: A.defocus(x, 1.0)),
    _s("defocus 2 px", "focus", True, lambda x, r: A.defocus(x, 2.0)),
    _s("noise 4", "noise", True, lambda x, r: A.noise(x, 4.0, r)),
    _s("JPEG q40", "jpeg", True, lambda x, r: A.jpeg(x, 40)),
    _s("rotate 33 deg", "orientation", True, lambda x, r: A.geometry(x, 33.0)),
    _s("magnification x0.8", "magnification", True, lambda x, r: A.geometry(x, 0, 0.8)),
    _s("magnification x1.25", "magnification", True, lambda x, r: A.geometry(x, 0, 1.25)),
    _s("camera 1.5x pixels", "resolution", True, lambda x, r: A.resolution(x, 1.5)),
    _s("camera 2x pixels", "resolution", True, lambda x, r: A.resolution(x, 2.0)),
    _s("lamp x0.6", "brightness", False, lambda x, r: A.brightness(x, 0.6)),
    _s("lamp x1.5", "brightness", False, lambda x, r: A.brightness(x, 1.5)),
    _s("gamma 1.8", "gamma", False, lambda x, r: A.gamma(x, 1.8)),
    _s("warm (b +20)", "white balance", False, lambda x, r: A.white_balance(x, 0, 20)),
    _s("hue +15", "hue", False, lambda x, r: A.hue(x, 15)),
    _s("defocus 3.5 px", "focus", False, lambda x, r: A.defocus(x, 3.5)),
    _s("noise 12", "noise", False, lambda x, r: A.noise(x, 12.0, r)),
    _s("JPEG q15", "jpeg", False, lambda x, r: A.jpeg(x, 15)),
    _s("magnification x0.6", "magnification", False, lambda x, r: A.geometry(x, 0, 0.6), True),
    _s("magnification x1.6", "magnification", False, lambda x, r: A.geometry(x, 0, 1.6), True),
    _s("camera 0.6x pixels", "resolution", False, lambda x, r: A.resolution(x, 0.6)),
    # the stress sweep: magnification 0.5-2x, a brighter lamp, second labs
    _s("magnification x0.5", "magnification", False, lambda x, r: A.geometry(x, 0, 0.5), True),
    _s("magnification x2.0", "magnification", False, lambda x, r: A.geometry(x, 0, 2.0), True),
    _s("lamp x1.3", "brightness", False, lambda x, r: A.brightness(x, 1.3), True),
    _s("exposure x1.3 (linear)", "brightness", False, lambda x, r: A.exposure(x, 1.3), True),
    _s(
        "second lab A (brighter, warm, paler stain, soft, x0.8)",
        "combined",
        False,
        _second_lab(1.15, 8.0, 0.85, 1.0, 0.8, 70),
        True,
    ),
    _s(
        "second lab B (dimmer, cool, stronger stain, x1.25)",
        "combined",
        False,
        _second_lab(0.85, -8.0, 1.2, 0.5, 1.25, 60),
        True,
    ),
    _s(
        "second lab C (x0.6, brighter, warm, JPEG q50)",
        "combined",
        False,
        _second_lab(1.2, 6.0, 1.0, 0.0, 0.6, 50),
        True,
    ),
)


def evaluate(clf: Classifier, images: list[np.ndarray], truth: np.ndarray, shift: Shift) -> dict:
    rng = np.random.default_rng(7)
    shifted = [shift.apply(img, rng) for img in images]
    preds = clf.predict_arrays(shifted, [f"<{i}>" for i in range(len(shifted))])
    meta = clf.meta
    raw = np.array([clf.classes.index(p.raw_label) for p in preds])
    status = np.array([p.status.value for p in preds])
    ok = status == Status.OK.value
    right = raw == truth
    malignant = np.array([meta.is_malignant(clf.classes[t]) for t in truth])
    called_benign = np.array([not meta.is_malignant(p.raw_label) for p in preds])
    return {
        "shift": shift.name,
        "family": shift.family,
        "inside_ranges": shift.inside,
        "stress": shift.stress,
        "n": len(preds),
        "accuracy": float(right.mean()),
        "flagged": float((status == Status.OUT_OF_DISTRIBUTION.value).mean()),
        "uncertain": float((status == Status.UNCERTAIN.value).mean()),
        "served": float((ok & right).mean()),
        "silent_errors": float((ok & ~right).mean()),
        "silent_missed_malignant": float((ok & called_benign & malignant).mean()),
    }


def summary(rows: list[dict]) -> dict:
    inside = [r for r in rows if r["inside_ranges"] and r["shift"] != "clean"]
    stress = [r for r in rows if r.get("stress")]
    return {
        "inside_min_served": min(r["served"] for r in inside),
        "inside_mean_served": float(np.mean([r["served"] for r in inside])),
        "inside_max_silent_errors": max(r["silent_errors"] for r in inside),
        "all_max_silent_missed_malignant": max(r["silent_missed_malignant"] for r in rows),
        "stress_max_silent_missed_malignant": max(
            (r["silent_missed_malignant"] for r in stress), default=0.0
        ),
        "stress_max_silent_errors": max((r["silent_errors"] for r in stress), default=0.0),
        # the model's targets (a wrong answer under stress: refuse rather)
        "targets": {
            "inside_min_served": 0.90,
            "inside_mean_served": 0.95,
            "inside_max_silent_errors": 0.005,
            "stress_max_silent_missed_malignant": 0.005,
            "stress_max_silent_errors": 0.01,
        },
    }


def plot(rows: list[dict], title: str, path: Path) -> None:
    """Horizontal stacked bars per shift: served, uncertain, flagged, silent errors (OpenCV,
    so the runtime draws it without plotting libraries)."""
    row_h, left, width, top = 22, 230, 640, 60
    h = top + row_h * len(rows) + 60
    img = np.full((h, left + width + 30, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, title, (10, 25), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    colours = {  # BGR
        "served": (80, 160, 60),
        "uncertain": (60, 200, 240),
        "flagged": (170, 170, 170),
        "silent_errors": (40, 40, 210),
    }
    for i, (k, c) in enumerate(colours.items()):
        x = left + i * 160
        cv2.rectangle(img, (x, 38), (x + 14, 50), c, -1)
        cv2.putText(img, k.replace("_", " "), (x + 20, 49), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for j, r in enumerate(rows):
        y = top + j * row_h
        label = ("" if r["inside_ranges"] else "* ") + r["shift"]
        cv2.putText(img, label, (10, y + 15), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x = left
        for k, c in colours.items():
            w = int(round(r[k] * width))
            cv2.rectangle(img, (x, y + 3), (x + w, y + row_h - 3), c, -1)
            x += w
        cv2.putText(
            img,
            f"{r['served']:.2f}",
            (left + 4, y + 15),
            font,
            0.4,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    cv2.putText(
        img,
        "* beyond the trained ranges; uncertain and flagged hold right and wrong answers alike",
        (10, h - 20),
        font,
        0.45,
        (60, 60, 60),
        1,
        cv2.LINE_AA,
    )
    cv2.imwrite(str(path), img)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.shift_eval", description=__doc__)
    ap.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--split", default="test", choices=("val", "test"))
    ap.add_argument("--split-column", default="split", choices=("split", "group_split"))
    ap.add_argument("--limit", type=int, default=0, help="images per class (0: all)")
    ap.add_argument("--out", type=Path, default=REPORTS / "shift_eval.json")
    args = ap.parse_args(argv)
    clf = Classifier(args.model)
    records = select(read_manifest(), args.split, args.split_column)
    if args.limit:
        records = [r for c in CLASSES for r in [x for x in records if x.label == c][: args.limit]]
    images = [load_image(args.data / r.path) for r in records]
    truth = np.array([clf.classes.index(r.label) for r in records])
    rows, t0 = [], time.time()
    for i, shift in enumerate(SHIFTS):
        rows.append(evaluate(clf, images, truth, shift))
        r = rows[-1]
        print(
            f"[{i + 1:2d}/{len(SHIFTS)}] {r['shift']:<22} acc {r['accuracy']:.3f}  served "
            f"{r['served']:.3f}  flagged {r['flagged']:.3f}  uncertain {r['uncertain']:.3f}  "
            f"silent err {r['silent_errors']:.3f}  silent missed malignant "
            f"{r['silent_missed_malignant']:.3f}",
            file=sys.stderr,
            flush=True,
        )
    report = {
        "model": clf.version,
        "split": f"{args.split} ({args.split_column})",
        "images": len(images),
        "seconds": round(time.time() - t0, 1),
        "summary": summary(rows),
        "shifts": rows,
        "command": "python -m train.shift_eval " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    plot(
        rows, f"{clf.version} on {args.split} ({len(images)} images)", args.out.with_suffix(".png")
    )
    print(json.dumps(report["summary"], indent=2))
    return report


if __name__ == "__main__":
    main()
