"""The self-contained executable (deploy/build-executable.sh) in a Debian root that has no
Python at all (mmdebstrap --variant=minbase): classify, watch and serve give the venv install's
answers, and a double-click (no arguments) serves the page and opens the browser.

Slow and needs root (a chroot): it builds both (about 2 minutes here) and runs with
EDGE_TEST_EXE=1 (README, "A PC without Python"); EDGE_EXE_DIST and EDGE_EXE_ROOT reuse a
built executable folder and root."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import pytest

from edge_infer import Classifier
from tests.conftest import ROOT, run_cli
from train.dataset import read_manifest, select
from train.ood_eval import KINDS

pytestmark = pytest.mark.skipif(
    os.environ.get("EDGE_TEST_EXE") != "1",
    reason="builds the executable and a Debian root; set EDGE_TEST_EXE=1 (needs root)",
)


def _mounted(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A Python-less Debian root with the executable in /opt/edge-infer, /proc and /sys
    mounted (onnxruntime reads the CPU list from /sys)."""
    work = tmp_path_factory.mktemp("exe")
    dist = Path(os.environ.get("EDGE_EXE_DIST", work / "dist"))
    if not (dist / "edge-infer" / "edge-infer").exists():
        subprocess.run(
            ["bash", str(ROOT / "deploy" / "build-executable.sh"), str(dist)], check=True
        )
    base = Path(os.environ.get("EDGE_EXE_ROOT", work / "root"))
    if not (base / "usr" / "bin").is_dir():
        subprocess.run(["mmdebstrap", "--variant=minbase", "bookworm", str(base)], check=True)
    assert not list((base / "usr" / "bin").glob("python*")), "the root must have no Python"
    shutil.rmtree(base / "opt" / "edge-infer", ignore_errors=True)
    shutil.copytree(dist / "edge-infer", base / "opt" / "edge-infer", symlinks=True)
    for kind, src in (("proc", "proc"), ("sysfs", "sys")):
        if not _mounted(base / src):
            subprocess.run(["mount", "-t", kind, kind, str(base / src)], check=True)
    yield base
    for src in ("sys", "proc"):
        subprocess.run(["umount", str(base / src)], check=False)


def in_root(root: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["chroot", str(root), "/opt/edge-infer/edge-infer", *args],
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )


@pytest.fixture(scope="module")
def images(root: Path, data: Path) -> list[str]:
    """40 test-split images and 4 out-of-distribution ones as PNG, in the root's /data/in
    (names are the same inside and outside the root)."""
    folder = root / "data" / "in"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    test = select(read_manifest(ROOT / "splits" / "manifest.csv"), "test")
    real = [
        r for c in ("Benign", "Early", "Pre", "Pro") for r in [x for x in test if x.label == c][:10]
    ]
    for r in real:
        cv2.imwrite(str(folder / f"{Path(r.path).stem}.png"), cv2.imread(str(data / r.path)))
    import numpy as np

    rng = np.random.default_rng(0)
    for i, kind in enumerate(("grayscale", "x0.5 magnification", "x2 magnification", "noise")):
        src = cv2.imread(str(data / real[i * 9].path))
        cv2.imwrite(str(folder / f"ood-{i}.png"), KINDS[kind](src, rng))
    return sorted(p.name for p in folder.iterdir())


def by_name(lines: str) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in map(json.loads, lines.splitlines())}


def same_answers(got: dict[str, dict], want: dict[str, dict]) -> None:
    assert set(got) == set(want)
    for name, w in want.items():
        g = got[name]
        keys = ("verdict", "status", "label", "raw_label", "reason", "model")
        assert [g[k] for k in keys] == [w[k] for k in keys], name
        for cls, p in w["probabilities"].items():
            assert abs(g["probabilities"][cls] - p) <= 1e-6, (name, cls)


def test_classify_in_a_root_without_python_equals_the_venv(root, images) -> None:
    exe = in_root(root, "classify", "/data/in", "--format", "jsonl")
    assert exe.returncode == 0, exe.stderr
    venv = run_cli("classify", str(root / "data" / "in"), "--format", "jsonl")
    assert venv.returncode == 0, venv.stderr
    same_answers(by_name(exe.stdout), by_name(venv.stdout))
    assert len(by_name(exe.stdout)) == len(images) == 44


def test_watch_once_in_a_root_without_python(root, images) -> None:
    inbox = root / "data" / "inbox"
    shutil.rmtree(inbox, ignore_errors=True)
    shutil.copytree(root / "data" / "in", inbox)
    results = root / "data" / "watch.jsonl"
    results.unlink(missing_ok=True)
    exe = in_root(root, "watch", "/data/inbox", "--results", "/data/watch.jsonl", "--once")
    assert exe.returncode == 0, exe.stderr
    got = by_name(results.read_text())
    venv = run_cli("classify", str(root / "data" / "in"), "--format", "jsonl")
    same_answers(got, by_name(venv.stdout))


def test_serve_and_double_click_in_a_root_without_python(root, images, tmp_path) -> None:
    """`serve --port 0` answers like the library; with no arguments the executable serves on
    the default port and asks the browser (here a stand-in that records the address) to open
    the page."""
    name = images[0]
    body = (root / "data" / "in" / name).read_bytes()
    want = Classifier().predict(root / "data" / "in" / name).to_record()
    proc = subprocess.Popen(
        ["chroot", str(root), "/opt/edge-infer/edge-infer", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            m = re.search(r"http://127\.0\.0\.1:(\d+)/", proc.stderr.readline())
            port = int(m.group(1)) if m else None
        assert port, "serve did not say where it listens"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/api/classify", body=body, headers={"Content-Type": "image/png"})
        resp = conn.getresponse()
        got = json.loads(resp.read())
        assert resp.status == 200
        assert (got["status"], got["label"], got["reason"]) == (
            want["status"],
            want["label"],
            want["reason"],
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    opened = root / "tmp" / "opened"
    shutil.rmtree(opened, ignore_errors=True)
    # webbrowser runs $BROWSER with the address: mkdir makes the address a folder we can see
    click = subprocess.Popen(
        [
            "chroot",
            str(root),
            "/usr/bin/env",
            "BROWSER=/bin/mkdir -p /tmp/opened/%s",
            "/opt/edge-infer/edge-infer",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(opened.glob("http:/*")):
            time.sleep(0.2)
        assert list(opened.glob("http:/127.0.0.1:*")), "the browser was not asked to open the page"
    finally:
        click.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            click.wait(timeout=30)
