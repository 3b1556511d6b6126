"""How `Classifier.iter_predict` schedules its work over the cores: whole batches side by
side, decoding ahead of a multi-threaded network call, or one batch after another on one core,
always in input order with a bounded window in flight.

A mixin of `Classifier` (it uses the classifier's model, workers, `_load_and_prepare` and
`_infer`), kept apart so the public API reads without the scheduling.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from .model import usable_cpus
from .result import Outcome

if TYPE_CHECKING:
    from .classifier import Image

#: images per network call: measured here, batch 8 ran as fast as 32 (331 vs 352 images/s, within
#: noise) with 156 MB peak memory instead of 230 MB (onnxruntime's arena grows with the batch)
DEFAULT_BATCH = 8


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter), read lazily."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class Batching:
    """The scheduling half of `Classifier` (see the module's docstring)."""

    _pool: ThreadPoolExecutor | None
    _pool_lock: threading.Lock
    #: the CPUs this classifier may use, where the process's own affinity says more than it
    #: has (an actor given one CPU of a machine's several); None: the usable CPUs
    cpus: int | None = None

    def _schedule(
        self, items: Iterator[tuple[str, Image]], batch_size: int, tta: bool | None
    ) -> Iterator[Outcome]:
        """(name, input) pairs -> outcomes in input order, by one of the three ways
        (Classifier.iter_predict)."""
        if self.batches_side_by_side:
            yield from self._side_by_side(items, batch_size, tta)
            return
        if self.workers < 2 and (self.cpus or usable_cpus()) < 2:  # one core: nothing to overlap
            for chunk in _chunks(items, batch_size):
                yield from self._run_chunk(chunk, tta)
            return
        window = batch_size * self.prefetch_batches
        prepared = self._in_order(self._load_and_prepare, items, window)
        for chunk in _chunks(prepared, batch_size):
            yield from self._infer(chunk, tta)

    @property
    def batches_side_by_side(self) -> bool:
        """With one onnxruntime thread and several workers, each worker takes a whole batch
        (decode, preprocess, the graph) and the batches run side by side, one per core: no
        thread waits for another inside a batch (see _side_by_side)."""
        return self.model.threads == 1 and self.workers >= 2

    def _side_by_side(
        self, items: Iterator[tuple[str, Image]], batch_size: int, tta: bool | None
    ) -> Iterator[Outcome]:
        """Whole batches on the worker threads, results in input order, at most
        `prefetch_batches` batches per worker in flight. onnxruntime's `run` is thread-safe
        and, with one intra-op thread, runs on the calling thread, so two batches use two cores
        with nothing to synchronise; a batch split over two onnxruntime threads waits for the
        slower half at every operator (measured: python benchmarks/stages.py)."""
        window = self.workers * self.prefetch_batches
        calls = ((chunk, tta) for chunk in _chunks(items, batch_size))
        for outcomes in self._in_order(self._run_chunk, calls, window):
            yield from outcomes

    def _run_chunk(self, chunk: list[tuple[str, Image]], tta: bool | None) -> list[Outcome]:
        """Decode and preprocess each image straight into its row of the network's batch, then
        run the graph on it: no per-image tensor to allocate and stack."""
        size = self.meta.preprocess.input_size
        batch = np.empty((len(chunk), size, size, 3), np.float32)
        prepared = [
            self._load_and_prepare(name, image, batch[j]) for j, (name, image) in enumerate(chunk)
        ]
        return self._infer(prepared, tta, batch)

    #: batches decoded and preprocessed ahead of the one being inferred
    prefetch_batches = 2

    def _in_order(self, fn, calls: Iterable[tuple], window: int) -> Iterator:
        """fn(*args) for each args of `calls` on the worker threads, results in input order,
        at most `window` calls submitted ahead of the consumer (memory stays bounded)."""
        pool = self._executor()
        pending: deque[Future] = deque()
        for args in calls:
            pending.append(pool.submit(fn, *args))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max(1, self.workers), "edge-infer-prep")
        return self._pool

    def _map(self, fn, items: list) -> Iterable:
        """Per-image work on the worker threads when there is more than one image."""
        if len(items) < 2 or self.workers < 2:
            return map(fn, items)
        return self._executor().map(fn, items)
