"""deploy/: the systemd units' ExecStart command lines, run as written with the environment
file's settings (paths pointed at a temporary folder, the executable at this install)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, jsonl, wait_for

DEPLOY = ROOT / "deploy"
INSTALLED_PREFIX = "/opt/edge-infer/venv/bin/"
SITE_ROOT = "/srv/microscope"


def unit_settings(unit: Path) -> dict[str, str]:
    """The [Service] section's settings (one value per key; the last one wins)."""
    out: dict[str, str] = {}
    section = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


def environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads them (comments and blanks skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    return env


def expand(command: str, env: dict[str, str]) -> list[str]:
    """systemd's ExecStart expansion: `${VAR}` is one argument, `$VAR` splits on whitespace
    (and vanishes when empty)."""
    argv: list[str] = []
    for word in shlex.split(command):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            argv += env.get(whole.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def command_line(unit_name: str, overrides: dict[str, str], site: Path) -> list[str]:
    settings = unit_settings(DEPLOY / unit_name)
    assert settings["EnvironmentFile"] == "/etc/edge-infer/edge-infer.env"
    assert settings["Restart"] == "on-failure" and settings["User"] == "edge-infer"
    env = environment_file(DEPLOY / "edge-infer.env")
    env = {k: v.replace(SITE_ROOT, str(site)) for k, v in env.items()} | overrides
    argv = expand(settings["ExecStart"], env)
    assert argv[0] == INSTALLED_PREFIX + "edge-infer", "absolute path to the installed command"
    exe = Path(sys.executable).parent / "edge-infer"
    assert exe.exists(), "the test runs the installed `edge-infer` entry point"
    return [str(exe), *argv[1:]]


def test_watch_unit_classifies_and_stops_on_sigterm(tmp_path, sample_images):
    argv = command_line("edge-infer-watch.service", {}, tmp_path)
    assert argv[1] == "watch" and str(tmp_path / "inbox") in argv
    (tmp_path / "inbox").mkdir()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/"
    )
    try:
        for img in sample_images[:4]:
            shutil.copy(img, tmp_path / "inbox" / img.name)
        results = tmp_path / "results.jsonl"
        wait_for(lambda: len(jsonl(results)) == 4, timeout=90)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    recs = jsonl(results)
    assert {Path(r["path"]).name for r in recs} == {p.name for p in sample_images[:4]}
    assert all(r["status"] != "error" for r in recs)
    # the environment file's --done-dir, under the site folder: classified originals moved there
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == sorted(
        p.name for p in sample_images[:4]
    )
    # one log line per image on stderr (the journal), in the documented shape
    for img in sample_images[:4]:
        assert re.search(rf"{re.escape(img.name)} -> \S+", err), err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_unit_answers(tmp_path, sample_images):
    port = free_port()
    argv = command_line("edge-infer-serve.service", {"EDGE_INFER_PORT": str(port)}, tmp_path)
    assert argv[1:4] == ["serve", "--host", "127.0.0.1"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, cwd="/")
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return urllib.request.urlopen(url + "/healthz", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(up, timeout=60)
        req = urllib.request.Request(
            url + "/api/classify",
            data=sample_images[0].read_bytes(),
            headers={"Content-Type": "image/jpeg"},
            method="POST",
        )
        rec = json.loads(urllib.request.urlopen(req, timeout=30).read())
        assert rec["status"] in ("ok", "uncertain", "out_of_distribution")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_units_parse(tmp_path):
    """systemd's own parser finds no syntax error (it may still note the absent install)."""
    for unit in ("edge-infer-watch.service", "edge-infer-serve.service"):
        r = subprocess.run(
            ["systemd-analyze", "verify", str(DEPLOY / unit)],
            capture_output=True,
            text=True,
            env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
        )
        bad = [
            line
            for line in r.stderr.splitlines()
            if re.search(r"Unknown key|Unknown section|Invalid|Failed to parse", line)
        ]
        assert not bad, r.stderr
