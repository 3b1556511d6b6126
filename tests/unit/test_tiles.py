"""The scale rule's plan and tile geometry, and the tile rule (edge_infer.tiles), on made-up
answers: every branch of the rule as its docstring states it."""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np
import pytest

from edge_infer.image import scale
from edge_infer.image.preprocess import field_to_input
from edge_infer.image.spec import PreprocessSpec
from edge_infer.result import Prediction, Reason, Status
from edge_infer.tiles import combine, refused

CLASSES = ("Benign", "Early", "Pre", "Pro")
SPEC = PreprocessSpec(input_size=160, normalise="white_patch", cell_diameter_share=0.095)


def answer(label: str, status: Status = Status.OK, reason: Reason | None = None, p=0.97):
    probs = {c: (p if c == label else (1 - p) / 3) for c in CLASSES}
    return Prediction(
        source="t",
        status=status,
        raw_label=label,
        display_label=label,
        confidence=p,
        probabilities=MappingProxyType(probs),
        reason=reason,
        ood_score=1.0,
        image_score=0.5,
        model="m",
    )


def tile_answer(*answers: Prediction) -> Prediction:
    boxes = [(i * 10, 0, 10, 10) for i in range(len(answers))]
    return combine("img", answers, boxes, 0.4, lambda c: c != "Benign", str.upper)


@pytest.mark.parametrize(
    ("m", "expected"),
    [
        (math.nan, scale.Plan.WHOLE),
        (1.0, scale.Plan.WHOLE),
        (0.7, scale.Plan.WHOLE),
        (2.5, scale.Plan.WHOLE),
        (0.5, scale.Plan.TILES),
        (0.0, scale.Plan.REFUSE),  # cells too small to measure at all
        (2.6, scale.Plan.REFUSE),
        (math.inf, scale.Plan.REFUSE),
        (0.01, scale.Plan.REFUSE),  # more than MAX_TILES fields
    ],
)
def test_plan_follows_the_rule(m: float, expected: scale.Plan) -> None:
    assert scale.plan(m, SPEC, (224, 224, 3)) is expected


def test_tiles_cover_the_image_at_the_training_scale() -> None:
    img = np.full((300, 500, 3), 230, np.uint8)
    tiles = scale.tiles(img, 0.25, SPEC, lambda f, row: field_to_input(f, SPEC, row))
    # at 0.25x one training field is 0.25 * sqrt(300 * 500) = 97 px across: resampled so it
    # is 160 px, the image is 496 x 826 px -> 4 x 6 tiles of 160 px
    assert tiles.inputs.shape == (24, 160, 160, 3)
    xs = sorted({b[0] for b in tiles.boxes})
    ys = sorted({b[1] for b in tiles.boxes})
    assert xs[0] == 0 and ys[0] == 0
    assert max(x + b[2] for b in tiles.boxes for x in [b[0]]) == pytest.approx(500, abs=2)
    assert max(y + b[3] for b in tiles.boxes for y in [b[1]]) == pytest.approx(300, abs=2)


def test_a_blank_or_tiny_image_has_no_ruler() -> None:
    assert math.isnan(scale.blob_diameter(np.full((160, 160, 3), 200, np.uint8)))
    assert math.isnan(scale.blob_diameter(np.full((8, 8, 3), 200, np.uint8)))


