"""`python -m train.guard --run RUN`: fit both out-of-distribution guards of a run and set their
thresholds, writing RUN/ood_stats.npz (feature means and whitening, folded into the graph by the
exporter) and RUN/guards.json (thresholds and the image-statistics guard). This module is the one
owner of the guard thresholds: `python -m train` calls it, export copies guards.json unchanged.

Fitted on the training images, thresholded on the validation images only. With
`--acquisition` (the default when the run was trained with acquisition augmentation) each
training and validation image is also seen under `copies` random acquisitions from
train.acquisition, so a lamp, white balance or focus change that the model handles is not
flagged, while changes beyond what it was trained on still are. Both guards raise false alarms
independently, so each is set at a high validation percentile (99.5 by default)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge_infer.image.decode import load_image
from edge_infer.image.preprocess import prepare
from edge_infer.image.spec import PreprocessSpec

from .acquisition import RANGES, Ranges, random_acquisition
from .dataset import CLASSES, default_data_root, read_manifest, run_manifest, select
from .image_guard import FLOOR_PERCENTILE, ImageStatsGuard
from .model import FEATURES_LAYER

GUARDS_FILE = "guards.json"
OOD_STATS_FILE = "ood_stats.npz"


def views(
    images: list[np.ndarray], copies: int, seed: int, ranges: Ranges = RANGES
) -> list[np.ndarray]:
    """The images, then `copies` random acquisitions of each (seeded), within the ranges the
    run was trained on."""
    rng = np.random.default_rng(seed)
    out = list(images)
    for _ in range(copies):
        out += [random_acquisition(img, rng, ranges) for img in images]
    return out


def inputs_and_stats(images: list[np.ndarray], spec: PreprocessSpec):
    """Network inputs as the runtime makes them, and the image statistics the exported graph
    computes from them (the same TensorFlow ops, converted by tf2onnx)."""
    import tensorflow as tf

    from .graph_guards import image_statistics

    x = np.stack([prepare(img, spec) for img in images])
    stats = np.concatenate(
        [image_statistics(tf.constant(x[i : i + 256])).numpy() for i in range(0, len(x), 256)]
    )
    return x, stats.astype(np.float64)


def fit_guards(
    run: Path,
    data: Path,
    percentile: float = 99.5,
    acquisition: bool | None = None,
    copies: int = 2,
    limit: int = 0,
) -> dict:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from .metrics import fit_mahalanobis, mahalanobis_score

    metrics = json.loads((run / "metrics.json").read_text())
    spec = PreprocessSpec.from_json(metrics["preprocess"])
    if acquisition is None:
        acquisition = bool(metrics["training"].get("acquisition", False))
    column = metrics["split_column"]
    model = keras.models.load_model(run / "model.keras", compile=False)
    probe = keras.Model(model.input, model.get_layer(FEATURES_LAYER).output)
    records = read_manifest(run_manifest(metrics))
    n_copies = copies if acquisition else 0
    ranges = Ranges.from_json(metrics.get("acquisition_ranges"))

    def load(split: str):
        rs = select(records, split, column)
        if limit:
            rs = [r for c in CLASSES for r in [x for x in rs if x.label == c][:limit]]
        return [load_image(data / r.path) for r in rs], np.array(
            [CLASSES.index(r.label) for r in rs]
        )

    def features(x: np.ndarray) -> np.ndarray:
        return probe.predict(x, batch_size=64, verbose=0).astype(np.float64)

    out_sets = {}
    for i, split in enumerate(("train", "val", "test")):
        imgs, y = load(split)
        shifted = split != "test" and n_copies > 0
        all_imgs = views(imgs, n_copies, 1000 + i, ranges) if shifted else imgs
        x, st = inputs_and_stats(all_imgs, spec)
        reps = len(all_imgs) // len(imgs)
        out_sets[split] = (features(x), st, np.tile(y, reps), len(imgs))
        print(f"[guard] {split}: {len(imgs)} images x {reps} views", flush=True)

    ftr, str_, ytr, _ = out_sets["train"]
    fva, sva, _, nva = out_sets["val"]
    fte, ste, _, _ = out_sets["test"]
    means, whiten = fit_mahalanobis(ftr, ytr, len(CLASSES))
    np.savez(run / OOD_STATS_FILE, means=means, whiten=whiten)
    f_va = mahalanobis_score(fva.astype(np.float32), means, whiten)
    f_te = mahalanobis_score(fte.astype(np.float32), means, whiten)
    feature_threshold = float(np.percentile(f_va, percentile))
    image_guard = ImageStatsGuard.fit(str_, sva, percentile)
    score_over_va = image_guard.scores(sva) > image_guard.threshold

    def rate(mask: np.ndarray) -> float:
        return float(mask.mean())

    rule = f"{percentile}th percentile of validation" + (
        f" (clean + {n_copies} acquisition-shifted views)" if n_copies else ""
    )
    if image_guard.floors:
        rule += f"; floors at the {FLOOR_PERCENTILE}th percentile of the same"
    g_va, g_te = image_guard.flagged(sva), image_guard.flagged(ste)
    summary = {
        "val_clean_flagged_features": rate(f_va[:nva] > feature_threshold),
        "val_clean_flagged_image": rate(g_va[:nva]),
        "val_clean_flagged_image_floors_only": rate(g_va[:nva] & ~score_over_va[:nva]),
        "val_clean_flagged_either": rate((f_va[:nva] > feature_threshold) | g_va[:nva]),
        "test_clean_flagged_either": rate((f_te > feature_threshold) | g_te),
    }
    guards = {
        "feature_threshold": feature_threshold,
        "feature_rule": rule,
        "image_stats": {**image_guard.to_json(), "rule": rule},
        "acquisition_views": n_copies,
        "rates": summary,
    }
    (run / GUARDS_FILE).write_text(json.dumps(guards, indent=2))
    print(
        f"[guard] feature threshold {feature_threshold:.1f}, image threshold "
        f"{image_guard.threshold:.2f}; clean flagged val {summary['val_clean_flagged_either']:.4f}"
        f", test {summary['test_clean_flagged_either']:.4f} -> {run / GUARDS_FILE}",
        flush=True,
    )
    return guards


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.guard", description=__doc__)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument(
        "--percentile", type=float, default=99.5, help="validation percentile for the thresholds"
    )
    ap.add_argument(
        "--acquisition",
        choices=("auto", "yes", "no"),
        default="auto",
        help="fit on acquisition-shifted views too (auto: if the run was trained with them)",
    )
    ap.add_argument("--copies", type=int, default=2, help="shifted views per image")
    ap.add_argument("--limit", type=int, default=0, help="images per class and split (tests)")
    args = ap.parse_args(argv)
    acq = {"auto": None, "yes": True, "no": False}[args.acquisition]
    return fit_guards(args.run, args.data, args.percentile, acq, args.copies, args.limit)


if __name__ == "__main__":
    main()
