"""The runtime installs and runs with no extras (no TensorFlow) in a fresh virtual environment.

Slow (it installs onnxruntime, OpenCV, numpy and click), so it runs when CI is set or
EDGE_TEST_VENV=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BUNDLED, ROOT

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CI") or os.environ.get("EDGE_TEST_VENV")),
    reason="installs a fresh venv; set CI or EDGE_TEST_VENV=1",
)


def test_plain_install_classifies_without_tensorflow(tmp_path, sample_images, tiny_onnx):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = venv / "bin" / "pip"
    r = subprocess.run(
        [str(pip), "install", "-q", str(ROOT)], capture_output=True, text=True, timeout=1200
    )
    assert r.returncode == 0, r.stderr[-3000:]
    frozen = subprocess.run([str(pip), "freeze"], capture_output=True, text=True).stdout.lower()
    assert "tensorflow" not in frozen and "keras" not in frozen
    model = [] if BUNDLED.exists() else ["--model", str(tiny_onnx)]
    exe = venv / "bin" / "edge-infer"
    r = subprocess.run(
        [str(exe), "classify", *map(str, sample_images[:4]), "--format", "jsonl", *model],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 4 and all("label" in x for x in recs)
    if BUNDLED.exists():
        info = subprocess.run([str(exe), "info", "--json"], capture_output=True, text=True)
        assert "site-packages" in json.loads(info.stdout)["file"]
    assert Path(exe).exists()
