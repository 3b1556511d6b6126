"""Images at another scale on the real model and real images: a mosaic of dataset fields and
a 5 MP frame are read as tiles at the training scale, a close-up and another lab's single-cell
crops are not recognised, and images at the training scale are answered as before."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_infer import Classifier
from edge_infer.image import scale
from edge_infer.image.preprocess import resize_to_input
from edge_infer.result import Reason, Status

from .conftest import BUNDLED, ROOT

OTHER_LABS = ROOT.parent / "shared" / "data" / "other-labs"


@pytest.fixture(scope="module")
def clf() -> Classifier:
    """The bundled model with a scale rule (the shipped one carries its own; the reference
    here is the training images' median reading, as train.scale_fit fits it)."""
    c = Classifier(BUNDLED)
    spec = c.meta.preprocess
    if not spec.cell_diameter_share:
        spec = dataclasses.replace(spec, cell_diameter_share=0.0947)
        c.model.meta = dataclasses.replace(c.meta, preprocess=spec)
    return c


@pytest.fixture(scope="module")
def fields(data: Path) -> list[np.ndarray]:
    paths = sorted((data / "Original" / "Pro").glob("*.jpg"))[:36]
    return [cv2.imread(str(p)) for p in paths]


def mosaic(images: list[np.ndarray], n: int) -> np.ndarray:
    return np.vstack([np.hstack(images[r * n : (r + 1) * n]) for r in range(n)])


def test_a_mosaic_of_fields_is_read_as_tiles(clf: Classifier, fields) -> None:
    img = mosaic(fields, 3)  # 672 px holding 9 training fields: cells at 1/3 of the scale
    p = clf.predict(img, name="mosaic")
    assert p.tiles is not None and len(p.tiles) >= 4
    assert 0.2 < p.magnification < 0.45
    rec = p.to_record()
    json.dumps(rec)  # the record stays JSON
    assert len(rec["tiles"]) == len(p.tiles)
    # never Benign for a field of Pro blasts: the tiles say Pro, or the image is for review
    assert p.raw_label == "Pro" or p.status is not Status.OK


def test_a_5mp_frame_is_never_answered_at_the_wrong_scale(clf: Classifier, fields) -> None:
    """A 2592 x 1944 frame whose cells are a third of the training scale (a lower
    magnification objective and a bigger sensor): tiles; the same frame as a close-up (cells
    three times larger): not recognised for its magnification."""
    wide = cv2.resize(
        mosaic(fields, 6)[: 6 * 224 * 3 // 4], (2592, 1944), interpolation=cv2.INTER_AREA
    )
    p = clf.predict(wide, name="frame")
    assert p.tiles is not None, "a wide frame must not be answered whole"
    assert all(b[2] > 0 and b[3] > 0 for b, _ in p.tiles)
    close = cv2.resize(fields[0][60:140, 60:160], (2592, 1944), interpolation=cv2.INTER_CUBIC)
    q = clf.predict(close, name="close-up")
    assert q.status is Status.OUT_OF_DISTRIBUTION and q.reason is Reason.MAGNIFICATION


def test_where_the_model_looked_in_a_frame_is_the_tiles_that_gave_its_answer(clf, data):
    """The frame's CAM (serve's cam_png, the case report's thumbnails): hot inside the tiles
    whose answer is the frame's, cold in every other tile, at the frame's own size. The frame:
    Benign fields above, Pro blasts below."""
    from edge_infer.image.tile_map import frame_cam

    benign = [cv2.imread(str(f)) for f in sorted((data / "Original" / "Benign").glob("*.jpg"))]
    pro = [cv2.imread(str(f)) for f in sorted((data / "Original" / "Pro").glob("*.jpg"))]
    both = mosaic(benign[:18] + pro[:18], 6)
    wide = cv2.resize(both[: 6 * 224 * 3 // 4], (2592, 1944), interpolation=cv2.INTER_AREA)
    p = clf.predict(wide, name="frame")
    assert p.tiles and all(t.cam is not None for _, t in p.tiles)
    heat = frame_cam(p.tiles, p.raw_label, (486, 648), (1944, 2592))
    assert heat.shape == (486, 648) and heat.max() == pytest.approx(1.0)
    gave = np.zeros(heat.shape, bool)
    for (x, y, w, h), t in p.tiles:
        if t.raw_label == p.raw_label and t.reason is not Reason.NO_CELL:
            gave[y // 4 : (y + h) // 4, x // 4 : (x + w) // 4] = True
    assert gave.any() and heat[~gave].max() < 1e-6  # cold where no tile gave the answer
    assert heat[gave].mean() > 0.05


@pytest.mark.parametrize("folder", ["ALL-IDB2_103px/blast", "Zheng2018_CellaVisionBlog/lymphocyte"])
def test_another_labs_single_cell_crops_are_refused_for_magnification(clf, folder) -> None:
    path = OTHER_LABS / folder
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    files = sorted(
        p for p in path.iterdir() if p.suffix.lower() in (".jpg", ".png", ".bmp", ".tif")
    )[:20]
    outcomes = clf.predict_batch(files)
    reasons = [o.reason for o in outcomes]
    assert all(o.status is Status.OUT_OF_DISTRIBUTION for o in outcomes)
    assert reasons.count(Reason.MAGNIFICATION) >= 0.8 * len(files), reasons


def test_images_at_the_training_scale_are_answered_as_before(clf, sample_images) -> None:
    plain = Classifier(BUNDLED)
    plain.model.meta = dataclasses.replace(
        clf.meta, preprocess=dataclasses.replace(clf.meta.preprocess, cell_diameter_share=0.0)
    )
    whole = 0
    for path in sample_images:
        img = cv2.imread(str(path))
        spec = clf.meta.preprocess
        m = scale.magnification(img, resize_to_input(img, spec), spec)
        if scale.plan(m, spec, img.shape) is not scale.Plan.WHOLE:
            continue
        whole += 1
        a, b = clf.predict(img), plain.predict(img)
        assert (a.status, a.raw_label, a.tiles) == (b.status, b.raw_label, None)
        assert a.probabilities == b.probabilities
        assert not math.isnan(m)
    assert whole >= len(sample_images) - 1


def test_the_cli_reads_a_full_frame_as_tiles_and_refuses_a_close_up(tmp_path, fields) -> None:
    """The shipped model through `edge-infer classify` (a real process): a 5 MP frame gets one
    record with its tiles (JSON lines) and a CSV row; a close-up is not recognised."""
    from .conftest import run_cli

    if not Classifier(BUNDLED).meta.preprocess.cell_diameter_share:
        pytest.skip("the bundled model has no scale rule")
    wide = cv2.resize(mosaic(fields, 6), (2592, 1944), interpolation=cv2.INTER_AREA)
    # a 4.5x close-up of one field (its red cells wider than a third of the image)
    close = cv2.resize(fields[1][80:130, 80:130], (1200, 1200), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "frame.png"), wide)
    cv2.imwrite(str(tmp_path / "close.png"), close)
    out = run_cli("classify", str(tmp_path), "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    recs = {Path(r["path"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    assert recs["frame.png"]["tiles"] and recs["frame.png"]["magnification"] < 0.55
    # the boxes are in the frame's own pixels (the decoder read a copy reduced to 1024 px)
    boxes = [t["box"] for t in recs["frame.png"]["tiles"]]
    assert max(x + w for x, _, w, _ in boxes) == 2592 and max(y + h for _, y, _, h in boxes) == 1944
    assert recs["close.png"]["reason"] == "magnification"
    assert recs["close.png"]["verdict"] == "not_recognised"
    csv = run_cli("classify", str(tmp_path), "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    assert "tiles" not in csv.stdout.splitlines()[0]


def test_the_reading_follows_the_zoom_on_real_fields(clf, data) -> None:
    """The red-cell reading is covariant: the same fields zoomed out (a wider field: cells
    half as large) or in (twice as large) read about half or twice as large (median over 24
    dataset images within 20%), with the per-image reading at the training scale near 1."""
    spec = clf.meta.preprocess
    paths = [
        p
        for c in ("Benign", "Early", "Pre", "Pro")
        for p in sorted((data / "Original" / c).glob("*.jpg"))[:6]
    ]
    ratios: dict[float, list[float]] = {0.5: [], 1.0: [], 2.0: []}
    for path in paths:
        img = cv2.imread(str(path))
        h, w = img.shape[:2]
        for zoom in ratios:
            if zoom == 1.0:
                view = img
            elif zoom < 1.0:  # a wider field at half the scale: 2 x 2 neighbouring fields
                view = cv2.resize(
                    np.vstack([np.hstack([img, img[:, ::-1]])] * 2),
                    (w, h),
                    interpolation=cv2.INTER_AREA,
                )
            else:  # the centre, twice as large
                view = cv2.resize(
                    img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4],
                    (w, h),
                    interpolation=cv2.INTER_CUBIC,
                )
            m = scale.magnification(view, resize_to_input(view, spec), spec)
            ratios[zoom].append(m / zoom)
    for zoom, r in ratios.items():
        finite = [v for v in r if math.isfinite(v) and v > 0]
        assert len(finite) >= 0.75 * len(r), (zoom, r)
        assert float(np.median(finite)) == pytest.approx(1.0, abs=0.2), (zoom, finite)


def test_boxes_are_in_the_frames_pixels_whichever_way_it_arrives(clf, fields) -> None:
    """A 5 MP frame given as a path, as encoded bytes or as the decoded image (what serve
    hands on): the tiles' boxes cover the frame as saved, 2592 x 1944."""
    from edge_infer.image.decode import load_image

    wide = cv2.resize(mosaic(fields, 6), (2592, 1944), interpolation=cv2.INTER_AREA)
    data = cv2.imencode(".jpg", wide, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    for given in (data, load_image(data, "frame.jpg"), wide):
        p = clf.predict(given, name="frame.jpg")
        assert p.tiles is not None
        boxes = [b for b, _ in p.tiles]
        assert max(x + w for x, _, w, _ in boxes) == 2592
        assert max(y + h for _, y, _, h in boxes) == 1944