def test_a_disc_reads_its_own_size() -> None:
    """A field of dark discs reads their diameter, and twice as large discs twice as large."""
    readings = []
    for d in (8, 16):
        img = np.full((320, 320, 3), 235, np.uint8)
        for y in range(d, 320 - d, 2 * d):
            for x in range(d, 320 - d, 2 * d):
                cv2_circle(img, (x, y), d // 2)
        readings.append(scale.blob_diameter(img))
    assert readings[0] == pytest.approx(8, rel=0.25)
    assert readings[1] / readings[0] == pytest.approx(2.0, rel=0.1)


def cv2_circle(img: np.ndarray, centre: tuple[int, int], r: int) -> None:
    import cv2

    cv2.circle(img, centre, r, (150, 120, 170), -1)


def test_all_tiles_agree_gives_that_class() -> None:
    p = tile_answer(answer("Pro"), answer("Pro", p=0.95), answer("Benign", reason=Reason.NO_CELL))
    assert p.status is Status.OK and p.raw_label == "Pro" and p.display_label == "PRO"
    assert p.magnification == 0.4 and len(p.tiles) == 3
    assert p.confidence == pytest.approx(0.96)


def test_one_malignant_tile_makes_a_benign_image_uncertain() -> None:
    p = tile_answer(answer("Benign"), answer("Benign"), answer("Pre", status=Status.UNCERTAIN))
    assert p.status is Status.UNCERTAIN and p.reason is Reason.FIELDS_DISAGREE
    assert p.raw_label == "Pre"  # Benign only when no tile gave a malignant class


def test_an_uncertain_benign_tile_keeps_the_image_uncertain() -> None:
    p = tile_answer(answer("Benign"), answer("Benign", Status.UNCERTAIN, Reason.LOW_CONFIDENCE))
    assert p.status is Status.UNCERTAIN and p.raw_label == "Benign"


def test_the_malignant_class_most_tiles_gave() -> None:
    p = tile_answer(answer("Pre"), answer("Pro"), answer("Pro"), answer("Benign"))
    assert p.status is Status.UNCERTAIN and p.raw_label == "Pro"


def test_a_tile_not_recognised_makes_the_image_not_recognised() -> None:
    odd = answer("Pro", Status.OUT_OF_DISTRIBUTION, Reason.FEATURES)
    p = tile_answer(answer("Pro"), odd)
    assert p.status is Status.OUT_OF_DISTRIBUTION and p.reason is Reason.FEATURES
    assert p.label is None and p.source == "img"


def test_no_tile_with_a_cell_means_no_cell() -> None:
    empty = answer("Benign", Status.OUT_OF_DISTRIBUTION, Reason.NO_CELL)
    p = tile_answer(empty, empty)
    assert p.reason is Reason.NO_CELL and p.status is Status.OUT_OF_DISTRIBUTION


def test_the_record_lists_the_tiles_and_csv_leaves_them_out() -> None:
    from edge_infer.result import flatten

    rec = tile_answer(answer("Pro"), answer("Pro")).to_record()
    assert rec["magnification"] == 0.4
    assert [t["verdict"] for t in rec["tiles"]] == ["Pro", "Pro"]
    assert rec["tiles"][1]["box"] == [10, 0, 10, 10]
    assert "tiles" not in flatten(rec) and "magnification" not in flatten(rec)


def test_refused_keeps_the_networks_answer_but_not_to_use() -> None:
    p = refused(answer("Pro"), 4.2)
    assert p.status is Status.OUT_OF_DISTRIBUTION and p.reason is Reason.MAGNIFICATION
    assert p.label is None and p.raw_label == "Pro"
    assert p.headline.startswith("Not recognised: cells larger than the model reads")
    # a reading too large to measure is no number in the record (JSON has no infinity)
    import json

    rec = refused(answer("Pro"), math.inf).to_record()
    assert rec["magnification"] is None and "Infinity" not in json.dumps(rec)


def test_the_refined_reading_spreads_its_fields_over_the_frame() -> None:
    starts = scale._starts(3000, 160)  # 19 windows along a 3000 px side
    picked = scale._spread(starts, scale.READ_FIELDS)
    assert len(picked) == scale.READ_FIELDS and picked[0] == 0 and picked[-1] == 3000 - 160
    assert picked == sorted(set(picked))
    assert scale._spread([0, 50], 8) == [0, 50]


def test_boxes_are_in_the_pixels_of_the_image_as_saved() -> None:
    """A frame over the working side is reduced at decoding; its tiles' boxes still cover the
    frame as saved, not the reduced copy the network read."""
    import cv2

    from edge_infer.image.decode import MAX_WORKING_SIDE, decode_image, saved_size

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1944, 2592, 3), dtype=np.uint8)
    img = decode_image(cv2.imencode(".png", frame)[1].tobytes(), "frame.png")
    assert max(img.shape[:2]) == MAX_WORKING_SIDE
    assert saved_size(img) == (1944, 2592)
    assert saved_size(img[:100]) == (100, img.shape[1])  # a crop is its own image
    assert saved_size(np.zeros((50, 60, 3), np.uint8)) == (50, 60)
    from edge_infer.image.decode import as_bgr_array

    assert saved_size(as_bgr_array(img)) == (1944, 2592)  # handed on as an array (serve)
    t = scale.tiles(
        np.asarray(img), 0.3, SPEC, lambda f, row: field_to_input(f, SPEC, row), saved_size(img)
    )
    assert max(x + w for x, _, w, _ in t.boxes) == 2592
    assert max(y + h for _, y, _, h in t.boxes) == 1944
    same = scale.tiles(np.asarray(img), 0.3, SPEC, lambda f, row: field_to_input(f, SPEC, row))
    assert max(x + w for x, _, w, _ in same.boxes) == img.shape[1]


def test_a_decoded_image_keeps_its_saved_size_through_pickle() -> None:
    import pickle

    import cv2

    from edge_infer.image.decode import decode_image, saved_size

    frame = np.full((1500, 1200, 3), 200, np.uint8)
    img = decode_image(cv2.imencode(".png", frame)[1].tobytes(), "frame.png")
    copy = pickle.loads(pickle.dumps(img))
    assert saved_size(copy) == (1500, 1200) and np.array_equal(copy, img)
