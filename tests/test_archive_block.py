"""edge_infer.archive.SmearClassifier, the map_batches building block, on real images and the
bundled model (no Ray needed for the block itself): one row per input, the classify record's
answers, a bad file or a bomb a row with its error, the same column types in every batch."""

from __future__ import annotations

import hashlib
import json
import zlib

import numpy as np
import pytest

from edge_infer.archive import ARCHIVE_FIELDS, SmearClassifier
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def block() -> SmearClassifier:
    return SmearClassifier(threads=1)


def png_bomb() -> bytes:
    """A PNG header claiming 60000 x 60000 px (over the decoded-size limit)."""
    ihdr = b"IHDR" + (60000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    crc = zlib.crc32(ihdr).to_bytes(4, "big")
    return b"\x89PNG\r\n\x1a\n" + len(ihdr[4:]).to_bytes(4, "big") + ihdr + crc


def test_rows_equal_the_cli_records(block, sample_images) -> None:
    batch = {
        "bytes": np.array([p.read_bytes() for p in sample_images], dtype=object),
        "path": np.array([str(p) for p in sample_images], dtype=object),
    }
    out = block(batch)
    assert set(out) == set(block.fields) and all(len(v) == len(sample_images) for v in out.values())
    cli = run_cli("classify", *map(str, sample_images), "--format", "jsonl")
    want = [json.loads(line) for line in cli.stdout.splitlines()]
    for i, rec in enumerate(want):
        assert out["path"][i] == rec["path"]
        assert (out["status"][i], out["label"][i], out["reason"][i]) == (
            rec["status"],
            rec["label"],
            rec["reason"],
        )
        for cls, p in rec["probabilities"].items():
            assert abs(out[f"p_{cls}"][i] - p) <= 1e-6
        assert out["sha256"][i] == hashlib.sha256(sample_images[i].read_bytes()).hexdigest()
        assert out["size"][i] == sample_images[i].stat().st_size
    assert len(set(out["model_sha256"])) == 1 and len(out["model_sha256"][0]) == 64


def test_a_bad_file_and_a_bomb_are_rows_with_their_error(block, sample_images) -> None:
    names = [str(sample_images[0]), "archive/not an image.jpg", "archive/bomb.png", "odd\nname.jpg"]
    blobs = [sample_images[0].read_bytes(), b"hello", png_bomb(), b""]
    out = block({"bytes": np.array(blobs, dtype=object), "path": np.array(names, dtype=object)})
    assert list(out["path"]) == names
    assert out["status"][0] != "error"
    assert list(out["status"][1:]) == ["error"] * 3
    assert all(isinstance(e, str) and e for e in out["error"][1:])
    assert np.isnan(out["confidence"][1]) and out["label"][1] is None
    # the same column types whatever the batch holds (one Arrow schema for every block)
    good = block(
        {"bytes": np.array(blobs[:1], dtype=object), "path": np.array(names[:1], dtype=object)}
    )
    assert {k: v.dtype for k, v in good.items()} == {k: v.dtype for k, v in out.items()}
    assert all(f in out for f in ARCHIVE_FIELDS)
