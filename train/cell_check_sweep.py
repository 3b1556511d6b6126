"""`python -m train.cell_check_sweep --model M --run RUN`: the stained-cell check's saturation
bound, chosen on validation; writes RUN/cell_check.json, which export puts in the spec.

Why: under a brighter 8-bit lamp the pale slides' stain washes out. With the bound the check
was given at 50 (0-255 HSV saturation), 47 of 439 validation images at lamp x1.25 (all Pro-B)
have under 0.2% stained pixels left and are refused as "no stained cell" -- an image with a
blast in it, refused for the wrong reason. A lower bound keeps them, but the check is also what
refuses an image with no white cell at all, so the candidates are judged on both.

For each candidate: the whole runtime's decision (`edge_infer.result.decide`, as the graph
makes it) with the cell fraction recomputed at that bound (`train.graph_guards.cell_fraction`)
and everything else the exported model's own, on the clean validation images, the lamp shifts
of the shift suite (8-bit x1.15, x1.25, x1.3; linear light x1.3), train.guard's two
acquisition views per image, and the validation images with their stained cells painted over
(`train.ood_eval`'s "cells masked out": red cells and plasma only). Images read as tiles or
refused for their magnification keep their answer. The rule: the bound that serves the most
(status ok and right) over the lamp shifts, among those that (a) answer none of the cell-free
images, (b) keep silent errors at most 0.5% (or at the current bound's, if higher) and silently
missed malignant at most the current bound's in every set, (c) refuse no more clean images;
ties go to the higher bound.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_infer import Classifier
from edge_infer.classifier import decide_as_graph
from edge_infer.image.decode import load_image
from edge_infer.image.preprocess import prepare
from edge_infer.result import Prediction, Reason, Status

from . import acquisition as A
from .dataset import default_data_root, read_manifest, run_manifest, select

CELL_CHECK_FILE = "cell_check.json"
CANDIDATES = (50, 45, 40, 35, 30, 25, 20)
LAMPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "lamp x1.15": lambda x: A.brightness(x, 1.15),
    "lamp x1.25": lambda x: A.brightness(x, 1.25),
    "lamp x1.3": lambda x: A.brightness(x, 1.3),
    "exposure x1.3 (linear)": lambda x: A.exposure(x, 1.3),
}
CELL_FREE = "cells masked out"
MAX_SILENT = 0.005


def read_cell_check(run: Path) -> dict | None:
    """The run's chosen bound (RUN/cell_check.json) if it was swept, for the exporter."""
    path = run / CELL_CHECK_FILE
    return json.loads(path.read_text()) if path.exists() else None


def with_cell_check(metrics: dict, check: dict | None) -> dict:
    """The run's metrics with the chosen bound in its preprocessing spec (a copy): the graph's
    cell check and the metadata's spec are both made from it."""
    if not check:
        return metrics
    preprocess = {**metrics["preprocess"], "cell_sat_min": int(check["cell_sat_min"])}
    return {**metrics, "preprocess": preprocess}


