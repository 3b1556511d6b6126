"""The uncertain threshold is chosen on validation confidences for a target share."""

from __future__ import annotations

import numpy as np

from train.metrics import threshold_for_share, uncertainty_report


def test_the_highest_threshold_within_the_target_share():
    conf = np.array([0.55, 0.8, 0.95, 0.99, 0.999] * 20)
    assert threshold_for_share(conf, 0.2) == 0.8  # 0.81 would leave 40% uncertain
    assert threshold_for_share(conf, 0.45) == 0.95
    assert threshold_for_share(conf, 0.0) == 0.55  # nothing under 0.55
    assert threshold_for_share(np.full(10, 0.999), 0.0) == 0.99  # capped


def test_the_report_says_where_it_was_chosen():
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    r = uncertainty_report(0.7, p, np.array([0, 1, 1]), {"chosen_on": "val"})
    assert r["chosen_on"] == "val" and abs(r["test_share_uncertain"] - 1 / 3) < 1e-12
    assert r["test_accuracy_when_certain"] == 1.0


def test_benign_is_the_hardest_answer():
    from train.metrics import BENIGN_INDEX, benign_threshold

    b = BENIGN_INDEX
    # a malignant image answered Benign at 0.934: Benign needs 0.94 from now on
    p = np.array([[0.934, 0.066, 0, 0], [0.99, 0.01, 0, 0], [0.1, 0.9, 0, 0]])
    y = np.array([1, b, 1])
    assert benign_threshold(p, y, b, 0.9) == 0.94
    assert benign_threshold(p[1:], y[1:], b, 0.9) == 0.9  # none: the common threshold
    assert benign_threshold(np.array([[0.9999, 0.0001, 0, 0]]), np.array([2]), b, 0.9) == 0.99


def test_a_class_threshold_applies_to_its_answers_only():
    from edge_infer.result import Reason, Status, decide

    probs = [0.93, 0.07, 0.0, 0.0]
    assert decide(probs, [0.95, 0.9, 0.9, 0.9], False, False, False)[1:] == (
        Status.UNCERTAIN,
        Reason.LOW_CONFIDENCE,
    )
    assert decide(probs, 0.9, False, False, False)[1] is Status.OK
    assert decide([0.07, 0.93, 0, 0], [0.95, 0.9, 0.9, 0.9], False, False, False)[1] is Status.OK
    p = np.array([[0.93, 0.07, 0, 0], [0.07, 0.93, 0, 0]])
    r = uncertainty_report(0.9, p, np.array([1, 1]), by_class={0: 0.95}, classes=("B", "M"))
    assert r["by_class"] == {"B": 0.95} and r["test_share_uncertain"] == 0.5
    assert r["test_silent_missed_malignant"] == 0.0
