"""`python -m train.guard --run RUN`: fit the image-statistics guard of a run (train images),
re-threshold the feature-space guard, both on the validation images only, and write
RUN/image_guard.json for the exporter.

Both guards raise false alarms independently, so each is set at a high validation percentile
(99.5 by default) to keep their union near 1% of clean images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge_infer.guard import ImageStatsGuard, image_statistics
from edge_infer.preprocess import load_image

from .dataset import default_data_root, read_manifest, select


def stats_for(data: Path, records) -> np.ndarray:
    return np.stack([image_statistics(load_image(data / r.path)) for r in records])


def feature_scores(run: Path, data: Path, splits) -> list[np.ndarray]:
    """Mahalanobis scores of the run's Keras model (inference mode) on each list of records."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from edge_infer.preprocess import PreprocessSpec

    from .metrics import mahalanobis_score
    from .pipeline import make_dataset

    metrics = json.loads((run / "metrics.json").read_text())
    spec = PreprocessSpec.from_json(metrics["preprocess"])
    model = keras.models.load_model(run / "model.keras", compile=False)
    probe = keras.Model(model.input, model.get_layer("features").output)
    stats = np.load(run / "ood_stats.npz")
    out = []
    for records in splits:
        ds = make_dataset([data / r.path for r in records], [0] * len(records), spec, 64, False)
        feats = probe.predict(ds.map(lambda x, y: x), verbose=0)
        out.append(mahalanobis_score(feats.astype(np.float32), stats["means"], stats["chol"]))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.guard", description=__doc__)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument(
        "--percentile", type=float, default=99.5, help="validation percentile for the thresholds"
    )
    args = ap.parse_args(argv)
    metrics = json.loads((args.run / "metrics.json").read_text())
    column = metrics["split_column"]
    records = read_manifest()
    tr, va, te = (
        stats_for(args.data, select(records, s, column)) for s in ("train", "val", "test")
    )
    guard = ImageStatsGuard.fit(tr, va, args.percentile)

    def rate(x):
        return float((guard.scores(x) > guard.threshold).mean())

    feat = feature_scores(
        args.run, args.data, [select(records, s, column) for s in ("val", "test")]
    )
    feature_threshold = float(np.percentile(feat[0], args.percentile))
    union = [
        float(((guard.scores(x) > guard.threshold) | (f > feature_threshold)).mean())
        for x, f in ((va, feat[0]), (te, feat[1]))
    ]
    out = {
        **guard.to_json(),
        "threshold_rule": f"{args.percentile}th percentile of validation",
        "val_flagged": rate(va),
        "test_flagged": rate(te),
        "feature_threshold": feature_threshold,
        "feature_val_flagged": float((feat[0] > feature_threshold).mean()),
        "feature_test_flagged": float((feat[1] > feature_threshold).mean()),
        "either_val_flagged": union[0],
        "either_test_flagged": union[1],
    }
    print(
        f"feature guard: threshold {feature_threshold:.1f}; flagged val "
        f"{out['feature_val_flagged']:.4f}, test {out['feature_test_flagged']:.4f}; "
        f"either guard: val {union[0]:.4f}, test {union[1]:.4f}"
    )
    (args.run / "image_guard.json").write_text(json.dumps(out, indent=2))
    print(
        f"image guard: threshold {guard.threshold:.2f}; flagged val {rate(va):.4f}, "
        f"test {rate(te):.4f} -> {args.run / 'image_guard.json'}"
    )
    return out


if __name__ == "__main__":
    main()
