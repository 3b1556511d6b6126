"""train.seed_spread: one recipe's seeds side by side, their mean and range; runs of another
recipe are refused, and an option added since a run was made counts as its default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train.seed_spread import main


def make_run(root: Path, name: str, seed: int, val: float, test: float, **recipe) -> Path:
    run = root / name
    (run / "reports").mkdir(parents=True)
    metrics = {
        "val": {"accuracy": val},
        "test": {"accuracy": test, "malignant_sensitivity": 1.0},
        "calibration": {"test_ece_after": 0.005},
        "uncertainty": {"test_share_uncertain": 0.02, "test_silent_missed_malignant": 0.0},
        "best_epoch": 140,
        "training": {"seed": seed, "seconds": 600.0},
        "recipe": {"epochs": 150, "seed": seed, "uncertain_target": 0.0, **recipe},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    summary = {"inside_mean_served": 0.95 + seed / 100, "inside_min_served": 0.7}
    (run / "reports" / "shift_eval_val.json").write_text(json.dumps({"summary": summary}))
    return run


def test_mean_and_range_over_the_seeds(tmp_path):
    runs = [make_run(tmp_path, f"s{s}", s, 0.99 + s / 1000, 0.995) for s in (1, 2, 3)]
    report = main([*map(str, runs), "--out", str(tmp_path / "spread.json")])
    va = report["spread"]["val_accuracy"]
    assert va["mean"] == pytest.approx(0.992) and (va["min"], va["max"]) == (0.991, 0.993)
    assert report["spread"]["training_minutes"]["mean"] == pytest.approx(10.0)
    assert report["spread"]["val_shift_inside_mean_served"]["max"] == pytest.approx(0.98)
    assert [r["seed"] for r in report["runs"]] == [1, 2, 3]
    assert json.loads((tmp_path / "spread.json").read_text())["spread"] == report["spread"]


def test_runs_of_another_recipe_are_refused(tmp_path):
    a = make_run(tmp_path, "a", 1, 0.99, 0.99)
    b = make_run(tmp_path, "b", 2, 0.99, 0.99, epochs=40)
    with pytest.raises(SystemExit):
        main([str(a), str(b), "--out", str(tmp_path / "x.json")])


def test_an_option_a_run_predates_counts_as_its_default(tmp_path):
    old = make_run(tmp_path, "old", 1, 0.99, 0.99)
    new = make_run(tmp_path, "new", 2, 0.99, 0.99, consistency=0.0)
    assert "consistency" not in json.loads((old / "metrics.json").read_text())["recipe"]
    main([str(old), str(new), "--out", str(tmp_path / "x.json")])  # 0.0 is the default
    other = make_run(tmp_path, "cons", 3, 0.99, 0.99, consistency=6.0)
    with pytest.raises(SystemExit):
        main([str(old), str(other), "--out", str(tmp_path / "y.json")])
