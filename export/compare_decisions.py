"""`python -m export.compare_decisions OLD.jsonl NEW.jsonl [--out F.json]`: do two models (or two
runtimes) decide alike on the same images? Reads two `edge-infer classify --format jsonl`
outputs and counts equal statuses, labels and reasons, and the image scores' differences.

Used when the guards moved into the graph (all-pbs-cnn-2.0 -> 2.1): see models/README.md."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np


def read(path: Path, by_name: bool = False) -> dict[str, dict]:
    """Records by path (or by file name, for two runs over copies in different folders)."""
    recs = map(json.loads, path.read_text().splitlines())
    return {(Path(r["path"]).name if by_name else r["path"]): r for r in recs}


def compare(old: dict[str, dict], new: dict[str, dict]) -> dict:
    common = sorted(set(old) & set(new))
    a = np.array([old[p]["image_score"] or 0.0 for p in common])
    b = np.array([new[p]["image_score"] or 0.0 for p in common])
    return {
        "images": len(common),
        "only_in_one": len(set(old) ^ set(new)),
        "status_equal": sum(old[p]["status"] == new[p]["status"] for p in common),
        "label_equal": sum(old[p]["label"] == new[p]["label"] for p in common),
        "reason_equal": sum(old[p]["reason"] == new[p]["reason"] for p in common),
        "status_changes": {
            f"{o} -> {n}": c
            for (o, n), c in Counter((old[p]["status"], new[p]["status"]) for p in common).items()
            if o != n
        },
        "reason_changes": {
            f"{o} -> {n}": c
            for (o, n), c in Counter((old[p]["reason"], new[p]["reason"]) for p in common).items()
            if o != n
        },
        "statuses_new": dict(Counter(new[p]["status"] for p in common)),
        "image_score_median_rel_diff": float(
            np.median(np.abs(a - b) / np.maximum(np.abs(a), 1e-3))
        ),
        "image_score_max_rel_diff": float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-3))),
        "probability_max_abs_diff": max(
            (
                abs(old[p]["probabilities"][c] - new[p]["probabilities"][c])
                for p in common
                if old[p]["probabilities"] and new[p]["probabilities"]
                for c in old[p]["probabilities"]
            ),
            default=0.0,
        ),
    }


def write_ood_images(data: Path, out: Path, per_kind: int = 40, seed: int = 0) -> int:
    """Every train.ood_eval change applied to every 11th test image (up to `per_kind`), as
    PNG files in `out`: the out-of-distribution set of the comparison."""
    import cv2

    from train.dataset import read_manifest, select
    from train.ood_eval import KINDS

    rng = np.random.default_rng(seed)
    pick = select(read_manifest(), "test")[::11][:per_kind]
    out.mkdir(parents=True, exist_ok=True)
    for k, fn in enumerate(KINDS.values()):
        for i, r in enumerate(pick):
            cv2.imwrite(str(out / f"{k:02d}-{i:02d}.png"), fn(cv2.imread(str(data / r.path)), rng))
    return len(KINDS) * len(pick)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m export.compare_decisions", description=__doc__)
    ap.add_argument("old", type=Path, nargs="?")
    ap.add_argument("new", type=Path, nargs="?")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--make-ood-images", type=Path, default=None, help="write the OOD image set here, exit"
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/data/all-pbs"))
    ap.add_argument(
        "--by-name", action="store_true", help="match records by file name, not by path"
    )
    args = ap.parse_args(argv)
    if args.make_ood_images:
        n = write_ood_images(args.data, args.make_ood_images)
        print(f"{n} images -> {args.make_ood_images}")
        return {"images": n}
    result = compare(read(args.old, args.by_name), read(args.new, args.by_name))
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
