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
