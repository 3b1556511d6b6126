"""`python -m train.floor_sweep --model M --run RUN --out reports/floor_sweep_val.json`: what a
sharpness floor would cost and save, on validation only. For each candidate floor: the served
share (ok or uncertain) and the silent errors (ok and wrong) of the clean validation images, of
the guard's acquisition views (train.guard's seeds) and of Gaussian blurs of 2-6 px sigma,
simulated on a model WITHOUT a floor (its image statistics and decisions for images read whole;
an image read as tiles has its tiles' guards and is not counted as floored). This is the check
behind train.image_guard.FLOOR_PERCENTILE."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from edge_infer import Classifier

from .acquisition import Ranges, random_acquisition
from .dataset import default_data_root, read_manifest, run_manifest, select
from .graph_guards import STAT_NAMES

FLOORS = (0.0, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75)
BLURS = (2, 3, 4, 5, 6)
STAT = "log_laplacian_var_half"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.floor_sweep", description=__doc__)
    ap.add_argument("--model", type=Path, required=True, help="an exported model without floors")
    ap.add_argument("--run", type=Path, default=Path("models/run"))
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--out", type=Path, default=Path("reports/floor_sweep_val.json"))
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    metrics = json.loads((args.run / "metrics.json").read_text())
    ranges = Ranges.from_json(metrics.get("acquisition_ranges"))
    recs = select(read_manifest(run_manifest(metrics)), "val", metrics["split_column"])
    imgs = [cv2.imread(str(args.data / r.path)) for r in recs]
    truth = [r.label for r in recs]
    clf = Classifier(args.model, threads=2)
    idx = STAT_NAMES.index(STAT)

    def outcomes(images: list[np.ndarray], labels: list[str]) -> list[tuple]:
        rows = []
        for p, y in zip(clf.predict_batch(images), labels, strict=True):
            stats = getattr(p, "image_stats", None)
            rows.append((stats[idx] if stats else np.inf, p.status.value, p.label, y))
        return rows

    sets = {"clean": outcomes(imgs, truth)}
    rng = np.random.default_rng(1001)  # train.guard's validation seed
    views = [random_acquisition(i, rng, ranges) for i in imgs]
    views += [random_acquisition(i, rng, ranges) for i in imgs]
    sets["views"] = outcomes(views, truth * 2)
    for s in BLURS:
        sets[f"blur{s}"] = outcomes([cv2.GaussianBlur(i, (0, 0), s) for i in imgs], truth)
    table = []
    for f in FLOORS:
        row: dict = {"floor": f}
        for name, rows in sets.items():
            kept = [r for r in rows if r[0] >= f]
            served = sum(r[1] in ("ok", "uncertain") for r in kept) / len(rows)
            silent = sum(r[1] == "ok" and r[2] != r[3] for r in kept) / len(rows)
            row[name] = {"served": round(served, 4), "silent_errors": round(silent, 4)}
        table.append(row)
        print(
            f"floor {f:5.2f}: "
            + "; ".join(
                f"{k} {v['served']:.3f}/{v['silent_errors']:.3f}"
                for k, v in row.items()
                if k != "floor"
            ),
            flush=True,
        )
    out = {
        "model": str(args.model),
        "statistic": STAT,
        "split": "val",
        "rows": table,
        "command": "python -m train.floor_sweep " + " ".join(argv),
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
