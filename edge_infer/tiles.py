"""One answer for an image read at another scale (edge_infer.image.scale): refused when it
shows less than one field, or made from its tiles when it shows several.

The tile rule, in words (a missed leukemia costs more than a review, so Benign is the hardest
answer to give):
1. Tiles with no stained cell say nothing; if no tile has one, the image has no cell.
2. If any tile with a cell is not recognised, the image is not recognised (that tile's reason):
   a field unlike the training images anywhere in the frame is not read.
3. If every tile with a cell gives the same class with status ok, the image gets that class,
   status ok.
4. Otherwise the image is uncertain ("the fields do not agree"), its class the malignant one
   most tiles gave (ties: the higher mean probability), Benign only if no tile gave a
   malignant class.
The image's probabilities are the mean over the tiles with a cell.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from types import MappingProxyType

import numpy as np

from .result import Prediction, Reason, Status


def refused(whole: Prediction, magnification: float) -> Prediction:
    """The network's answer on the whole image, not to be used: its cells are larger than one
    training field holds (rule of edge_infer.image.scale.plan)."""
    return dataclasses.replace(
        whole,
        status=Status.OUT_OF_DISTRIBUTION,
        reason=Reason.MAGNIFICATION,
        magnification=magnification,
    )


def combine(
    source: str,
    tiles: Sequence[Prediction],
    boxes: Sequence[tuple[int, int, int, int]],
    magnification: float,
    is_malignant: Callable[[str], bool],
    display: Callable[[str], str],
) -> Prediction:
    """The image's one answer from its tiles' answers (the rule in this module's docstring);
    the tiles' own answers stay in `tiles`."""
    kept = tuple(zip(boxes, tiles, strict=True))
    extra = dict(magnification=magnification, tiles=kept, cam=None, source=source)
    with_cell = [p for p in tiles if p.reason is not Reason.NO_CELL]
    if not with_cell:
        return dataclasses.replace(tiles[0], **extra)
    not_recognised = [p for p in with_cell if p.status is Status.OUT_OF_DISTRIBUTION]
    if not_recognised:
        return dataclasses.replace(not_recognised[0], **extra)
    classes = list(with_cell[0].probabilities)
    mean = np.mean([[p.probabilities[c] for c in classes] for p in with_cell], axis=0)
    labels = Counter(p.raw_label for p in with_cell)
    agreed = len(labels) == 1 and all(p.status is Status.OK for p in with_cell)
    malignant = [c for c in labels if is_malignant(c)]
    if agreed:
        label, status, reason = with_cell[0].raw_label, Status.OK, None
    else:
        pool = malignant or classes
        label = max(pool, key=lambda c: (labels.get(c, 0), mean[classes.index(c)]))
        status, reason = Status.UNCERTAIN, Reason.FIELDS_DISAGREE
    k = classes.index(label)
    return dataclasses.replace(
        with_cell[0],
        status=status,
        raw_label=label,
        display_label=display(label),
        confidence=float(mean[k]),
        probabilities=MappingProxyType({c: float(v) for c, v in zip(classes, mean, strict=True)}),
        reason=reason,
        ood_score=float(np.mean([p.ood_score or 0.0 for p in with_cell])),
        image_score=float(np.mean([p.image_score or 0.0 for p in with_cell])),
        cell_fraction=float(np.mean([p.cell_fraction or 0.0 for p in with_cell])),
        image_stats=None,
        **extra,
    )
