"""edge_infer.image (decoding, preprocessing) on real images and on every kind of bad input."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from edge_infer.errors import ImageError
from edge_infer.image.decode import as_bgr_array, load_image
from edge_infer.image.preprocess import dihedral, prepare
from edge_infer.image.segment import cell_fraction, segment
from edge_infer.image.spec import PreprocessSpec


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def palette_png(w: int = 64, h: int = 64) -> bytes:
    """An 8-bit palette PNG (OpenCV cannot write one)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
    plte = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255])
    rows = b"".join(b"\x00" + bytes([(x + y) % 3 for x in range(w)]) for y in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"PLTE", plte)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def bomb_png() -> bytes:
    """A PNG header claiming 100000 x 100000 pixels."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def encode(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def test_real_image_loads_as_bgr_uint8(sample_images):
    img = load_image(sample_images[0])
    assert img.dtype == np.uint8 and img.shape == (224, 224, 3)
    assert np.array_equal(img, cv2.imread(str(sample_images[0])))


def test_non_ascii_path(tmp_path, sample_images):
    p = tmp_path / "frottis sanguin é 血液.jpg"
    p.write_bytes(sample_images[0].read_bytes())
    assert load_image(p).shape == (224, 224, 3)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda img: encode(".png", cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)), "gray"),
        (lambda img: encode(".png", cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)), "bgra"),
        (lambda img: encode(".png", img.astype(np.uint16) * 257), "16-bit"),
        (lambda img: encode(".tiff", img.astype(np.uint16) * 257), "16-bit tiff"),
        (lambda img: palette_png(), "palette"),
        (lambda img: encode(".bmp", img), "bmp"),
    ],
)
def test_odd_formats_become_bgr_uint8(make, shape, sample_images):
    src = cv2.imread(str(sample_images[0]))
    out = load_image(make(src), name=shape)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    if shape == "16-bit":
        assert np.array_equal(out, src)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", "empty file"),
        (b"this is not an image at all\n" * 10, "not a supported image format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "PNG"),
        (bomb_png(), "pixel limit"),
    ],
)
def test_bad_bytes_raise_image_error_with_name(payload, reason):
    with pytest.raises(ImageError) as exc:
        load_image(payload, name="sample.jpg")
    assert str(exc.value).startswith("sample.jpg: ")
    assert reason in str(exc.value)


def test_truncated_jpeg(tmp_path, sample_images):
    data = sample_images[0].read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: truncated JPEG"):
        load_image(p)


def test_truncation_rule_on_every_cut_of_baseline_and_progressive_jpegs(sample_images):
    """A JPEG is truncated when its segments, walked from the start, stop before the
    end-of-image marker: every strict prefix of a baseline and a progressive file (several
    scans) is; the whole file, and the file with bytes appended after its end (an FF DA
    among them included), is not."""
    from edge_infer.image.decode import incomplete_reason

    img = load_image(sample_images[0])
    baseline = sample_images[0].read_bytes()
    progressive = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert progressive.count(b"\xff\xda") > 1
    for data in (baseline, progressive):
        cuts = [*range(2, len(data), 97), len(data) - 1]
        for blob in [data[:n] for n in cuts]:
            assert incomplete_reason(blob) is not None
        for blob in (data, data + b"\xff\xdaEXTRA", data + b"trailer"):
            assert incomplete_reason(blob) is None


def test_missing_directory_and_tiny(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="smaller than"):
        load_image(encode(".png", np.zeros((4, 4, 3), np.uint8)), name="tiny.png")


def test_array_inputs():
    assert as_bgr_array(np.zeros((64, 64), np.float32)).shape == (64, 64, 3)
    assert as_bgr_array(np.full((64, 64, 4), 7, np.uint8)).shape == (64, 64, 3)
    for bad in (np.zeros((64, 64, 5), np.uint8), np.zeros((0, 3)), np.zeros((64, 64), bool)):
        with pytest.raises(ImageError):
            as_bgr_array(bad)
    with pytest.raises(ImageError, match="pixel limit"):
        as_bgr_array(np.zeros((7000, 7000), np.uint8))


def test_spec_json_round_trip():
    spec = PreprocessSpec(input_size=160, mask_background=True, hue_min=120)
    assert PreprocessSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="unknown"):
        PreprocessSpec.from_json('{"input_size": 128, "bogus": 1}')


def test_prepare_single_and_batch(sample_images):
    imgs = [load_image(p) for p in sample_images[:3]]
    x = prepare(imgs[0])
    assert x.dtype == np.float32 and x.shape == (128, 128, 3)
    assert x.min() >= 0.0 and x.max() <= 1.0
    b = np.stack([prepare(img) for img in imgs])
    assert b.shape == (3, 128, 128, 3) and np.array_equal(b[0], x)
    masked = prepare(imgs[0], PreprocessSpec(mask_background=True))
    assert (masked == 0).mean() > (x == 0).mean()


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_prepare_into_a_batch_row_gives_the_same_values(sample_images, order):
    """The runtime writes each image into its row of the network's batch: bit for bit what
    prepare() returns on its own."""
    spec = PreprocessSpec(input_size=160, channel_order=order, normalise="white_patch")
    imgs = [load_image(p) for p in sample_images[:3]]
    rows = np.full((3, 160, 160, 3), np.nan, np.float32)
    for i, img in enumerate(imgs):
        assert np.shares_memory(prepare(img, spec, rows[i]), rows)
    assert np.array_equal(rows, np.stack([prepare(img, spec) for img in imgs]))


def test_dihedral_gives_8_distinct_transforms():
    x = np.arange(5 * 5 * 1, dtype=np.float32).reshape(5, 5, 1)
    views = [dihedral(x, k).tobytes() for k in range(8)]
    assert len(set(views)) == 8
    batch = np.stack([x, x + 1])
    assert np.array_equal(dihedral(batch, 5)[1], dihedral(x + 1, 5))


def test_segmentation_iou_on_real_sample(data):
    """Mean cleaned IoU against the authors' saved masks on 120 images from all classes."""
    from train.segcheck import compare

    rel = []
    for c in ("Benign", "Early", "Pre", "Pro"):
        files = sorted((data / "Original" / c).glob("*.jpg"))
        rel += [f.relative_to(data).as_posix() for f in files[:: len(files) // 30][:30]]
    assert len(rel) == 120
    scores = compare(data, rel, PreprocessSpec())
    assert np.mean(scores) >= 0.80, np.mean(scores)


def test_cell_check_finds_cells_on_real_images(sample_images):
    for p in sample_images:
        img = load_image(p)
        assert cell_fraction(img) >= PreprocessSpec().min_cell_fraction
        assert segment(img).dtype == bool
    blank = np.full((224, 224, 3), 235, np.uint8)
    assert cell_fraction(blank) == 0.0
