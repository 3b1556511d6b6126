"""`python -m train.site_reference --run RUN`: the training images' acquisition statistics
(edge_infer.site.stats) as quantiles, written to RUN/site_reference.json; export puts them in
the model's metadata, where `edge-infer check-site` compares a lab's images with them.

The training images as the camera saved them (no augmentation): the reference describes the
microscope the model learned from, which is what a lab is told to match."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge_infer.image.decode import load_image
from edge_infer.image.spec import PreprocessSpec
from edge_infer.site.stats import reference_from, site_statistics

from .dataset import CLASSES, default_data_root, read_manifest, run_manifest, select

SITE_REFERENCE_FILE = "site_reference.json"


def read_site_reference(run: Path) -> dict | None:
    """RUN/site_reference.json, or None for a run made before it existed."""
    path = Path(run) / SITE_REFERENCE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def fit_site_reference(run: Path, data: Path, limit: int = 0) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    spec = PreprocessSpec.from_json(metrics["preprocess"])
    records = select(read_manifest(run_manifest(metrics)), "train", metrics["split_column"])
    if limit:
        records = [r for c in CLASSES for r in [x for x in records if x.label == c][:limit]]
    stats = np.array([site_statistics(load_image(data / r.path), spec) for r in records])
    reference = reference_from(stats)
    (run / SITE_REFERENCE_FILE).write_text(json.dumps(reference))
    print(f"[site reference] {len(records)} training images -> {run / SITE_REFERENCE_FILE}")
    return reference


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.site_reference", description=__doc__)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--limit", type=int, default=0, help="images per class (tests)")
    args = ap.parse_args(argv)
    return fit_site_reference(args.run, args.data, args.limit)


if __name__ == "__main__":
    main()
