"""The public API: `Classifier().predict(image)`.

One instance holds one onnxruntime session; onnxruntime's `run` is thread-safe, so an instance
can be shared between threads (the web server does).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .batching import DEFAULT_BATCH, Batching
from .errors import EdgeInferError, ImageError, ModelError
from .image import scale
from .image.decode import as_bgr_array, load_image, saved_size
from .image.preprocess import dihedral, field_to_input, resize_to_input, to_tensor
from .metadata import (
    CAM,
    CELL_FRACTION,
    IMAGE_SCORE,
    IMAGE_STATS,
    LABEL_INDEX,
    OOD_SCORE,
    PROBABILITIES,
    REASON_CODE,
    STATUS_CODE,
    ModelMetadata,
)
from .model import OnnxModel, default_threads
from .result import Failure, Outcome, Prediction, Reason, Status, decide
from .tiles import combine, refused

Image = str | Path | bytes | bytearray | memoryview | np.ndarray
#: (name, network input or None, error reason)
Prepared = tuple[str, "Input | None", str]


@dataclass(frozen=True)
class Refused:
    """An image shown at a scale the model does not read (edge_infer.image.scale): its
    network input (the graph still runs on it, for the record) and how many times larger its
    cells looked."""

    row: np.ndarray
    magnification: float


#: what preprocessing makes of one image: the network's input row, or another plan
Input = np.ndarray | Refused | scale.Tiles


def decide_as_graph(
    meta: ModelMetadata,
    probabilities: Sequence[float],
    cell_fraction: float,
    image_score: float,
    image_stats: Sequence[float],
    ood_score: float,
) -> tuple[int, Status, Reason | None]:
    """The graph's decision (`result.decide` with the metadata's thresholds) for outputs the
    graph did not decide itself: the TTA path's averaged probabilities, or train's sweeps."""
    guards = meta.guards
    return decide(
        [float(p) for p in probabilities],
        [meta.uncertain_threshold(c) for c in meta.class_names],
        no_cell=cell_fraction < meta.preprocess.min_cell_fraction,
        image_ood=guards.image_out_of_range(image_score, image_stats),
        feature_ood=guards.feature_threshold is not None and ood_score > guards.feature_threshold,
    )


def _source_name(image: Image, index: int) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, np.ndarray):
        return f"<array {index}>"
    return f"<bytes {index}>"


class Classifier(Batching):
    """Benign / Early / Pre / Pro from a blood smear image, with calibrated confidence and an
    out-of-distribution guard; everything it needs is read from the ONNX model file."""

    def __init__(
        self,
        model: str | Path | None = None,
        threads: int | None = None,
        tta: bool = False,
        workers: int | None = None,
        latency: bool = False,
    ) -> None:
        """`threads`: onnxruntime threads per network call. By default one, and the worker
        threads run whole batches side by side (throughput: `edge-infer classify` over 1000
        images 1.75-2.17 s against 2.22-2.76 s with two threads per call, alternated);
        `latency=True` (the server: one image at a time) gives each call every core instead."""
        if threads is None:
            threads = default_threads() if latency else 1
        self.model = OnnxModel(model, threads, spin_during_run=latency)
        self.tta = tta
        #: threads for decoding and preprocessing, beside onnxruntime's own
        self.workers = default_threads() if workers is None else workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"Classifier(model={self.version!r}, path={str(self.model.path)!r}, "
            f"classes={list(self.classes)}, input={self.meta.input.size}px, "
            f"threads={self.model.threads}, workers={self.workers}, tta={self.tta})"
        )

    @property
    def meta(self) -> ModelMetadata:
        return self.model.meta

    @property
    def classes(self) -> tuple[str, ...]:
        return self.meta.class_names

    @property
    def version(self) -> str:
        return self.meta.version

    def load(self, image: Image, name: str | None = None) -> np.ndarray:
        """Any accepted input -> 8-bit BGR, or ImageError."""
        if isinstance(image, np.ndarray):
            return as_bgr_array(image, name or "<array>")
        if isinstance(image, (str, Path, bytes, bytearray, memoryview)):
            return load_image(image, name)
        raise ImageError(name or "<input>", f"unsupported input type {type(image).__name__}")

    def predict(self, image: Image, tta: bool | None = None, name: str | None = None) -> Prediction:
        """Classify one image; raises ImageError for input that is not a usable image."""
        if not isinstance(image, (str, Path, bytes, bytearray, memoryview, np.ndarray)):
            raise TypeError(
                f"expected a path, encoded bytes or an array, not {type(image).__name__}"
            )
        name = name or _source_name(image, 0)
        return self.predict_arrays([self.load(image, name)], [name], tta)[0]

    def predict_batch(
        self, images: Iterable[Image], tta: bool | None = None, batch_size: int = DEFAULT_BATCH
    ) -> list[Outcome]:
        """Classify many; a bad input becomes a Failure in its place, the rest go on."""
        if isinstance(images, (str, Path, bytes, bytearray, memoryview, np.ndarray)):
            raise TypeError("predict_batch takes a list of images; use predict() for one")
        return list(self.iter_predict(images, tta=tta, batch_size=batch_size))

    def iter_predict(
        self,
        images: Iterable[Image],
        tta: bool | None = None,
        batch_size: int = DEFAULT_BATCH,
        names: Iterable[str] | None = None,
    ) -> Iterable[Outcome]:
        """Like predict_batch, but yields outcomes in input order as batches finish.

        Three ways, all in input order with a bounded number of batches in flight (memory
        stays bounded however many inputs there are): whole batches side by side on the
        worker threads (the default for batch work, see batches_side_by_side); with
        onnxruntime on several threads, the workers decode and preprocess the next images
        while the current batch runs (`prefetch_batches` batches ahead; OpenCV and
        onnxruntime release the GIL); on one usable core, one batch after another. Each
        image is written straight into its row of the network's batch where the batch is
        built on one thread (_run_chunk)."""
        name_iter = iter(names) if names is not None else None
        items = (
            (next(name_iter) if name_iter is not None else _source_name(image, i), image)
            for i, image in enumerate(images)
        )
        yield from self._schedule(items, batch_size, tta)

    def _load_and_prepare(self, name: str, image: Image, out: np.ndarray | None = None) -> Prepared:
        """Decode and preprocess one input (into `out` if given); a bad one keeps its reason."""
        try:
            return name, self._prepare_one(self.load(image, name), out), ""
        except (ImageError, ModelError) as exc:
            return name, None, exc.reason
        except EdgeInferError as exc:
            return name, None, str(exc)

    def _infer(
        self, chunk: list[Prepared], tta: bool | None, batch: np.ndarray | None = None
    ) -> list[Outcome]:
        """`batch`: the chunk's inputs already in one array (used as it is when every image of
        the chunk was readable)."""
        good = [(name, prep) for name, prep, _ in chunk if prep is not None]
        whole_rows = all(isinstance(g[1], np.ndarray) for g in good)
        use_batch = batch is not None and len(good) == len(chunk) and whole_rows
        inputs = batch if use_batch else [g[1] for g in good]
        preds = iter(self._predict_prepared(inputs, [g[0] for g in good], tta))
        return [Failure(name, err) if prep is None else next(preds) for name, prep, err in chunk]

    def predict_arrays(
        self, bgr_images: Sequence[np.ndarray], names: Sequence[str], tta: bool | None = None
    ) -> list[Prediction]:
        """Decoded BGR images -> predictions (one network call per batch)."""
        if not bgr_images:
            return []
        prepared = list(self._map(self._prepare_one, list(bgr_images)))
        return self._predict_prepared(prepared, names, tta)

    def _predict_prepared(
        self,
        prepared: Sequence[Input] | np.ndarray,
        names: Sequence[str],
        tta: bool | None = None,
    ) -> list[Prediction]:
        """Prepared inputs -> predictions: the rows read whole in one network call, an image
        refused at its scale with the graph's answer marked not to be used, an image of
        several fields from its tiles (edge_infer.tiles)."""
        if isinstance(prepared, np.ndarray) or all(isinstance(p, np.ndarray) for p in prepared):
            return self._predict_rows(prepared, names, tta)
        whole = [i for i, p in enumerate(prepared) if not isinstance(p, scale.Tiles)]
        rows = [p.row if isinstance(p, Refused) else p for p in (prepared[i] for i in whole)]
        out: dict[int, Prediction] = dict(
            zip(whole, self._predict_rows(rows, [names[i] for i in whole], tta), strict=True)
        )
        meta = self.meta
        for i, p in enumerate(prepared):
            if isinstance(p, Refused):
                out[i] = refused(out[i], p.magnification)
            elif isinstance(p, scale.Tiles):
                tile_names = [f"{names[i]} [tile {k + 1}]" for k in range(len(p.boxes))]
                answers = self._predict_rows(p.inputs, tile_names, tta)
                out[i] = combine(
                    names[i], answers, p.boxes, p.magnification, meta.is_malignant, meta.display
                )
        return [out[i] for i in range(len(prepared))]

    def _predict_rows(
        self,
        prepared: Sequence[np.ndarray] | np.ndarray,
        names: Sequence[str],
        tta: bool | None = None,
    ) -> list[Prediction]:
        """The core: network inputs (a list, or already one batch array) -> the graph, which
        classifies, scores both guards and decides; this only reads its outputs."""
        if len(prepared) == 0:
            return []
        tta = self.tta if tta is None else tta
        x = prepared if isinstance(prepared, np.ndarray) else np.stack(prepared)
        if not tta:
            out = self.model.run(x)
            return [self._from_graph(names[i], out, i) for i in range(len(x))]
        # test-time augmentation: average the network over the 8 views, then decide again with
        # the graph's rule (the image statistics and the stained share are the same in every
        # view: flips and quarter turns permute pixels and 2x2 blocks alike)
        n = len(x)
        out = self.model.run(np.concatenate([dihedral(x, k) for k in range(8)]))
        probs = out[PROBABILITIES].reshape(8, n, -1).mean(axis=0)
        ood = out[OOD_SCORE].reshape(8, n).mean(axis=0)
        meta = self.meta
        results = []
        for i in range(n):
            k, status, reason = decide_as_graph(
                meta,
                probs[i],
                float(out[CELL_FRACTION][i]),
                float(out[IMAGE_SCORE][i]),
                out[IMAGE_STATS][i],
                float(ood[i]),
            )
            results.append(
                self._prediction(names[i], probs[i], k, status, reason, float(ood[i]), out, i)
            )
        return results

    def _prepare_one(self, img: np.ndarray, out: np.ndarray | None = None) -> Input:
        """The network input of one image (the guards run inside the graph), into `out` if
        given; for a model with a scale rule, an image at another scale is refused or cut into
        tiles instead (edge_infer.image.scale.plan)."""
        spec = self.meta.preprocess
        saved = saved_size(img)
        img = np.asarray(img)
        small = resize_to_input(img, spec)
        if not spec.cell_diameter_share:
            return to_tensor(small, spec, out)
        m = scale.magnification(img, small, spec)
        plan = scale.plan(m, spec, img.shape)
        if plan is scale.Plan.TILES:
            return scale.tiles(
                img, m, spec, lambda field, row: field_to_input(field, spec, row), saved
            )
        row = to_tensor(small, spec, out)
        return Refused(row, m) if plan is scale.Plan.REFUSE else row

    def _from_graph(self, name: str, out: dict[str, np.ndarray], i: int) -> Prediction:
        """One image's outputs, the status and reason decoded with the metadata's codes."""
        codes = self.meta.guards.codes
        status = Status(codes[STATUS_CODE][int(out[STATUS_CODE][i])])
        reason_word = codes[REASON_CODE][int(out[REASON_CODE][i])]
        return self._prediction(
            name,
            out[PROBABILITIES][i],
            int(out[LABEL_INDEX][i]),
            status,
            Reason(reason_word) if reason_word else None,
            float(out[OOD_SCORE].reshape(-1)[i]),
            out,
            i,
        )

    def _prediction(
        self,
        name: str,
        probs: np.ndarray,
        k: int,
        status: Status,
        reason: Reason | None,
        ood: float,
        out: dict[str, np.ndarray],
        i: int,
    ) -> Prediction:
        meta = self.meta
        label = meta.classes[k].name
        return Prediction(
            source=name,
            status=status,
            raw_label=label,
            display_label=meta.display(label),
            confidence=float(probs[k]),
            probabilities=MappingProxyType(
                {c: float(p) for c, p in zip(self.classes, probs, strict=True)}
            ),
            reason=reason,
            ood_score=ood,
            image_score=float(out[IMAGE_SCORE][i]),
            model=meta.version,
            cell_fraction=float(out[CELL_FRACTION][i]),
            image_stats=tuple(float(v) for v in out[IMAGE_STATS][i]),
            cam=np.array(out[CAM][i]) if CAM in out else None,
        )
