"""train.cell_check_sweep's rule on made-up tables: the bound that serves the most under the
lamp shifts, unless it answers a cell-free image, adds silent errors or refuses clean images."""

from __future__ import annotations

from train.cell_check_sweep import CELL_FREE, LAMPS, choose, with_cell_check

BOUNDS = (50, 40, 30)


def row(served=0.9, no_cell=0.0, answered=1.0, silent=0.0, missed=0.0) -> dict:
    return {
        "served": served,
        "no_cell": no_cell,
        "answered": answered,
        "silent_errors": silent,
        "silent_missed_malignant": missed,
    }


def table(lamp_served=(0.70, 0.75, 0.80), cell_free=(0.0, 0.0, 0.0), clean_no_cell=(0, 0, 0),
          view_silent=(0.0, 0.0, 0.0), view_missed=(0.0, 0.0, 0.0)) -> dict:  # fmt: skip
    t = {"clean": [row(no_cell=c) for c in clean_no_cell]}
    for name in LAMPS:
        t[name] = [row(served=s) for s in lamp_served]
    t["acquisition views"] = [
        row(silent=s, missed=m) for s, m in zip(view_silent, view_missed, strict=True)
    ]
    t[CELL_FREE] = [row(served=0.0, answered=a) for a in cell_free]
    return t


def test_the_bound_that_serves_the_most_under_the_lamp():
    assert BOUNDS[choose(table(), BOUNDS)] == 30


def test_a_bound_that_answers_a_cell_free_image_is_not_chosen():
    assert BOUNDS[choose(table(cell_free=(0.0, 0.0, 0.01)), BOUNDS)] == 40


def test_silent_errors_past_half_a_percent_or_more_missed_malignant_rule_a_bound_out():
    assert BOUNDS[choose(table(view_silent=(0.0, 0.004, 0.006)), BOUNDS)] == 40
    assert BOUNDS[choose(table(view_missed=(0.001, 0.001, 0.002)), BOUNDS)] == 40
    # already above 0.5% at the current bound: no worse than it is allowed
    assert BOUNDS[choose(table(view_silent=(0.008, 0.008, 0.008)), BOUNDS)] == 30


def test_ties_go_to_the_higher_bound_and_clean_refusals_may_not_grow():
    assert BOUNDS[choose(table(lamp_served=(0.7, 0.8, 0.8)), BOUNDS)] == 40
    assert BOUNDS[choose(table(clean_no_cell=(0.0, 0.0, 0.01)), BOUNDS)] == 40


def test_the_chosen_bound_goes_into_a_copy_of_the_runs_spec():
    metrics = {"preprocess": {"cell_sat_min": 50, "input_size": 160}, "classes": []}
    out = with_cell_check(metrics, {"cell_sat_min": 30})
    assert out["preprocess"] == {"cell_sat_min": 30, "input_size": 160}
    assert metrics["preprocess"]["cell_sat_min"] == 50
    assert with_cell_check(metrics, None) is metrics
