"""The Classifier API on real images, bad inputs, TTA, threads, and random junk (hypothesis)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_infer import Classifier, Failure, ImageError, Prediction
from edge_infer.result import Status


@pytest.fixture(scope="module")
def clf(tiny_onnx):
    return Classifier(tiny_onnx, threads=2)


def test_predict_accepts_path_bytes_and_array(clf, sample_images):
    p = sample_images[3]
    by_path = clf.predict(p)
    by_bytes = clf.predict(p.read_bytes())
    by_array = clf.predict(cv2.imread(str(p)))
    for other in (by_bytes, by_array):
        assert other.label == by_path.label
        assert abs(other.confidence - by_path.confidence) < 1e-6
    assert by_path.source == str(p)
    with pytest.raises(AttributeError):
        by_path.label = "Benign"  # immutable
    with pytest.raises(TypeError):
        by_path.probabilities["Benign"] = 1.0


def test_predict_batch_keeps_order_and_reports_failures(clf, sample_images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    items = [sample_images[0], bad, sample_images[1], b"", tmp_path / "gone.jpg"]
    out = clf.predict_batch(items, batch_size=2)
    assert [o.ok for o in out] == [True, False, True, False, False]
    assert isinstance(out[1], Failure) and "not a supported image format" in out[1].error
    rec = out[4].to_record()
    assert rec["path"] == str(tmp_path / "gone.jpg") and rec["error"] == "file not found"
    assert rec["status"] == "error" and rec["headline"] == "Could not classify: file not found"
    single = clf.predict(sample_images[1])
    assert out[2].label == single.label and abs(out[2].confidence - single.confidence) < 1e-6


def test_tta_averages_the_8_views(clf, sample_images):
    plain = clf.predict(sample_images[0])
    tta = clf.predict(sample_images[0], tta=True)
    assert abs(sum(tta.probabilities.values()) - 1) < 1e-5
    assert tta.label in clf.classes and plain.label in clf.classes


def test_blank_image_is_out_of_distribution(clf):
    p = clf.predict(np.full((224, 224, 3), 240, np.uint8))
    assert p.out_of_distribution and p.status == Status.OUT_OF_DISTRIBUTION
    assert p.label is None and p.raw_label in clf.classes
    assert p.headline.startswith("Not recognised: no violet-stained cell")


def test_one_instance_shared_between_threads(clf, sample_images):
    expected = {str(p): clf.predict(p).label for p in sample_images}
    errors = []

    def work():
        try:
            for p in sample_images:
                assert clf.predict(p).label == expected[str(p)]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_runtime_never_imports_tensorflow(tiny_onnx, sample_images):
    code = (
        "import sys, edge_infer\n"
        f"p = edge_infer.Classifier({str(tiny_onnx)!r}).predict({str(sample_images[0])!r})\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')]\n"
        "assert not bad, bad\n"
        "print(p.label)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("Benign", "Early", "Pre", "Pro")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=4096))
def test_random_bytes_give_a_result_or_our_error(clf, data):
    with contextlib.suppress(ImageError):
        assert isinstance(clf.predict(data), Prediction)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    arr=hnp.arrays(
        dtype=st.sampled_from(
            [np.uint8, np.uint16, np.float32, np.float64, np.int16, np.bool_, np.int64]
        ),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=80),
    )
)
def test_random_arrays_give_a_result_or_our_error(clf, arr):
    with contextlib.suppress(ImageError):
        assert isinstance(clf.predict(arr), Prediction)


@pytest.mark.parametrize(
    ("threads", "workers"),
    [(1, 2), (2, 2), (1, 1)],
    ids=["batches-side-by-side", "prefetch", "one-core"],
)
def test_pipelined_iter_predict_is_lazy_ordered_and_equal_to_one_by_one(
    tiny_onnx, sample_images, threads, workers, monkeypatch
):
    """Whole batches side by side on the workers (one onnxruntime thread), decoding and
    preprocessing ahead of a multi-threaded network call, or (one usable core) one batch after
    another filled in place: either way only a bounded window ahead, results in input order
    and equal to one-at-a-time predictions."""
    if workers == 1:
        monkeypatch.setattr("edge_infer.batching.usable_cpus", lambda: 1)
    clf = Classifier(tiny_onnx, threads=threads, workers=workers)
    assert clf.batches_side_by_side == (threads == 1 and workers == 2)
    inputs = [*sample_images, b"not an image", *sample_images]
    pulled = []

    def source():
        for i, item in enumerate(inputs):
            pulled.append(i)
            yield item

    stream = clf.iter_predict(source(), batch_size=4)
    first = next(iter(stream))
    window = 4 * clf.prefetch_batches * (clf.workers if clf.batches_side_by_side else 1)
    assert len(pulled) <= window + 4, "the input is read a bounded window ahead"
    rest = [first, *stream]
    assert [o.source for o in rest][:3] == [str(p) for p in sample_images[:3]]
    assert isinstance(rest[len(sample_images)], Failure)
    one_by_one = [clf.predict(p) for p in sample_images]
    for got, want in zip(rest[: len(sample_images)], one_by_one, strict=True):
        assert got.status is want.status and got.raw_label == want.raw_label
        assert got.confidence == pytest.approx(want.confidence, abs=1e-6)
        # float32 reductions inside the graph differ slightly with the batch size
        assert got.image_score == pytest.approx(want.image_score, rel=1e-3, abs=1e-5)


def test_thread_defaults_batches_side_by_side_and_latency_uses_the_cores(tiny_onnx):
    """Batch work (classify, watch, check-site) gets one onnxruntime thread per call and runs
    whole batches side by side on the workers; the server's latency setting gives one call
    every usable core (at most 4)."""
    from edge_infer.model import default_threads

    batch = Classifier(tiny_onnx)
    assert batch.model.threads == 1 and batch.workers == default_threads()
    assert batch.batches_side_by_side == (default_threads() >= 2)
    latency = Classifier(tiny_onnx, latency=True)
    assert latency.model.threads == default_threads()
    assert not latency.batches_side_by_side


@pytest.mark.skipif(not shutil.which("taskset"), reason="needs taskset (util-linux)")
def test_defaults_follow_one_usable_core_in_a_real_process():
    """Pinned to one CPU (`taskset -c 0`, the low-power profile), a new process's defaults do
    not oversubscribe it: one worker, one onnxruntime thread for batches and for the server."""
    code = (
        "from edge_infer import Classifier; c = Classifier(); "
        "print(c.workers, c.model.threads, Classifier(latency=True).model.threads)"
    )
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1"]