def cell_fractions(images: list[np.ndarray], spec, bounds) -> np.ndarray:
    """[bounds, images] the graph's stained-cell share of each image read whole."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from .graph_guards import cell_fraction

    out = np.zeros((len(bounds), len(images)), np.float64)
    for start in range(0, len(images), 64):
        x = tf.constant(np.stack([prepare(i, spec) for i in images[start : start + 64]]))
        for b, bound in enumerate(bounds):
            s = dataclasses.replace(spec, cell_sat_min=int(bound))
            out[b, start : start + len(x)] = cell_fraction(x, s).numpy()
    return out


def redecide(clf: Classifier, p: Prediction, cells: float) -> tuple[Status, str]:
    """The status and label an image read whole gets with this cell fraction."""
    probs = [p.probabilities[c] for c in clf.classes]
    k, status, _ = decide_as_graph(
        clf.meta, probs, cells, p.image_score, p.image_stats, p.ood_score
    )
    return status, clf.classes[k]


def score_set(clf, preds, fractions, truth, bounds) -> list[dict]:
    """Per bound: served, not recognised for no cell, answered, silent errors and silently
    missed malignant shares of one set of images."""
    meta = clf.meta
    rows = []
    for b, _ in enumerate(bounds):
        served = no_cell = answered = silent = missed = 0
        for i, p in enumerate(preds):
            whole = p.tiles is None and p.reason is not Reason.MAGNIFICATION
            status, label = redecide(clf, p, fractions[b, i]) if whole else (p.status, p.raw_label)
            if whole and fractions[b, i] < meta.preprocess.min_cell_fraction:
                no_cell += 1
            answered += status is not Status.OUT_OF_DISTRIBUTION
            if status is Status.OK and truth is not None:
                served += label == truth[i]
                silent += label != truth[i]
                missed += meta.is_malignant(truth[i]) and not meta.is_malignant(label)
        n = len(preds)
        rows.append(
            {
                "served": served / n,
                "no_cell": no_cell / n,
                "answered": answered / n,
                "silent_errors": silent / n,
                "silent_missed_malignant": missed / n,
            }
        )
    return rows


def choose(table: dict[str, list[dict]], bounds) -> int:
    """Index of the chosen bound (the rule in the module docstring); index 0 is the current."""
    sets = [k for k in table if k != CELL_FREE]

    def ok(b: int) -> bool:
        if table[CELL_FREE][b]["answered"] > table[CELL_FREE][0]["answered"]:
            return False
        if table["clean"][b]["no_cell"] > table["clean"][0]["no_cell"]:
            return False
        for k in sets:
            now, base = table[k][b], table[k][0]
            if now["silent_errors"] > max(MAX_SILENT, base["silent_errors"]) + 1e-12:
                return False
            if now["silent_missed_malignant"] > base["silent_missed_malignant"] + 1e-12:
                return False
        return True

    def served(b: int) -> float:
        return float(np.mean([table[k][b]["served"] for k in LAMPS]))

    allowed = [b for b in range(len(bounds)) if ok(b)]
    return max(allowed, key=lambda b: (round(served(b), 6), -b))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.cell_check_sweep", description=__doc__)
    ap.add_argument("--model", type=Path, required=True, help="the run's exported model")
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--limit", type=int, default=0, help="validation images (0: all)")
    ap.add_argument("--out", type=Path, default=None, help="default: RUN/reports/...")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    from .ood_eval import cells_removed

    metrics = json.loads((args.run / "metrics.json").read_text())
    ranges = A.Ranges.from_json(metrics.get("acquisition_ranges"))
    recs = select(read_manifest(run_manifest(metrics)), "val", metrics["split_column"])
    recs = recs[: args.limit] if args.limit else recs
    clean = [load_image(str(args.data / r.path)) for r in recs]
    truth = [r.label for r in recs]
    clf = Classifier(args.model, threads=2)
    current = clf.meta.preprocess.cell_sat_min
    bounds = (current, *(b for b in CANDIDATES if b < current))
    rng = np.random.default_rng(1001)  # train.guard's validation seed
    sets: dict[str, tuple[list[np.ndarray], list[str] | None]] = {"clean": (clean, truth)}
    for name, fn in LAMPS.items():
        sets[name] = ([fn(i) for i in clean], truth)
    views = [A.random_acquisition(i, rng, ranges) for i in clean * 2]
    sets["acquisition views"] = (views, truth * 2)
    rng = np.random.default_rng(7)
    sets[CELL_FREE] = ([cells_removed(i, rng) for i in clean], None)
    table = {}
    for name, (images, labels) in sets.items():
        preds = clf.predict_batch(images)
        table[name] = score_set(
            clf, preds, cell_fractions(images, clf.meta.preprocess, bounds), labels, bounds
        )
        print(
            f"{name:24s} "
            + "  ".join(
                f"{b}: {r['served']:.3f}/{r['no_cell']:.3f}/{r['silent_errors']:.4f}"
                for b, r in zip(bounds, table[name], strict=True)
            ),
            flush=True,
        )
    best = choose(table, bounds)
    out = {
        "cell_sat_min": int(bounds[best]),
        "current": int(current),
        "chosen_on": "val",
        "bounds": list(bounds),
        "sets": table,
        "images": len(recs),
        "model": clf.meta.version,
        "command": "python -m train.cell_check_sweep " + " ".join(argv),
    }
    report = args.out or args.run / "reports" / "cell_check_sweep.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(out, indent=2) + "\n")
    (args.run / CELL_CHECK_FILE).write_text(
        json.dumps({k: out[k] for k in ("cell_sat_min", "chosen_on", "images", "command")}) + "\n"
    )
    print(f"cell_sat_min {current} -> {bounds[best]} (chosen on validation)", flush=True)
    return out


if __name__ == "__main__":
    main()
