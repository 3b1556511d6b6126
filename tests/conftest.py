"""Shared fixtures: the real dataset (skip outside CI when missing, fail in CI) and a tiny model
trained and exported once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ALL_PBS_DATA", ROOT.parent / "shared" / "data" / "all-pbs"))
BUNDLED = ROOT / "models" / "all_pbs_cnn.onnx"


def require_data() -> Path:
    if (DATA / "Original").is_dir():
        return DATA
    msg = f"dataset not found at {DATA} (set ALL_PBS_DATA)"
    if os.environ.get("CI"):
        pytest.fail(msg + "; CI is set, so a missing data folder is a failure")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def data() -> Path:
    return require_data()


@pytest.fixture(scope="session")
def sample_images(data: Path) -> list[Path]:
    """Three real images per class."""
    out = []
    for c in ("Benign", "Early", "Pre", "Pro"):
        out += sorted((data / "Original" / c).glob("*.jpg"))[5:8]
    return out


def run_module(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


@pytest.fixture(scope="session")
def tiny_run(data: Path, tmp_path_factory) -> Path:
    """A tiny-width model trained for 2 epochs on a few dozen real images per split."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    r = run_module(
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--limit",
        "12",
        "--width",
        "0.25",
        "--batch-size",
        "16",
        "--seed",
        "3",
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    r = run_module("train.guard", "--run", str(out), "--data", str(data))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return out


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run: Path, data: Path) -> Path:
    onnx_path = tiny_run.parent / "tiny.onnx"
    r = run_module(
        "export",
        "--run",
        str(tiny_run),
        "--out",
        str(onnx_path),
        "--data",
        str(data),
        "--parity-images",
        "48",
        "--min-parity-images",
        "48",
        "--version",
        "tiny-test",
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return onnx_path
