"""`edge-infer classify --cases` on real images with the bundled model: the image records are
exactly those of a run without --cases, then one case record per folder (or mapped case)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_cli


@pytest.fixture
def slides(tmp_path, data):
    for name, cls in (("slide-1", "Pro"), ("slide-2", "Benign")):
        folder = tmp_path / name
        folder.mkdir()
        for p in sorted((data / "Original" / cls).glob("*.jpg"))[:6]:
            shutil.copy(p, folder / p.name)
    return tmp_path


def test_case_records_follow_unchanged_image_records(slides):
    folders = [slides / "slide-1", slides / "slide-2"]
    plain = run_cli("classify", *folders, "--format", "jsonl")
    with_cases = run_cli("classify", *folders, "--format", "jsonl", "--cases")
    assert with_cases.returncode == plain.returncode == 0, with_cases.stderr
    lines = with_cases.stdout.splitlines()
    assert lines[:12] == plain.stdout.splitlines()  # image records byte-identical
    cases = [json.loads(x) for x in lines[12:]]
    assert [c["kind"] for c in cases] == ["case", "case"]
    assert [c["case"] for c in cases] == [str(f) for f in folders]
    pro, benign = cases
    assert pro["images"] == 6 and pro["verdict"].startswith(("malignant", "mixed"))
    assert benign["verdict"].split(":")[0] in ("benign", "mixed", "insufficient")
    for c in cases:
        assert c["answered"] + c["uncertain"] + c["not_recognised"] + c["unreadable"] == 6


def test_cases_by_pattern_and_in_the_table(slides):
    r = run_cli("classify", slides, "-r", "--cases", "--case-pattern", r"slide-(\d)")
    assert r.returncode == 0, r.stderr
    tail = r.stdout.splitlines()[-2:]
    assert tail[0].startswith("case 1: ") and tail[1].startswith("case 2: ")
    bad = run_cli("classify", slides, "--case-pattern", "x")
    assert bad.returncode == 2 and "go with --cases" in bad.stderr
