"""Field hardening, round 2 (issue 24, items 16-19, 22, 23): check-site and the terminal lines
against hostile names, folder loops, unreadable folders and outputs that would clobber files.
Real `edge-infer` processes, real folders, the bundled model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_infer.errors import ImageError
from edge_infer.image.decode import as_bgr_array
from edge_infer.site.rules import share_words
from export.metadata_binding import bind_metadata
from tests.conftest import BUNDLED, ROOT, run_cli
from tests.test_hardening import as_nobody, world_dir


def site_folder(root: Path, data: Path, n: int = 30) -> Path:
    site = root / "site"
    site.mkdir(parents=True)
    for p in sorted((data / "Original").glob("*/*.jpg"))[::70][:n]:
        shutil.copy(p, site / p.name)
    return site


def run_bytes(*args) -> subprocess.CompletedProcess:
    """`edge-infer ARGS` with byte-exact arguments and output (names that are not UTF-8)."""
    return subprocess.run(
        [sys.executable, "-m", "edge_infer", *args],
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


def test_16_names_that_are_not_utf8_are_escaped_and_the_report_written(tmp_path, data):
    site = site_folder(tmp_path, data)
    odd = os.fsencode(site) + b"/caf\xe9"
    os.mkdir(odd)
    src = sorted((data / "Original" / "Pro").glob("*.jpg"))[0].read_bytes()
    with open(odd + b"/r\xe9sum\xe9.jpg", "wb") as fh:
        fh.write(src)
    with open(os.fsencode(site) + b"/bad\xff.jpg", "wb") as fh:
        fh.write(b"not an image")
    report = tmp_path / "report.html"
    r = run_bytes(b"check-site", os.fsencode(site), b"--report", os.fsencode(report))
    assert r.returncode in (0, 3, 4), r.stderr
    html = report.read_text(encoding="utf-8")
    assert "\\udcff" in html or "bad" not in html  # the name, escaped, if shown at all
    assert b"Traceback" not in r.stderr


def test_16_a_failed_write_leaves_the_earlier_report_whole(tmp_path, data):
    site = site_folder(tmp_path, data)
    report = tmp_path / "out" / "site-check.html"
    report.parent.mkdir()
    assert run_cli("check-site", site, "--report", report).returncode in (0, 3, 4)
    before = report.read_bytes()
    # the JSON cannot be written (its folder is a file): the report is not left at 0 bytes
    (tmp_path / "blocker").write_text("a file")
    r = run_cli("check-site", site, "--report", report, "--json", tmp_path / "blocker" / "x.json")
    assert r.returncode == 2
    assert report.read_bytes() == before


def test_17_folder_loops_and_links_out_are_not_followed(tmp_path, data):
    site = site_folder(tmp_path, data, n=1)
    (site / "loop").symlink_to(site)
    (site / "deeper").mkdir()
    (site / "deeper" / "back").symlink_to(site)
    (site / "root").symlink_to("/")
    r = run_cli("check-site", site, "--report", tmp_path / "r.html", timeout=60)
    assert r.returncode == 2 and "1 images" in r.stderr, r.stderr  # not "42 images"
    # classify -r ends too, counts the image once and says the link out was not followed
    c = run_cli("classify", "-r", site, "--format", "jsonl", timeout=60)
    recs = [json.loads(x) for x in c.stdout.splitlines()]
    assert sum(x["status"] != "error" for x in recs) == 1
    assert any("outside" in (x.get("error") or "") for x in recs)


def test_17_thirty_images_and_a_loop_count_thirty(tmp_path, data):
    site = site_folder(tmp_path, data)
    (site / "loop").symlink_to(site)
    r = run_cli("check-site", site, "--report", tmp_path / "r.html", "--json", tmp_path / "r.json")
    assert r.returncode in (0, 3, 4), r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["n_images"] == 30


def test_18_a_folder_that_cannot_be_listed_is_said(tmp_path, data):
    base = world_dir(tmp_path / "lab")
    site = site_folder(base, data)
    for p in [site, *site.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    locked = site / "locked"
    locked.mkdir()
    shutil.copy(next(site.glob("*.jpg")), locked / "x.jpg")
    locked.chmod(0o700)  # root's: nobody cannot list it
    out = world_dir(base / "out")
    r = as_nobody("check-site", site, "--report", out / "r.html", "--json", out / "r.json")
    assert r.returncode in (3, 4), r.stderr
    figures = json.loads((out / "r.json").read_text())
    assert any(f["topic"] == "folders not read" for f in figures["findings"]), figures["findings"]
    assert "could not be listed" in r.stdout


def test_19_outputs_that_would_clobber_are_refused_before_any_work(tmp_path, data):
    site = site_folder(tmp_path, data)
    image = next(site.glob("*.jpg"))
    kept = image.read_bytes()
    r = run_cli("check-site", site, "--report", image)
    assert r.returncode == 2 and "inside the folder being checked" in r.stderr
    assert image.read_bytes() == kept
    lab_file = tmp_path / "notes.html"
    lab_file.write_text("<p>the lab's own page</p>")
    r = run_cli("check-site", site, "--report", lab_file)
    assert r.returncode == 2 and "not an earlier site check" in r.stderr
    assert lab_file.read_text() == "<p>the lab's own page</p>"
    same = tmp_path / "same.out"
    r = run_cli("check-site", site, "--report", same, "--json", same)
    assert r.returncode == 2 and "same file" in r.stderr
    r = run_cli("check-site", site, "--report", tmp_path / "missing" / "deep" / "r.html")
    assert r.returncode == 2 and "cannot write there" in r.stderr
    assert "checking" not in r.stderr


def test_22_control_characters_in_names_and_metadata_are_escaped(tmp_path):
    evil = tmp_path / "\x1b[2J\x1b[32mFits"
    evil.mkdir()
    r = run_cli("check-site", evil, "--report", tmp_path / "r.html")
    assert r.returncode == 2 and "\x1b" not in r.stderr and "\\x1b[2J" in r.stderr
    proto = onnx.load(str(BUNDLED))
    for entry in proto.metadata_props:
        if entry.key == "version":
            entry.value = json.dumps("evil\x1b[2J\rFits")
    bind_metadata(proto)
    model = tmp_path / "m.onnx"
    onnx.save(proto, str(model))
    r = run_cli("info", "--model", model)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\r" not in r.stdout and "\\x1b[2J" in r.stdout


def test_23_counts_are_never_rounded_to_zero():
    assert share_words(1, 1231) == "1 of 1,231 (<1%)"
    assert share_words(1230, 1231) == "1230 of 1,231 (>99%)"
    assert share_words(3, 10) == "3 of 10 (30%)"


def test_23_signed_arrays_are_refused_when_not_8_bit_levels_and_channels_first_said():
    with pytest.raises(ImageError, match="not 8-bit levels"):
        as_bgr_array(np.full((64, 64, 3), 300, np.int16))
    ok = as_bgr_array(np.full((64, 64, 3), 200, np.int16))
    assert ok.dtype == np.uint8 and int(ok[0, 0, 0]) == 200
    with pytest.raises(ImageError, match="channels-first"):
        as_bgr_array(np.zeros((3, 224, 224), np.uint8))


def test_23_an_unreadable_file_in_a_site_check_names_itself_once(tmp_path, data):
    site = site_folder(tmp_path, data)
    (site / "broken.jpg").write_bytes(b"\xff\xd8\xff nothing")
    run_cli("check-site", site, "--report", tmp_path / "r.html", "--json", tmp_path / "r.json")
    figures = json.loads((tmp_path / "r.json").read_text())
    broken = next(i for i in figures["images"] if i["path"].endswith("broken.jpg"))
    assert broken["headline"].count("broken.jpg") == 0, broken["headline"]
    sizes = [f for f in figures["findings"] if "size" in f["topic"].lower()]
    assert len(sizes) == len({f["topic"] for f in sizes})


def test_23_images_smaller_than_the_input_give_one_size_finding(tmp_path, data):
    import cv2

    site = tmp_path / "small"
    site.mkdir()
    for p in sorted((data / "Original").glob("*/*.jpg"))[::70][:30]:
        cv2.imwrite(str(site / (p.stem + ".png")), cv2.resize(cv2.imread(str(p)), (100, 100)))
    run_cli("check-site", site, "--report", tmp_path / "r.html", "--json", tmp_path / "r.json")
    topics = [f["topic"] for f in json.loads((tmp_path / "r.json").read_text())["findings"]]
    size_topics = [t for t in topics if "size" in t.lower() and "cell" not in t.lower()]
    assert len(size_topics) == 1, topics
