"""The public API: `Classifier().predict(image)`.

One instance holds one onnxruntime session; onnxruntime's `run` is thread-safe, so an instance
can be shared between threads (the web server does).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from . import model as _model
from .errors import EdgeInferError, ImageError
from .preprocess import (
    as_bgr_array,
    cell_fraction,
    dihedral,
    load_image,
    resize_to_input,
    to_tensor,
)

Image = str | Path | bytes | bytearray | memoryview | np.ndarray

#: images per network call: measured here, batch 8 ran as fast as 32 (331 vs 352 images/s, within
#: noise) with 156 MB peak memory instead of 230 MB (onnxruntime's arena grows with the batch)
DEFAULT_BATCH = 8

#: a result is exactly one of these
STATUS_OK = "ok"
STATUS_UNCERTAIN = "uncertain"
STATUS_OOD = "out_of_distribution"

OOD_MESSAGE = "not recognised: outside what this model was trained on; do not use this result"
IMAGE_OOD_MESSAGE = (
    "not recognised: colour, stain or sharpness unlike the training images "
    "(another stain, camera, magnification or focus?); do not use this result"
)
NO_CELL_MESSAGE = "no lymphocyte in view: no violet-stained cell found"
UNCERTAIN_MESSAGE = "uncertain: review by a specialist"


@dataclass(frozen=True)
class Prediction:
    """One classified image. `status` says which of label / uncertain / out of distribution."""

    source: str
    label: str
    confidence: float
    probabilities: MappingProxyType
    uncertain: bool
    out_of_distribution: bool
    ood_score: float | None
    image_score: float | None
    status: str
    message: str
    model: str

    ok = True

    def to_record(self) -> dict[str, Any]:
        return {
            "path": self.source,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "uncertain": self.uncertain,
            "out_of_distribution": self.out_of_distribution,
            "ood_score": None if self.ood_score is None else round(self.ood_score, 4),
            "image_score": None if self.image_score is None else round(self.image_score, 4),
            "status": self.status,
            "message": self.message,
            "model": self.model,
        }


@dataclass(frozen=True)
class Failure:
    """An input that could not be classified, with the reason."""

    source: str
    error: str

    ok = False

    def to_record(self) -> dict[str, Any]:
        return {"path": self.source, "error": self.error}


Outcome = Prediction | Failure


def _source_name(image: Image, index: int) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, np.ndarray):
        return f"<array {index}>"
    return f"<bytes {index}>"


class Classifier:
    """Benign / Early / Pre / Pro from a blood smear image, with calibrated confidence and an
    out-of-distribution guard; everything it needs is read from the ONNX model file."""

    def __init__(
        self,
        model: str | Path | None = None,
        threads: int | None = None,
        tta: bool = False,
        workers: int | None = None,
    ) -> None:
        self.session, self.info = _model.open_session(model, threads)
        self.tta = tta
        #: threads for decoding and preprocessing, beside onnxruntime's own
        self.workers = max(1, min(os.cpu_count() or 1, 4)) if workers is None else workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def version(self) -> str:
        return self.info.version

    def load(self, image: Image, name: str | None = None) -> np.ndarray:
        """Any accepted input -> 8-bit BGR, or ImageError."""
        if isinstance(image, np.ndarray):
            return as_bgr_array(image, name or "<array>")
        if isinstance(image, (str, Path, bytes, bytearray, memoryview)):
            return load_image(image, name)
        raise ImageError(name or "<input>", f"unsupported input type {type(image).__name__}")

    def predict(self, image: Image, tta: bool | None = None, name: str | None = None) -> Prediction:
        """Classify one image; raises ImageError for input that is not a usable image."""
        name = name or _source_name(image, 0)
        return self.predict_arrays([self.load(image, name)], [name], tta)[0]

    def predict_batch(
        self, images: Iterable[Image], tta: bool | None = None, batch_size: int = DEFAULT_BATCH
    ) -> list[Outcome]:
        """Classify many; a bad input becomes a Failure in its place, the rest go on."""
        return list(self.iter_predict(images, tta=tta, batch_size=batch_size))

    def iter_predict(
        self,
        images: Iterable[Image],
        tta: bool | None = None,
        batch_size: int = DEFAULT_BATCH,
        names: Iterable[str] | None = None,
    ) -> Iterable[Outcome]:
        """Like predict_batch, but yields outcomes in input order as batches finish, so memory
        stays bounded however many inputs there are."""
        name_iter = iter(names) if names is not None else None
        items = (
            (next(name_iter) if name_iter is not None else _source_name(image, i), image)
            for i, image in enumerate(images)
        )
        while chunk := list(itertools.islice(items, batch_size)):
            # decoding runs on the worker threads (OpenCV releases the GIL)
            loaded = list(self._map(lambda item: self._load_or_reason(*item), chunk))
            yield from self._flush(loaded, tta)

    def _load_or_reason(self, name: str, image: Image) -> tuple[str, np.ndarray | None, str]:
        try:
            return name, self.load(image, name), ""
        except EdgeInferError as exc:
            return name, None, getattr(exc, "reason", str(exc))

    def _map(self, fn, items: list) -> Iterable:
        """Per-image work on the worker threads when there is more than one image."""
        if len(items) < 2 or self.workers < 2:
            return map(fn, items)
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers, "edge-infer-prep")
        return self._pool.map(fn, items)

    def _flush(self, loaded, tta) -> list[Outcome]:
        good = [(name, img) for name, img, _ in loaded if img is not None]
        preds = iter(self.predict_arrays([g[1] for g in good], [g[0] for g in good], tta))
        return [Failure(name, err) if img is None else next(preds) for name, img, err in loaded]

    def predict_arrays(
        self, bgr_images: Sequence[np.ndarray], names: Sequence[str], tta: bool | None = None
    ) -> list[Prediction]:
        """The core: decoded BGR images -> predictions (one network call per batch)."""
        if not bgr_images:
            return []
        tta = self.tta if tta is None else tta
        prepared = list(self._map(self._prepare_one, list(bgr_images)))
        x = np.stack([p[0] for p in prepared])
        cells = [p[1] for p in prepared]
        image_scores = [p[2] for p in prepared]
        if tta:
            views = np.concatenate([dihedral(x, k) for k in range(8)])
            out = _model.run(self.session, self.info, views)
            n = len(x)
            probs = out["probabilities"].reshape(8, n, -1).mean(axis=0)
            scores = out["ood_score"].reshape(8, n).mean(axis=0) if "ood_score" in out else None
        else:
            out = _model.run(self.session, self.info, x)
            probs = out["probabilities"]
            scores = out["ood_score"].reshape(-1) if "ood_score" in out else None
        return [
            self._decide(
                names[i],
                probs[i],
                None if scores is None else float(scores[i]),
                cells[i],
                image_scores[i],
            )
            for i in range(len(x))
        ]

    def _prepare_one(self, img: np.ndarray) -> tuple[np.ndarray, float, float | None]:
        """Network input, stained-cell share and image-statistics score of one image."""
        spec, guard = self.info.spec, self.info.image_guard
        small = resize_to_input(img, spec)
        # the guard's statistics are defined on the unmasked image at its working size: reuse
        # the network's resized image when that is the same thing
        reuse = not spec.mask_background and guard is not None and guard.size == spec.input_size
        score = guard.score(small if reuse else img) if guard else None
        return to_tensor(small, spec), cell_fraction(img, spec), score

    def _decide(
        self,
        name: str,
        probs: np.ndarray,
        score: float | None,
        cell_fraction: float,
        image_score: float | None = None,
    ) -> Prediction:
        info = self.info
        k = int(np.argmax(probs))
        conf = float(probs[k])
        uncertain = conf < info.uncertain_below
        feature_ood = (
            score is not None and info.ood_threshold is not None and score > info.ood_threshold
        )
        image_ood = (
            image_score is not None
            and info.image_guard is not None
            and image_score > info.image_guard.threshold
        )
        no_cell = cell_fraction < info.spec.min_cell_fraction
        ood = feature_ood or no_cell or image_ood
        if ood:
            status = STATUS_OOD
            if no_cell:
                message = NO_CELL_MESSAGE
            elif image_ood and not feature_ood:
                message = IMAGE_OOD_MESSAGE
            else:
                message = OOD_MESSAGE
        elif uncertain:
            status, message = STATUS_UNCERTAIN, UNCERTAIN_MESSAGE
        else:
            status, message = STATUS_OK, ""
        return Prediction(
            source=name,
            label=info.classes[k],
            confidence=conf,
            probabilities=MappingProxyType(
                {c: float(p) for c, p in zip(info.classes, probs, strict=True)}
            ),
            uncertain=uncertain,
            out_of_distribution=ood,
            ood_score=score,
            image_score=image_score,
            status=status,
            message=message,
            model=info.version,
        )
