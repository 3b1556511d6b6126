"""A picture of an image read as tiles (edge_infer.image.scale): each tile outlined in the
colour of its own answer, so a reviewer sees which fields of a frame said what, and where to
look first when they disagree."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from ..result import Prediction, Reason, Status

#: BGR outline colours, drawn in this order (the answers that matter most on top)
NOT_RECOGNISED = (150, 150, 150)
BENIGN = (40, 160, 0)
UNCERTAIN = (0, 170, 255)
MALIGNANT = (0, 0, 210)
ORDER = (NOT_RECOGNISED, BENIGN, UNCERTAIN, MALIGNANT)


def colour(p: Prediction, is_malignant: Callable[[str], bool]) -> tuple[int, int, int] | None:
    """A tile's outline colour; None for a tile with no stained cell (it said nothing)."""
    if p.reason is Reason.NO_CELL:
        return None
    if p.status is Status.OUT_OF_DISTRIBUTION:
        return NOT_RECOGNISED
    if p.status is Status.UNCERTAIN:
        return UNCERTAIN
    return MALIGNANT if is_malignant(p.raw_label) else BENIGN


def tiles_overlay(
    bgr: np.ndarray,
    tiles: Sequence[tuple[tuple[int, int, int, int], Prediction]],
    saved: tuple[int, int],
    is_malignant: Callable[[str], bool],
) -> np.ndarray:
    """`bgr` (the image as the runtime read it, perhaps reduced from `saved` = its (height,
    width) as saved, the pixels the boxes are in) with every tile's box outlined, each inset
    by its line width so that overlapping neighbours stay apart."""
    out = np.array(bgr, dtype=np.uint8, copy=True)
    h, w = out.shape[:2]
    sy, sx = h / saved[0], w / saved[1]
    line = max(1, round(min(h, w) / 250))
    drawn = [(colour(p, is_malignant), box) for box, p in tiles]
    for c in ORDER:
        for x, y, bw, bh in (box for k, box in drawn if k == c):
            top_left = (round(x * sx) + line, round(y * sy) + line)
            bottom_right = (round((x + bw) * sx) - 1 - line, round((y + bh) * sy) - 1 - line)
            cv2.rectangle(out, top_left, bottom_right, c, line)
    return out
