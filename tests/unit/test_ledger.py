"""The watcher's ledger: torn records repaired, awkward names kept byte-exact, one writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_infer.result import Status
from edge_infer.watch.ledger import LedgerError, LedgerInUse, ResultsLedger
from tests.unit.test_result import CLASSES, prediction


def record(path: str, size: int = 10, mtime: int = 5) -> dict:
    rec = prediction(Status.OK, None).to_record()
    rec.update(
        path=path,
        sha256="ab" * 32,
        size=size,
        mtime_ns=mtime,
        inode=7,
        classified_at="2026-11-29T00:00:00+00:00",
        moved_to=None,
    )
    return rec


NAMES = ["plain.jpg", "caf\udce9.jpg", "line\u2028sep.jpg", "nel\u0085x.jpg", "new\nline.jpg"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_awkward_names_round_trip(tmp_path: Path, suffix: str):
    path = tmp_path / f"results{suffix}"
    led = ResultsLedger(path, CLASSES)
    for i, name in enumerate(NAMES):
        led.append(record(name, size=i))
    led.close()
    again = ResultsLedger(path, CLASSES)
    assert set(again.entries) == {(n, i, 5) for i, n in enumerate(NAMES)}
    again.close()


def test_torn_last_record_is_cut(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    led = ResultsLedger(path, CLASSES)
    led.append(record("a.jpg"))
    led.close()
    with open(path, "ab") as fh:
        fh.write(b'{"path": "b.jpg", "size": 1')
    led = ResultsLedger(path, CLASSES)
    assert list(led.entries) == [("a.jpg", 10, 5)]
    led.close()
    assert path.read_bytes().endswith(b"\n") and len(path.read_bytes().splitlines()) == 1


def test_second_writer_refused(tmp_path: Path):
    led = ResultsLedger(tmp_path / "r.jsonl", CLASSES)
    with pytest.raises(LedgerInUse):
        ResultsLedger(tmp_path / "r.jsonl", CLASSES)
    led.close()
    ResultsLedger(tmp_path / "r.jsonl", CLASSES).close()


def test_deleted_results_file_is_started_again(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    led = ResultsLedger(path, CLASSES)
    led.append(record("a.jpg"))
    path.unlink()
    led.append(record("b.jpg"))
    led.close()
    assert [json.loads(x)["path"] for x in path.read_text().splitlines()] == ["b.jpg"]


def test_csv_results_with_other_columns_are_refused(tmp_path: Path):
    path = tmp_path / "r.csv"
    path.write_text("path,label,confidence\na.jpg,Pro,0.9\n")
    with pytest.raises(LedgerError, match="other columns"):
        ResultsLedger(path, CLASSES)


def test_an_unusable_results_path_is_one_clear_error(tmp_path: Path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(LedgerError, match="cannot use results file"):
        ResultsLedger(tmp_path / "afile" / "r.jsonl", CLASSES)
