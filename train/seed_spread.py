"""`python -m train.seed_spread RUN...`: one recipe's runs side by side, with mean and spread.

Issue 29 asks for the shipped recipe's figures over >= 3 seeds, not the best seed's: this reads
each run's metrics.json (and, where a run has it, its validation shift report) and writes the
figures per seed with their mean, minimum and maximum, so the card quotes a measured spread.
Which run ships is chosen on validation (`val_accuracy`, then the shift suite's validation
figures); the test columns are reported, never chosen on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPORTS = Path(__file__).resolve().parent.parent / "reports"

#: (column, where it is in metrics.json)
FIGURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("val_accuracy", ("val", "accuracy")),
    ("test_accuracy", ("test", "accuracy")),
    ("test_malignant_sensitivity", ("test", "malignant_sensitivity")),
    ("test_ece", ("calibration", "test_ece_after")),
    ("test_uncertain", ("uncertainty", "test_share_uncertain")),
    ("test_silent_missed_malignant", ("uncertainty", "test_silent_missed_malignant")),
    ("best_epoch", ("best_epoch",)),
    ("training_minutes", ("training", "seconds")),
)
#: from the run's reports/shift_eval_val.json summary, when present
SHIFT_FIGURES = ("inside_mean_served", "inside_min_served", "inside_max_silent_errors")


def _get(d: dict, keys: tuple[str, ...]):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def run_figures(run: Path) -> dict:
    """One run's figures (None where the run does not have one)."""
    metrics = json.loads((run / "metrics.json").read_text())
    row: dict = {"run": run.name, "seed": _get(metrics, ("training", "seed"))}
    for name, keys in FIGURES:
        v = _get(metrics, keys)
        row[name] = v / 60.0 if name == "training_minutes" and v is not None else v
    shift = run / "reports" / "shift_eval_val.json"
    summary = json.loads(shift.read_text())["summary"] if shift.exists() else {}
    for name in SHIFT_FIGURES:
        row[f"val_shift_{name}"] = summary.get(name)
    return row


def spread(rows: list[dict]) -> dict:
    """Mean, minimum and maximum of every figure all runs have."""
    out = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        if name in ("run", "seed") or any(v is None for v in values):
            continue
        a = np.asarray(values, dtype=np.float64)
        out[name] = {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}
    return out


def recipes_differ(runs: list[Path]) -> list[str]:
    """The recipe keys (other than the seed) on which the runs disagree: a spread over
    different recipes is not a seed spread. A key a run's recipe lacks (an option added
    since) is the option's default."""
    from .__main__ import parse_args

    defaults = vars(parse_args(["--out", "x"]))
    recipes = [json.loads((r / "metrics.json").read_text()).get("recipe", {}) for r in runs]
    keys = set().union(*recipes) - {"seed", "data", "manifest"}

    def value(recipe: dict, k: str) -> str:
        return json.dumps(recipe.get(k, defaults.get(k)), default=str)

    return sorted(k for k in keys if len({value(r, k) for r in recipes}) > 1)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.seed_spread", description=__doc__)
    ap.add_argument("runs", type=Path, nargs="+", help="run folders of one recipe")
    ap.add_argument("--out", type=Path, default=REPORTS / "seed_spread.json")
    args = ap.parse_args(argv)
    differ = recipes_differ(args.runs)
    if differ:
        ap.error(f"the runs' recipes differ in {', '.join(differ)}: not one recipe's seeds")
    rows = [run_figures(r) for r in args.runs]
    report = {
        "runs": rows,
        "spread": spread(rows),
        "command": "python -m train.seed_spread "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, s in report["spread"].items():
        per = "  ".join(f"{r[name]:.4f}" for r in rows)
        print(f"{name:34s} {per}   mean {s['mean']:.4f} ({s['min']:.4f}-{s['max']:.4f})")
    return report


if __name__ == "__main__":
    main()
