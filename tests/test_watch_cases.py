"""`edge-infer watch --cases`: a per-case summary kept beside the results file, a log line when
a case's verdict changes, and after kill -9 a summary equal to a fresh computation from the
ledger. Real processes, real folders, the bundled model."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from edge_infer import Classifier
from edge_infer.cases import CaseDefinition, case_records
from tests.conftest import jsonl, run_cli, start_cli, wait_for

FAST = ("--settle", "0.2", "--interval", "0.1", "--heartbeat", "1")


def summary(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_case_summary_survives_kill_9_and_equals_the_ledger(tmp_path, data):
    inbox, results = tmp_path / "inbox", tmp_path / "results.jsonl"
    for slide in ("slide-1", "slide-2"):
        (inbox / slide).mkdir(parents=True)
    sources = {
        "slide-1": sorted((data / "Original" / "Pro").glob("*.jpg"))[:8],
        "slide-2": sorted((data / "Original" / "Benign").glob("*.jpg"))[:8],
    }
    proc = start_cli("watch", inbox, "-r", "--results", results, "--cases", *FAST)
    for i in range(8):
        for slide, files in sources.items():
            shutil.copy(files[i], inbox / slide / files[i].name)
        time.sleep(0.05)
    wait_for(lambda: len(jsonl(results)) >= 6, 60)
    proc.kill()  # kill -9, at whatever moment it is in
    proc.wait(timeout=30)
    r = run_cli("watch", inbox, "-r", "--results", results, "--cases", "--once", *FAST)
    assert r.returncode == 0, r.stderr
    recs = jsonl(results)
    assert len(recs) == 16
    cases_file = Path(str(results) + ".cases.jsonl")
    got = summary(cases_file)
    fresh = case_records(recs, CaseDefinition(), Classifier().meta)
    assert got == fresh
    assert {c["case"] for c in got} == {str(inbox / "slide-1"), str(inbox / "slide-2")}
    assert sum(c["images"] for c in got) == 16


def test_a_verdict_change_is_logged(tmp_path, data):
    inbox, results = tmp_path / "inbox", tmp_path / "r.jsonl"
    inbox.mkdir()
    for p in sorted((data / "Original" / "Pro").glob("*.jpg"))[:4]:
        shutil.copy(p, inbox / p.name)
    r = run_cli("watch", inbox, "--results", results, "--cases", "--once", *FAST)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if f"case {inbox}:" in x]
    # insufficient at first, then a verdict once three images are answered
    assert len(lines) >= 2 and "insufficient" in lines[0], lines
    assert summary(Path(str(results) + ".cases.jsonl"))[0]["images"] == 4
