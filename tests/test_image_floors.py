"""The bundled model's image floors: a blur far past the trained focus range is not recognised
by the graph and by the TTA path alike, and metadata naming a floor the runtime cannot apply is
refused."""

from __future__ import annotations

import dataclasses

import cv2
import pytest

from edge_infer import Classifier
from edge_infer.metadata import IMAGE_FLOORS, MetadataError
from edge_infer.model import OnnxModel
from edge_infer.result import Status


def test_a_floor_that_names_no_statistic_is_refused() -> None:
    meta = OnnxModel(threads=1).meta
    image = dict(meta.guards.image_stats or {})
    for bad in ({"no_such_stat": 1.0}, {image["stats"][0]: float("nan")}):
        guards = dataclasses.replace(meta.guards, image_stats={**image, IMAGE_FLOORS: bad})
        with pytest.raises(MetadataError, match="image floor"):
            dataclasses.replace(meta, guards=guards).validate()


def test_a_heavy_blur_is_not_recognised_with_or_without_tta(sample_images) -> None:
    """ood_eval's "defocus sigma 6" on the sample images: the graph and the TTA path give the
    same status and reason, and (nearly) all are not recognised (ood_eval: the share over the
    whole test split)."""
    clf = Classifier(threads=1)
    assert (clf.meta.guards.image_stats or {}).get(IMAGE_FLOORS), "the model has no floors"
    flagged = 0
    for path in sample_images:
        blurred = cv2.GaussianBlur(cv2.imread(str(path)), (0, 0), 6)
        plain = clf.predict(blurred)
        tta = clf.predict(blurred, tta=True)
        assert (tta.status, tta.reason) == (plain.status, plain.reason), path.name
        flagged += plain.status is Status.OUT_OF_DISTRIBUTION
    assert flagged >= len(sample_images) - 1
