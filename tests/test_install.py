"""Installs as a lab would: the README's first line, as written, with Debian's own python3 in a
copy of the project; and the lowest dependency versions pyproject.toml declares.

Slow (fresh virtual environments, downloads), so it runs when CI is set or EDGE_TEST_VENV=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_infer import Classifier
from tests.conftest import BUNDLED, ROOT

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CI") or os.environ.get("EDGE_TEST_VENV")),
    reason="installs fresh virtual environments; set CI or EDGE_TEST_VENV=1",
)
tomllib = pytest.importorskip("tomllib")  # Python 3.11+
SYSTEM_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")


def readme_commands() -> list[str]:
    """The two command lines at the top of the README."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "the README starts with a bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def project_copy(dest: Path) -> Path:
    """The project's files as a clone has them (tracked and new, not ignored ones)."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def clean_env() -> dict[str, str]:
    """A login shell's environment: no active virtual environment, system paths first."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.mark.skipif(not SYSTEM_PYTHON, reason="no system python3")
def test_readme_first_line_installs_and_classifies(tmp_path, data):
    first = readme_commands()[0]
    assert first.startswith("python3 -m venv ") and "edge-infer classify" in first
    project = project_copy(tmp_path / "edge-infer")
    # the README's data path, relative to the project folder
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "all-pbs").symlink_to(data)
    r = subprocess.run(
        ["bash", "-c", first],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()  # pip's own output first, then the table
    start = next(i for i, line in enumerate(lines) if line.startswith("image "))
    header, *rows = lines[start:]
    n = len(list((data / "Original" / "Pro").glob("*.jpg")))
    assert header.split()[:2] == ["image", "verdict"] and len(rows) == n
    assert re.search(rf"{n} images: ", r.stderr)
    venv = project / ".venv" / "bin"
    frozen = subprocess.run(
        [str(venv / "pip"), "freeze"], capture_output=True, text=True, env=clean_env()
    ).stdout.lower()
    assert "tensorflow" not in frozen and "keras" not in frozen
    pinned = {
        line.split("==")[0].lower(): line.split("==")[1]
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for name, version in pinned.items():
        assert f"{name}=={version}" in frozen, f"{name} not at the constraints' {version}"
    info = subprocess.run([str(venv / "edge-infer"), "info", "--json"], capture_output=True)
    meta = json.loads(info.stdout)
    assert "site-packages" in meta["file"]
    card = Path(meta["file"]).with_name("README.md")
    assert card.exists(), "the model card is installed beside the bundled model"


def declared_minimums() -> list[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = []
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)(,<[0-9.]+)?", dep.replace(" ", ""))
        assert m, f"{dep}: every runtime dependency has a tested lower bound"
        out.append(f"{m.group(1)}=={m.group(2)}")
    return out


@pytest.mark.skipif(not BUNDLED.exists(), reason="needs the bundled model")
def test_lowest_declared_versions_give_the_same_results(tmp_path, data):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pins = tmp_path / "minimums.txt"
    pins.write_text("\n".join(declared_minimums()) + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    r = subprocess.run(
        [*pip, "-c", str(pins), str(ROOT), "pytest"],
        capture_output=True,
        text=True,
        timeout=1500,
        env=clean_env(),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    frozen = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze"], capture_output=True, text=True
    ).stdout.lower()
    for pin in declared_minimums():
        assert pin.lower() in frozen, pin
    images = [
        p
        for c in ("Benign", "Early", "Pre", "Pro")
        for p in sorted((data / "Original" / c).glob("*.jpg"))[20:30]
    ]
    r = subprocess.run(
        [str(venv / "bin" / "edge-infer"), "classify", *map(str, images), "--format", "jsonl"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in r.stdout.splitlines()]
    want = [o.to_dict() for o in Classifier().predict_batch(images)]
    assert [g["status"] for g in got] == [w["status"] for w in want]
    assert [g["label"] for g in got] == [w["label"] for w in want]
    worst = max(
        abs(g["probabilities"][k] - w["probabilities"][k])
        for g, w in zip(got, want, strict=True)
        for k in w["probabilities"]
    )
    assert worst <= 1e-4, worst
    # the fast unit tests (CLI options with the oldest click, formats, records) on the minimums
    r = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/unit",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:]
