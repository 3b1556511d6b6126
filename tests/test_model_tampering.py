"""Round-2 model-file attacks (issue 24, items 20-21): a model whose metadata was edited after
export is refused at open with one line; the graph carries a digest of its metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from edge_infer.errors import ModelError
from edge_infer.metadata import METADATA_DIGEST
from edge_infer.model import OnnxModel
from export.metadata_binding import bind_metadata

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "models" / "all_pbs_cnn.onnx"


@pytest.fixture(scope="module")
def proto() -> onnx.ModelProto:
    return onnx.load(str(BUNDLED))


def edited(proto, tmp_path: Path, rebind: bool = False, **changes) -> Path:
    """A copy of the bundled model with metadata values replaced (JSON text given)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for entry in copy.metadata_props:
        if entry.key in changes:
            entry.value = changes.pop(entry.key)
    for key, value in changes.items():  # keys the file does not have yet
        entry = copy.metadata_props.add()
        entry.key, entry.value = key, value
    if rebind:
        bind_metadata(copy)
    path = tmp_path / "edited.onnx"
    onnx.save(copy, str(path))
    return path


def props(proto) -> dict:
    return {p.key: json.loads(p.value) for p in proto.metadata_props}


def test_the_bundled_graph_carries_its_metadata_digest():
    assert METADATA_DIGEST in OnnxModel(BUNDLED).outputs


def test_classes_reordered_are_refused(proto, tmp_path):
    classes = props(proto)["classes"][::-1]
    with pytest.raises(ModelError, match="changed after export"):
        OnnxModel(edited(proto, tmp_path, classes=json.dumps(classes)))


@pytest.mark.parametrize(
    "codes",
    [
        {"status_code": ["out_of_distribution", "uncertain", "ok"]},  # not recognised -> ok
        {"status_code": ["ok", "ok", "ok"]},
        {"status_code": ["ok"]},  # too short: IndexError at the first image before
    ],
)
def test_status_codes_edited_are_refused_even_when_rebound(proto, tmp_path, codes):
    guards = props(proto)["guards"]
    guards["codes"] = {**guards["codes"], **codes}
    path = edited(proto, tmp_path, rebind=True, guards=json.dumps(guards))
    with pytest.raises(ModelError, match="codes differ"):
        OnnxModel(path)


def test_duplicate_class_names_are_refused(proto, tmp_path):
    classes = props(proto)["classes"]
    classes[2]["name"] = classes[3]["name"]
    path = edited(proto, tmp_path, rebind=True, classes=json.dumps(classes))
    with pytest.raises(ModelError, match="unique"):
        OnnxModel(path)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"scale": 0}, "scale"),
        ({"scale": -1}, "scale"),
        ({"channel_order": "BGR"}, "channel orders"),
        ({"mask_background": True}, "changed after export"),
    ],
)
def test_preprocessing_edited_is_refused(proto, tmp_path, change, words):
    spec = {**props(proto)["preprocess"], **change}
    with pytest.raises(ModelError, match=words):
        OnnxModel(edited(proto, tmp_path, preprocess=json.dumps(spec)))


@pytest.mark.parametrize("value", ["2.0", "NaN", "-0.1"])
def test_thresholds_out_of_range_are_refused(proto, tmp_path, value):
    path = edited(proto, tmp_path, rebind=True, uncertain_below=value)
    with pytest.raises(ModelError, match="uncertain_below"):
        OnnxModel(path)


def test_deeply_nested_metadata_is_one_line_exit_2(proto, tmp_path):
    path = edited(proto, tmp_path, rebind=True, provenance="[" * 100_000 + "]" * 100_000)
    r = subprocess.run(
        [sys.executable, "-m", "edge_infer", "info", "--model", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "nested too deeply" in r.stderr


def test_an_edited_file_is_refused_by_the_cli_in_one_line(proto, tmp_path):
    classes = props(proto)["classes"][::-1]
    path = edited(proto, tmp_path, classes=json.dumps(classes))
    r = subprocess.run(
        [sys.executable, "-m", "edge_infer", "classify", "--model", str(path), str(BUNDLED)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and "changed after export" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("value", ['{"Nope": 0.95}', '{"Benign": 1.5}'])
def test_class_thresholds_must_name_a_class_in_range(proto, tmp_path, value):
    path = edited(proto, tmp_path, rebind=True, uncertain_below_by_class=value)
    with pytest.raises(ModelError, match="uncertain threshold of"):
        OnnxModel(path)
