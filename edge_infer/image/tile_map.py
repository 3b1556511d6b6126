"""Pictures of an image read as tiles (edge_infer.image.scale): each tile outlined in the
colour of its own answer, so a reviewer sees which fields of a frame said what, and where to
look first when they disagree; and where the model looked for the image's answer, from the
class activation maps of the tiles that gave it."""

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


#: the longest side of a frame's CAM made for a thumbnail (the case report's)
THUMBNAIL_CAM_PX = 256


def tiles_extent(tiles: Sequence[tuple[tuple[int, int, int, int], Prediction]]) -> tuple[int, int]:
    """(height, width) the boxes span: the frame as saved (the tiles reach its edges)."""
    return (max(y + h for (_, y, _, h), _ in tiles), max(x + w for (x, _, w, _), _ in tiles))


def frame_cam(
    tiles: Sequence[tuple[tuple[int, int, int, int], Prediction]],
    label: str | None,
    shape: tuple[int, int] | None = None,
    saved: tuple[int, int] | None = None,
) -> np.ndarray | None:
    """Where the model looked for `label` (the image's answer) over the whole frame: each tile
    that gave that answer lays its own class activation map over its box, weighted by its
    probability of it (the most confident fields the hottest); tiles with another answer or
    no stained cell stay cold. `shape`: (height, width) of the map (default: THUMBNAIL_CAM_PX
    on the longest side); `saved`: the frame's size as saved, the pixels the boxes are in
    (default: the boxes' extent). None when no tile gave the answer with a CAM. A field
    padded at the frame's edge (shorter than one field) has its map stretched over its box."""
    saved = saved or tiles_extent(tiles)
    if shape is None:
        k = THUMBNAIL_CAM_PX / max(saved)
        shape = (max(1, round(saved[0] * k)), max(1, round(saved[1] * k)))
    h, w = shape
    sy, sx = h / saved[0], w / saved[1]
    heat = np.zeros((h, w), np.float32)
    drawn = False
    for (x, y, bw, bh), p in tiles:
        if label is None or p.cam is None or p.reason is Reason.NO_CELL or p.raw_label != label:
            continue
        x0, y0 = round(x * sx), round(y * sy)
        x1, y1 = min(w, round((x + bw) * sx)), min(h, round((y + bh) * sy))
        if x1 <= x0 or y1 <= y0:
            continue
        cam = np.clip(np.asarray(p.cam, np.float32), 0.0, 1.0)
        m = cv2.resize(cam, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        m *= float(p.probabilities[label])
        np.maximum(heat[y0:y1, x0:x1], m, out=heat[y0:y1, x0:x1])
        drawn = True
    if not drawn:
        return None
    top = float(heat.max())
    return heat / top if top > 0 else heat


def picture_cam(pred: Prediction) -> np.ndarray | None:
    """The CAM to lay over an image's picture: its own, or for a frame read as tiles the
    frame's (`frame_cam`, thumbnail size)."""
    if pred.tiles:
        return frame_cam(pred.tiles, pred.raw_label)
    return pred.cam
