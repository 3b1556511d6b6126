"""The real `edge-infer` CLI in subprocesses, on real images."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from edge_infer.metadata import ALL_PBS_CLASSES
from edge_infer.result import RECORD_FIELDS
from tests.conftest import run_cli as cli


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, sample_images):
    d = tmp_path_factory.mktemp("mixed")
    for p in sample_images[:4]:
        (d / p.name).write_bytes(p.read_bytes())
    (d / "notes.jpg").write_text("a text file named .jpg")
    data = sample_images[4].read_bytes()
    (d / "cut.jpg").write_bytes(data[: len(data) // 3])
    (d / "readme.txt").write_text("ignored: not an image name")
    (d / ".hidden.jpg").write_bytes(data)
    return d


def test_classify_jsonl_reports_every_input(tiny_onnx, mixed_folder):
    r = cli("classify", str(mixed_folder), "--model", str(tiny_onnx), "--format", "jsonl")
    assert r.returncode == 1, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 6
    by_name = {Path(x["path"]).name: x for x in recs}
    assert "not a supported image format" in by_name["notes.jpg"]["error"]
    assert "truncated" in by_name["cut.jpg"]["error"]
    assert all(by_name[n]["status"] == "error" for n in ("notes.jpg", "cut.jpg"))
    good = [x for x in recs if x["status"] != "error"]
    assert len(good) == 4
    for x in good:
        assert set(x) == set(RECORD_FIELDS)
        assert x["model"] == "tiny-test"
        assert abs(sum(x["probabilities"].values()) - 1) < 1e-4
    assert "2 of 6 inputs could not be classified" in r.stderr


def test_classify_all_good_exits_0_and_matches_api(tiny_onnx, sample_images):
    from edge_infer import Classifier

    files = [str(p) for p in sample_images]
    r = cli("classify", *files, "--model", str(tiny_onnx), "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    api = Classifier(tiny_onnx)
    for row, f in zip(rows, files, strict=True):
        p = api.predict(f)
        assert row["path"] == f and row["label"] == (p.label or "")
        assert row["verdict"] == p.to_record()["verdict"]
        # batch 8 vs batch 1: the graph's float32 reductions differ slightly
        assert float(row["image_score"]) == pytest.approx(p.image_score, rel=1e-3, abs=1e-4)


def test_classify_table_is_readable(tiny_onnx, sample_images, tmp_path):
    short = tmp_path / "a.jpg"
    short.write_bytes(sample_images[0].read_bytes())
    files = [str(short), *map(str, sample_images[:3])]
    r = cli("classify", *files, "--model", str(tiny_onnx))
    assert r.returncode == 0
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["image", "verdict", "conf.", "note"]
    assert [row.split()[0] for row in rows] == files
    # the verdict column starts at the same place on every row, under its title
    col = header.index("verdict")
    assert all(row[col - 2 : col] == "  " and row[col] != " " for row in rows)
    assert all(row.split()[1] in ("Benign", "Early", "Pre", "Pro", "uncertain") for row in rows)
    # the end summary goes to stderr, by status
    assert re.search(r"4 images: .*\d+ (ok|uncertain)", r.stderr)


def test_excel_format_is_csv_with_a_byte_order_mark(tiny_onnx, sample_images):
    r = cli("classify", str(sample_images[0]), "--model", str(tiny_onnx), "--format", "excel")
    assert r.returncode == 0 and r.stdout.startswith("\ufeffpath,verdict,")
    assert r.stdout.count("\n") == 2


def test_usage_errors_exit_2(tiny_onnx, tmp_path):
    assert cli("classify").returncode == 2
    assert cli("classify", str(tmp_path), "--model", str(tiny_onnx)).returncode == 2
    assert cli("classify", "x.jpg", "--format", "xml").returncode == 2


@pytest.mark.parametrize("content", [b"", b"not a model", b"\x08\x01" * 100])
def test_bad_model_is_one_line_no_traceback(tmp_path, sample_images, content):
    m = tmp_path / "bad.onnx"
    m.write_bytes(content)
    r = cli("classify", str(sample_images[0]), "--model", str(m))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(m) in r.stderr


def test_info_and_segment(tiny_onnx, sample_images, tmp_path):
    r = cli("info", "--model", str(tiny_onnx))
    assert r.returncode == 0 and "tiny-test" in r.stdout and "Pro = Pro-B ALL" in r.stdout
    info = cli("info", "--model", str(tiny_onnx), "--json").stdout
    meta = json.loads(info)
    assert [c["name"] for c in meta["classes"]] == [c.name for c in ALL_PBS_CLASSES]
    assert len(info) < 20_000, "no bulky guard reference set in info --json"
    out = tmp_path / "overlay.png"
    r = cli("segment", str(sample_images[6]), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli("segment", str(tmp_path / "none.jpg"), "-o", str(out))
    assert r.returncode == 1 and "file not found" in r.stderr and "Traceback" not in r.stderr


def test_classify_on_a_full_disk_says_so_in_one_line(tiny_onnx, sample_images):
    """Results written to a full device: one line naming the cause and how far it got, exit 1,
    no traceback."""
    import subprocess
    import sys

    from tests.conftest import ENV, ROOT

    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [sys.executable, "-m", "edge_infer.cli", "classify", *map(str, sample_images)]
            + ["--model", str(tiny_onnx), "--format", "jsonl"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=ENV,
            timeout=120,
        )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert (
        f"cannot write the results (No space left on device) after 0 of {len(sample_images)}"
        in r.stderr
    )


def test_an_input_side_os_error_is_not_called_a_write_failure(
    tiny_onnx, sample_images, monkeypatch
):
    """Only the output's errors read "cannot write the results": an OSError that escapes the
    classifier (a defect: inputs' errors become error records) is not dressed up as one."""
    from click.testing import CliRunner

    from edge_infer.classifier import Classifier
    from edge_infer.cli import main

    def broken(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
        yield

    monkeypatch.setattr(Classifier, "iter_predict", broken)
    result = CliRunner().invoke(
        main, ["classify", str(sample_images[0]), "--model", str(tiny_onnx), "--format", "jsonl"]
    )
    assert isinstance(result.exception, PermissionError)
    assert "cannot write the results" not in result.output


def test_classify_into_a_closed_pipe_stops_quietly(tiny_onnx, sample_images):
    """`edge-infer classify ... | head -1`: the reader stops, classify stops without a
    traceback, with the exit status shell tools give on a closed pipe (141)."""
    import subprocess
    import sys

    from tests.conftest import ENV, ROOT

    # 480 records (~200 KB) cannot all fit in the pipe's buffer (64 KB): the writer must block
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_infer.cli", "classify", *map(str, sample_images * 40)]
        + ["--model", str(tiny_onnx), "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=ENV,
    )
    assert proc.stdout.readline().startswith(b"{")
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "Exception ignored" not in err


def test_batch_commands_run_opencv_single_threaded_the_server_does_not(tiny_onnx):
    """The batch commands own their process and give each worker thread a core, so OpenCV's
    own pool is switched off there (it competed with the other worker); the server's latency
    setting and library callers keep OpenCV as it is."""
    import cv2

    from edge_infer.cli import _classifier

    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        served = _classifier(str(tiny_onnx), None, latency=True)
        assert not served.batches_side_by_side and cv2.getNumThreads() == 2
        batch = _classifier(str(tiny_onnx), None)
        assert cv2.getNumThreads() == (1 if batch.batches_side_by_side else 2)
    finally:
        cv2.setNumThreads(before)
