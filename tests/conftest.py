"""Shared fixtures: the real dataset (skip outside CI when missing, fail in CI) and a tiny model
trained and exported once per test session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ALL_PBS_DATA", ROOT.parent / "shared" / "data" / "all-pbs"))
BUNDLED = ROOT / "models" / "all_pbs_cnn.onnx"


#: fixtures that train and export with TensorFlow: a test using one is in the `train` tier
TRAIN_FIXTURES = {"tiny_run", "tiny_onnx", "tiny_run_masked"}


def pytest_collection_modifyitems(items) -> None:
    """Each test in exactly one tier, from where it is and what it needs: tests/unit is `unit`;
    a test using a trained tiny model (or a train/export module that imports TensorFlow) is
    `train`; the rest, on the bundled model and the data, is `integration`."""
    for item in items:
        path = Path(str(item.fspath))
        if "unit" in path.parts:
            item.add_marker(pytest.mark.unit)
        elif TRAIN_FIXTURES & set(getattr(item, "fixturenames", ())) or path.name in TRAIN_FILES:
            item.add_marker(pytest.mark.train)
        else:
            item.add_marker(pytest.mark.integration)


#: test files that run TensorFlow themselves (training or export) without the tiny fixtures
TRAIN_FILES = {"test_train_export.py"}


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


ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}


def run_module(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m <args>` from the project root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=ENV,
    )


def run_cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real `edge-infer` CLI in a subprocess, to completion."""
    return run_module("edge_infer.cli", *args, timeout=timeout)


def start_cli(*args, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    """A long-running `edge-infer` command (watch, serve); stderr is piped for its log."""
    return subprocess.Popen(
        [sys.executable, "-m", "edge_infer.cli", *map(str, args)],
        cwd=ROOT,
        env=ENV,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(cond, timeout: float = 60.0) -> None:
    """Poll `cond` until it holds; fail after `timeout` seconds."""
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines results file (split on newlines only)."""
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_bytes().split(b"\n") if x.strip()]


def train_tiny(data: Path, out: Path, *extra, epochs=2, limit=12, batch=16, seed=3) -> Path:
    """`python -m train` on a tiny-width model and a few real images per class and split."""
    r = run_module(
        "train",
        "--data",
        data,
        "--out",
        out,
        "--epochs",
        epochs,
        "--limit",
        limit,
        "--width",
        "0.25",
        "--batch-size",
        batch,
        "--seed",
        seed,
        *extra,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return out


@pytest.fixture(scope="session")
def tiny_run(data: Path, tmp_path_factory) -> Path:
    """A tiny-width model trained for 2 epochs on a few dozen real images per split."""
    return train_tiny(data, tmp_path_factory.mktemp("runs") / "tiny")


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


def require_extra(module: str, extra: str):
    """An optional extra's module; missing: skipped outside CI, a failure in CI (which
    installs every extra the tests use)."""
    try:
        return __import__(module)
    except ImportError:
        msg = f'{module} is not installed (pip install -e ".[{extra}]")'
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI is set, so a missing extra is a failure")
        pytest.skip(msg, allow_module_level=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: the tests' Ray runs without token authentication (their cluster is on 127.0.0.1 only)
RAY_ENV = {**ENV, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="session")
def ray_address():
    """A real Ray head with 2 CPUs for the session (`ray start --head --block` in its own
    process group, so the teardown ends every process it started and nothing else); drivers
    join it with --address."""
    require_extra("ray", "ray")
    import signal

    port = free_port()
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=RAY_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        end = time.time() + 120
        while True:
            probe = subprocess.run(
                [ray_bin, "status", f"--address={address}"],
                env=RAY_ENV,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if probe.returncode == 0:
                break
            if head.poll() is not None or time.time() > end:
                raise RuntimeError(f"the Ray head did not start: {head.stderr.read()[-2000:]}")
            time.sleep(1)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
