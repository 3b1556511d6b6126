"""train.shift_compare: reports of one split side by side; other splits refused."""

from __future__ import annotations

import json

import pytest

from train.shift_compare import SUMMARY, compare, main


def report(model: str, served: float, split: str = "val (split)", images: int = 439) -> dict:
    shift = {"shift": "lamp x1.25", "served": served, "uncertain": 0.1, "flagged": 0.05}
    return {
        "model": model,
        "split": split,
        "images": images,
        "summary": {k: served for k in SUMMARY},
        "shifts": [{**shift, "silent_errors": 0.0046}],
    }


def test_two_reports_side_by_side():
    lines = compare([report("a", 0.695), report("b", 0.711)])
    assert lines[0] == "val (split), 439 images: a | b"
    assert "0.6950  0.7110" in lines[1]
    assert lines[-1].split()[-2:] == ["0.695/0.100/0.050/0.0046", "0.711/0.100/0.050/0.0046"]


def test_reports_of_another_split_are_refused(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(report("a", 0.7)))
    b.write_text(json.dumps(report("b", 0.7, "val (group_split)", 506)))
    with pytest.raises(SystemExit):
        main([str(a), str(b)])
    assert "is not val (split)" in capsys.readouterr().err
