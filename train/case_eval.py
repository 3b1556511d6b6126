"""`python -m train.case_eval [--model M]`: the case rule (edge_infer.cases) on pseudo-patient
groups.

The dataset publishes no patient ids; its pseudo-patient groups (`group` in the manifest,
`group_split` for their split) stand in for cases. On the validation groups a small grid of
rules is compared, to check the runtime's rule is among the best there (the choice is made on
validation, never on test). On the test groups: case accuracy (the verdict, the subtype
included, equals the group's class), malignant-case sensitivity and the share of cases left
for review (review or insufficient), with 95% Wilson intervals; the same with 1, 3, 5 and 10
images per case drawn at random (how many fields a lab should photograph; 50 draws each),
and under two shifts of the shift suite. Writes reports/case_eval.json. Runtime only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from edge_infer import Classifier
from edge_infer.cases import BENIGN, INSUFFICIENT, MALIGNANT, REVIEW, RULE, CaseRule, CaseTally
from edge_infer.cases import verdict as case_verdict
from edge_infer.image.decode import load_image
from edge_infer.site.rules import wilson

from .dataset import default_data_root, read_manifest
from .shift_eval import SHIFTS

REPORTS = Path(__file__).resolve().parent.parent / "reports"
#: the shifts of the suite the case rule is also measured under
CASE_SHIFTS = ("lamp x1.15", "magnification x0.8")
DRAWS = 50


def answers(clf: Classifier, images: list[np.ndarray], shift=None) -> list[dict]:
    rng = np.random.default_rng(7)
    if shift is not None:
        images = [shift.apply(x, rng) for x in images]
    preds = clf.predict_arrays(images, [f"<{i}>" for i in range(len(images))])
    return [{"status": p.status.value, "label": p.label} for p in preds]


def correct(kind: str, words: str, truth: str, clf: Classifier) -> bool:
    if not clf.meta.is_malignant(truth):
        return kind == BENIGN
    return kind == MALIGNANT and f"{clf.meta.display(truth)} suspected" in words


def score(cases: list[tuple[str, list[dict]]], clf: Classifier, rule: CaseRule) -> dict:
    """Case-level figures of (truth, image answers) pairs under `rule`."""
    right = malignant = caught = left = 0
    for truth, recs in cases:
        t = CaseTally("")
        for r in recs:
            t.add(r)
        kind, words = case_verdict(t, clf.meta, rule)
        right += correct(kind, words, truth, clf)
        left += kind in (REVIEW, INSUFFICIENT)
        if clf.meta.is_malignant(truth):
            malignant += 1
            caught += kind == MALIGNANT
    n = len(cases)

    def share(k: int, of: int) -> dict:
        return {"value": k / of if of else None, "count": k, "n": of, "ci95": wilson(k, of)}

    return {
        "cases": n,
        "case_accuracy": share(right, n),
        "malignant_case_sensitivity": share(caught, malignant),
        "left_for_review": share(left, n),
    }


def grouped(records, split: str) -> dict[str, list]:
    groups: dict[str, list] = defaultdict(list)
    for r in records:
        if r.group_split == split:
            groups[r.group].append(r)
    return dict(sorted(groups.items()))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.case_eval", description=__doc__)
    ap.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--out", type=Path, default=REPORTS / "case_eval.json")
    args = ap.parse_args(argv)
    clf = Classifier(args.model)
    records = read_manifest()
    report: dict = {"model": clf.version, "rule": RULE.describe()}

    def split_cases(split: str, shift=None) -> list[tuple[str, list[dict]]]:
        out = []
        for _, rs in grouped(records, split).items():
            imgs = [load_image(args.data / r.path) for r in rs]
            out.append((rs[0].label, answers(clf, imgs, shift)))
        return out

    # validation groups: is the runtime's rule among the best of a small grid?
    val = split_cases("val")
    grid = []
    for min_answered, share in itertools.product((1, 3, 5), (0.3, 0.5, 0.7)):
        rule = CaseRule(min_answered, share, RULE.subtype_share)
        s = score(val, clf, rule)
        grid.append({"min_answered": min_answered, "malignant_share": share, **s})
    best = max(
        grid,
        key=lambda g: (
            g["malignant_case_sensitivity"]["value"] or 0,
            g["case_accuracy"]["value"],
            -g["left_for_review"]["value"],
        ),
    )

    def key(g: dict) -> tuple:
        return (
            g["malignant_case_sensitivity"]["value"],
            g["case_accuracy"]["value"],
            g["left_for_review"]["value"],
        )

    runtime = next(
        g
        for g in grid
        if (g["min_answered"], g["malignant_share"]) == (RULE.min_answered, RULE.malignant_share)
    )
    report["validation"] = {
        "groups": len(val),
        "grid": grid,
        "runtime_rule_among_the_best": key(runtime) == key(best),
    }
    # test groups
    test = split_cases("test")
    report["test"] = score(test, clf, RULE)
    rng = np.random.default_rng(0)
    per_case = {}
    for k in (1, 3, 5, 10):
        acc, sens, left = [], [], []
        for _ in range(DRAWS):
            drawn = [
                (t, [recs[i] for i in rng.choice(len(recs), min(k, len(recs)), replace=False)])
                for t, recs in test
            ]
            s = score(drawn, clf, CaseRule(min(RULE.min_answered, k), RULE.malignant_share))
            acc.append(s["case_accuracy"]["value"])
            sens.append(s["malignant_case_sensitivity"]["value"])
            left.append(s["left_for_review"]["value"])
        per_case[str(k)] = {
            "draws": DRAWS,
            "case_accuracy_mean": float(np.mean(acc)),
            "case_accuracy_p5_p95": [float(np.percentile(acc, 5)), float(np.percentile(acc, 95))],
            "malignant_case_sensitivity_mean": float(np.mean(sens)),
            "left_for_review_mean": float(np.mean(left)),
        }
    report["test_images_per_case"] = per_case
    shifts = {s.name: s for s in SHIFTS}
    report["test_under_shift"] = {
        name: score(split_cases("test", shifts[name]), clf, RULE) for name in CASE_SHIFTS
    }
    report["command"] = "python -m train.case_eval " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    t = report["test"]
    print(
        f"{clf.version}: {t['cases']} test cases, case accuracy "
        f"{t['case_accuracy']['value']:.3f}, malignant-case sensitivity "
        f"{t['malignant_case_sensitivity']['value']:.3f}, left for review "
        f"{t['left_for_review']['value']:.3f}; runtime rule among the best on validation: "
        f"{report['validation']['runtime_rule_among_the_best']}",
        file=sys.stderr,
    )
    return report


if __name__ == "__main__":
    main()
