"""`python -m train.guard --run RUN`: fit the image-statistics guard of a run (train images),
threshold it on the validation images only, and write RUN/image_guard.json for the exporter."""

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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.guard", description=__doc__)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument(
        "--percentile", type=float, default=99.5, help="validation percentile for the threshold"
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

    out = {
        **guard.to_json(),
        "threshold_rule": f"{args.percentile}th percentile of validation",
        "val_flagged": rate(va),
        "test_flagged": rate(te),
    }
    (args.run / "image_guard.json").write_text(json.dumps(out, indent=2))
    print(
        f"image guard: threshold {guard.threshold:.2f}; flagged val {rate(va):.4f}, "
        f"test {rate(te):.4f} -> {args.run / 'image_guard.json'}"
    )
    return out


if __name__ == "__main__":
    main()
