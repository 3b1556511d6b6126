"""`python -m train.other_labs_eval [--model M] [--data ../shared/data/other-labs]`: the model on
real images from other labs' microscopes (never training labels).

Per set: how many images were answered, uncertain or not recognised, and the silent errors that
matter: a blast set answered Benign with status ok ("silently benign"), a normal-cell set
answered malignant with status ok ("silently malignant"), each with a 95% Wilson interval.
Writes reports/other_labs_eval.json. Runtime only: no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_infer import Classifier, Failure
from edge_infer.io.inputs import expand_paths
from edge_infer.result import Status
from edge_infer.site.rules import wilson

REPORTS = Path(__file__).resolve().parent.parent / "reports"
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "other-labs"

#: folder -> what the images truly are (other-labs/README.md)
SETS = {
    "ALL-IDB2_103px/blast": "malignant",
    "ALL-IDB2_103px/non_blast": "normal",
    "Zheng2018_JiangxiTecom/lymphocyte": "normal",
    "Zheng2018_CellaVisionBlog/lymphocyte": "normal",
    "BCCD_cropped/lymphocyte": "normal",
}
#: the targets: blasts silently Benign, normal cells silently malignant
TARGETS = {"malignant": 0.01, "normal": 0.02}


def evaluate_set(clf: Classifier, folder: Path, truth: str) -> dict:
    files = expand_paths([folder]).files
    outcomes = clf.predict_batch(files)
    n = len(outcomes)
    status = [o.status for o in outcomes]
    ok = [o for o in outcomes if not isinstance(o, Failure) and o.status is Status.OK]
    if truth == "malignant":
        silent = sum(not clf.meta.is_malignant(o.label) for o in ok)
        key = "silently_benign"
    else:
        silent = sum(clf.meta.is_malignant(o.label) for o in ok)
        key = "silently_malignant"
    lo, hi = wilson(silent, n)
    return {
        "set": str(folder.relative_to(folder.parents[1])),
        "truth": truth,
        "n": n,
        "answered": len(ok) / n,
        "uncertain": status.count(Status.UNCERTAIN) / n,
        "not_recognised": status.count(Status.OUT_OF_DISTRIBUTION) / n,
        "unreadable": status.count(Status.ERROR) / n,
        key: silent / n,
        f"{key}_count": silent,
        f"{key}_95ci": [lo, hi],
        "target": TARGETS[truth],
        "meets_target": silent / n <= TARGETS[truth],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.other_labs_eval", description=__doc__)
    ap.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=REPORTS / "other_labs_eval.json")
    args = ap.parse_args(argv)
    clf = Classifier(args.model)
    rows = []
    for rel, truth in SETS.items():
        folder = args.data / rel
        if not folder.is_dir():
            raise SystemExit(f"{folder}: not found (see ../shared/data/other-labs/README.md)")
        rows.append(evaluate_set(clf, folder, truth))
        r = rows[-1]
        silent = next(k for k in r if k.startswith("silently_") and "_" not in k[9:])
        print(
            f"{r['set']:<40} n {r['n']:3d}  answered {r['answered']:.3f}  uncertain "
            f"{r['uncertain']:.3f}  not recognised {r['not_recognised']:.3f}  "
            f"{silent.replace('_', ' ')} {r[silent]:.3f} (target <= {r['target']})",
            file=sys.stderr,
        )
    report = {
        "model": clf.version,
        "sets": rows,
        "command": "python -m train.other_labs_eval "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
