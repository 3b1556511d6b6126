"""Each piece of the vocabulary (class names, status words, record fields, metadata keys) is
spelled, as a string literal, in at most one module of the runtime."""

from __future__ import annotations

import ast
import dataclasses
import re
from collections import defaultdict
from pathlib import Path

from edge_infer.metadata import ALL_PBS_CLASSES, SCHEMA_KEY, ModelMetadata
from edge_infer.result import NOT_RECOGNISED, RECORD_FIELDS, Reason, Status

RUNTIME = Path(__file__).resolve().parents[2] / "edge_infer"


def literals(path: Path) -> set[str]:
    """Every whole string literal in a Python or JavaScript file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".js":
        return {a or b for a, b in re.findall(r"\"([^\"\n]*)\"|'([^'\n]*)'", text)}
    return {
        node.value
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def vocabulary() -> set[str]:
    words = {c.name for c in ALL_PBS_CLASSES}
    words |= {s.value for s in Status} | {r.value for r in Reason} | {NOT_RECOGNISED}
    words |= set(RECORD_FIELDS) | {f.name for f in dataclasses.fields(ModelMetadata)}
    words.add(SCHEMA_KEY)
    return words


def test_each_word_is_spelled_in_one_runtime_module():
    where = defaultdict(list)
    files = sorted(RUNTIME.rglob("*.py")) + sorted(RUNTIME.rglob("*.js"))
    for f in files:
        for word in literals(f) & vocabulary():
            where[word].append(f.relative_to(RUNTIME).as_posix())
    repeated = {w: fs for w, fs in where.items() if len(fs) > 1}
    assert not repeated, repeated
