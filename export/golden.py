"""`python -m export.golden`: write tests/golden.json, the shipped model's outputs on 8 real test
images (2 per class), so any later change in decoding, resizing, colour order, normalisation
or the guards shows up in tests/test_bundled_model.py. Run it only when a new model ships."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_infer import Classifier
from train.dataset import CLASSES, default_data_root, read_manifest, select

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden.json"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m export.golden", description=__doc__)
    ap.add_argument("--data", type=Path, default=default_data_root())
    args = ap.parse_args(argv)
    clf = Classifier()
    test = select(read_manifest(), "test")
    picks = [r for c in CLASSES for r in [x for x in test if x.label == c][:2]]
    images = []
    for r in picks:
        p = clf.predict(args.data / r.path)
        images.append(
            {
                "path": r.path,
                "label": p.raw_label,
                "status": p.status.value,
                "probabilities": {k: round(v, 5) for k, v in p.probabilities.items()},
                "ood_score": round(p.ood_score, 3),
                "image_score": round(p.image_score, 4),
            }
        )
    golden = {"model_version": clf.version, "images": images}
    GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"{GOLDEN}: {len(images)} images, model {clf.version}")
    return golden


if __name__ == "__main__":
    main()
