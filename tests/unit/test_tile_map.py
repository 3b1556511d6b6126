"""The pictures of a frame read as tiles (edge_infer.image.tile_map): the outlines and where
the model looked for the frame's answer, on made-up tiles with known maps."""

from __future__ import annotations

import dataclasses

import numpy as np

from edge_infer.image.tile_map import (
    BENIGN,
    MALIGNANT,
    frame_cam,
    picture_cam,
    tiles_extent,
    tiles_overlay,
)
from edge_infer.result import Reason, Status
from tests.unit.test_tiles import answer


def with_cam(p, cam: np.ndarray):
    return dataclasses.replace(p, cam=cam)


HOT_LEFT = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
# a 200 x 100 frame (as saved) of two 100-px tiles side by side
BOXES = [(0, 0, 100, 100), (100, 0, 100, 100)]


def test_only_the_tiles_that_gave_the_answer_are_hot_weighted_by_their_probability():
    pro = with_cam(answer("Pro", p=0.9), HOT_LEFT)
    benign = with_cam(answer("Benign"), np.ones((2, 2), np.float32))
    tiles = list(zip(BOXES, [benign, pro], strict=True))
    heat = frame_cam(tiles, "Pro", shape=(50, 100), saved=(100, 200))
    assert heat.shape == (50, 100) and heat.max() == 1.0
    assert heat[:, :50].max() == 0.0  # the Benign tile: another answer, cold
    assert heat[25, 55] > 0.8 and heat[25, 99] < 0.2  # Pro's map: its left half
    # two Pro tiles: the less confident one is the cooler
    weaker = with_cam(answer("Pro", p=0.45), HOT_LEFT)
    heat = frame_cam(list(zip(BOXES, [weaker, pro], strict=True)), "Pro", (50, 100), (100, 200))
    assert heat[25, 5] == np.float32(0.5) and heat[25, 55] == 1.0


def test_no_map_when_no_tile_gave_the_answer_or_has_a_cell_or_a_cam():
    no_cell = with_cam(answer("Pro", Status.UNCERTAIN, Reason.NO_CELL), HOT_LEFT)
    no_cam = answer("Pro")
    tiles = list(zip(BOXES, [no_cell, no_cam], strict=True))
    assert frame_cam(tiles, "Pro") is None
    assert frame_cam(tiles, None) is None


def test_the_default_map_is_thumbnail_sized_over_the_boxes_extent():
    tiles = list(zip(BOXES, [with_cam(answer("Pro"), HOT_LEFT)] * 2, strict=True))
    assert tiles_extent(tiles) == (100, 200)
    assert frame_cam(tiles, "Pro").shape == (128, 256)
    frame = dataclasses.replace(answer("Pro"), tiles=tuple(tiles))
    assert picture_cam(frame).shape == (128, 256)
    whole = with_cam(answer("Pro"), HOT_LEFT)
    assert picture_cam(whole) is HOT_LEFT


def test_the_outlines_take_each_tiles_answer_colour_in_the_reduced_image():
    tiles = list(zip(BOXES, [answer("Benign"), answer("Pro")], strict=True))
    bgr = np.full((50, 100, 3), 255, np.uint8)  # the frame read at half its saved size
    out = tiles_overlay(bgr, tiles, (100, 200), lambda c: c != "Benign")
    assert tuple(out[25, 1]) == BENIGN and tuple(out[25, 51]) == MALIGNANT
    assert tuple(out[25, 25]) == (255, 255, 255) and bgr[25, 1, 0] == 255  # a copy
