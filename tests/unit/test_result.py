"""The decision rule, the headline and the record: every status path, no model needed."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from edge_infer.metadata import ALL_PBS_CLASSES
from edge_infer.result import (
    NOT_RECOGNISED,
    RECORD_FIELDS,
    RECORD_SCHEMA,
    Failure,
    Prediction,
    Reason,
    Status,
    decide,
)

CLASSES = [c.name for c in ALL_PBS_CLASSES]


@pytest.mark.parametrize(
    "probs, no_cell, image_ood, feature_ood, status, reason",
    [
        ([0.01, 0.97, 0.01, 0.01], False, False, False, Status.OK, None),
        ([0.2, 0.5, 0.2, 0.1], False, False, False, Status.UNCERTAIN, Reason.LOW_CONFIDENCE),
        ([0.01, 0.97, 0.01, 0.01], True, True, True, Status.OUT_OF_DISTRIBUTION, Reason.NO_CELL),
        ([0.01, 0.97, 0.01, 0.01], False, True, True, Status.OUT_OF_DISTRIBUTION, Reason.IMAGE),
        ([0.2, 0.5, 0.2, 0.1], False, False, True, Status.OUT_OF_DISTRIBUTION, Reason.FEATURES),
    ],
)
def test_decide(probs, no_cell, image_ood, feature_ood, status, reason):
    k, got_status, got_reason = decide(probs, 0.9, no_cell, image_ood, feature_ood)
    assert k == 1 and got_status is status and got_reason is reason


def prediction(status: Status, reason: Reason | None, label: str = "Pro") -> Prediction:
    probs = {c: (0.94 if c == label else 0.02) for c in CLASSES}
    display = next(c.display for c in ALL_PBS_CLASSES if c.name == label)
    return Prediction(
        "x.jpg", status, label, display, 0.94, MappingProxyType(probs), reason, 12.0, 0.5, "m-1"
    )


def test_ok_headlines_the_class():
    rec = prediction(Status.OK, None).to_record()
    assert rec["headline"] == "Pro-B ALL" and rec["verdict"] == "Pro" and rec["label"] == "Pro"
    assert list(rec) == list(RECORD_FIELDS) and rec["record_schema"] == RECORD_SCHEMA


def test_uncertain_headlines_the_uncertainty_with_the_label():
    p = prediction(Status.UNCERTAIN, Reason.LOW_CONFIDENCE)
    rec = p.to_record()
    assert rec["headline"].startswith("Uncertain (Pro-B ALL?)") and "specialist" in rec["headline"]
    assert rec["verdict"] == "uncertain" and rec["label"] == "Pro" and p.uncertain


def test_fields_that_disagree_say_so_and_the_table_says_how_many_tiles():
    import dataclasses

    from edge_infer.result import table_line

    tile = prediction(Status.OK, None)
    p = dataclasses.replace(
        prediction(Status.UNCERTAIN, Reason.FIELDS_DISAGREE),
        magnification=0.4,
        tiles=(((0, 0, 90, 90), tile), ((60, 0, 90, 90), tile)),
    )
    rec = p.to_record()
    assert "do not agree" in rec["headline"] and rec["headline"].endswith("specialist")
    line = table_line(rec)
    assert "read as 2 tiles; Uncertain (Pro-B ALL?)" in line
    ok = dataclasses.replace(tile, magnification=0.4, tiles=p.tiles).to_record()
    assert table_line(ok).endswith("0.940  read as 2 tiles")
    assert "tiles" not in table_line(tile.to_record())


@pytest.mark.parametrize("reason", [Reason.NO_CELL, Reason.IMAGE, Reason.FEATURES])
def test_not_recognised_never_headlines_a_class(reason):
    p = prediction(Status.OUT_OF_DISTRIBUTION, reason)
    rec = p.to_record()
    assert p.label is None and rec["label"] is None and rec["raw_label"] == "Pro"
    assert rec["verdict"] == NOT_RECOGNISED and rec["reason"] == reason.value
    assert rec["headline"].startswith("Not recognised: ")
    assert rec["headline"].count("not recognised") == 0  # said once, not twice
    assert not any(c.display in rec["headline"] for c in ALL_PBS_CLASSES)
    assert rec["headline"].endswith("do not use this result")


def test_failure_record():
    rec = Failure("y.jpg", "file not found").to_record()
    assert rec["status"] == rec["verdict"] == "error"
    assert rec["headline"] == "Could not classify: file not found"
    assert list(rec) == list(RECORD_FIELDS) and rec["label"] is None


def test_decide_on_every_combination_of_the_conditions():
    """No cell, then image statistics, then features, then low confidence, else ok."""
    import itertools

    from edge_infer.result import Reason, Status, decide

    for no_cell, image, features, low in itertools.product((False, True), repeat=4):
        probs = [0.5, 0.3, 0.1, 0.1] if low else [0.95, 0.03, 0.01, 0.01]
        k, status, reason = decide(probs, 0.9, no_cell, image, features)
        if no_cell:
            want = (Status.OUT_OF_DISTRIBUTION, Reason.NO_CELL)
        elif image:
            want = (Status.OUT_OF_DISTRIBUTION, Reason.IMAGE)
        elif features:
            want = (Status.OUT_OF_DISTRIBUTION, Reason.FEATURES)
        elif low:
            want = (Status.UNCERTAIN, Reason.LOW_CONFIDENCE)
        else:
            want = (Status.OK, None)
        assert (k, status, reason) == (0, *want)
