"""Field hardening (issue 14): what a lab's folders, cameras, shares and browsers do to the real
`edge-infer` processes. Each test reproduces one numbered finding with real files, real
processes and real sockets; the bundled model is used (no training needed)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_infer import Classifier, Failure
from edge_infer.image.decode import load_image
from edge_infer.io.fileops import durable_move
from tests.conftest import ROOT, jsonl, run_cli, start_cli, wait_for

WATCH_FAST = ("--settle", "0.3", "--interval", "0.1", "--heartbeat", "1")


def watch_once(folder, results, *extra, timeout=120) -> subprocess.CompletedProcess:
    return run_cli(
        "watch", folder, "--once", "--results", results, *WATCH_FAST, *extra, timeout=timeout
    )


@pytest.fixture
def images(sample_images) -> list[Path]:
    return sample_images[:3]


def run_measured(*args, timeout: float = 120) -> tuple[int, str, str, float]:
    """Run `edge-infer ARGS`, sampling its peak resident memory (VmHWM) while it runs:
    (returncode, stdout, stderr, peak MB)."""
    proc = start_cli(*args, stdout=subprocess.PIPE)
    peak, end = 0.0, time.time() + timeout
    while proc.poll() is None and time.time() < end:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        time.sleep(0.02)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err, peak


# ---------------------------------------------------------------- 1, 2: names
@pytest.mark.parametrize(
    "raw_name", [b"caf\xe9.jpg", "line\u2028sep.jpg".encode(), "nel\u0085x.jpg".encode()]
)
def test_1_2_undecodable_and_line_separator_names(tmp_path, images, raw_name):
    folder, results = tmp_path / "in", tmp_path / "r.jsonl"
    folder.mkdir()
    Path(os.fsdecode(os.fsencode(folder) + b"/" + raw_name)).write_bytes(images[0].read_bytes())
    (folder / "good.jpg").write_bytes(images[1].read_bytes())
    r = watch_once(folder, results)
    assert r.returncode == 0, r.stderr
    recs = jsonl(results)
    assert len(recs) == 2 and all(x["status"] != "error" for x in recs)
    assert os.fsdecode(raw_name) in {Path(x["path"]).name for x in recs}
    assert len(results.read_bytes().split(b"\n")) == 3  # two records, two lines
    r = watch_once(folder, results)  # the ledger reads back: nothing is redone
    assert r.returncode == 0, r.stderr
    assert len(jsonl(results)) == 2


# ---------------------------------------------------------------- 3, 12: big and odd files
def test_3_huge_file_is_refused_without_reading_it(tmp_path, images):
    folder, results = tmp_path / "in", tmp_path / "r.jsonl"
    folder.mkdir()
    with open(folder / "huge.jpg", "wb") as fh:  # sparse: 3 GB that cost no disk
        fh.write(images[0].read_bytes()[:1000])
        fh.truncate(3 * 1024**3)
    (folder / "good.jpg").write_bytes(images[1].read_bytes())
    rc, _, err, peak_mb = run_measured("watch", folder, "--once", "--results", results, *WATCH_FAST)
    assert rc == 0, err
    by = {Path(x["path"]).name: x for x in jsonl(results)}
    assert "over the" in by["huge.jpg"]["error"] and by["good.jpg"]["status"] != "error"
    assert peak_mb < 1000, peak_mb


def test_12_fifo_devices_and_bad_paths_become_error_records(tmp_path, images):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    long_name = tmp_path / ("x" * 300 + ".jpg")
    r = run_cli(
        "classify", fifo, "/dev/zero", long_name, images[0], "--format", "jsonl", timeout=60
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    by = {x["path"]: x for x in map(json.loads, r.stdout.splitlines())}
    assert "not a regular file" in by[str(fifo)]["error"]
    assert "not a regular file" in by["/dev/zero"]["error"]
    assert by[str(long_name)]["status"] == "error"
    assert by[str(images[0])]["status"] != "error"
    assert Classifier().predict_batch(["a\0b.jpg"])[0].ok is False  # NUL: a Failure, no abort


NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def as_nobody(*args, timeout=120) -> subprocess.CompletedProcess:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run as an unprivileged user")
    cmd = [*NOBODY, sys.executable, "-m", "edge_infer.cli", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": "/tmp"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", env=env)


def world_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for p in [path, *path.parents]:
        if p == Path("/"):
            break
        p.chmod(p.stat().st_mode | 0o711)
    path.chmod(0o777)
    return path


def test_12_unreadable_file_and_folders_as_an_unprivileged_user(tmp_path, images):
    base = world_dir(tmp_path / "lab")
    ok = base / "ok.jpg"
    ok.write_bytes(images[0].read_bytes())
    secret = base / "secret.jpg"
    secret.write_bytes(images[1].read_bytes())
    secret.chmod(0o000)
    locked = world_dir(base / "locked")
    (locked / "in.jpg").write_bytes(images[2].read_bytes())
    locked.chmod(0o700)
    r = as_nobody("classify", ok, secret, locked / "in.jpg", "--format", "jsonl")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    by = {x["path"]: x for x in map(json.loads, r.stdout.splitlines())}
    assert by[str(ok)]["status"] != "error"
    assert "permission denied" in by[str(secret)]["error"]
    assert by[str(locked / "in.jpg")]["status"] == "error"
    r = as_nobody("classify", base, "-r", "--format", "jsonl")
    by = {x["path"]: x for x in map(json.loads, r.stdout.splitlines())}
    assert "cannot list folder" in by[str(locked)]["error"]


# ---------------------------------------------------------------- 4: bombs
def tiff_bomb() -> bytes:
    entries = [(256, 4, 1, 30000), (257, 4, 1, 30000), (258, 3, 1, 16), (277, 3, 1, 3)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0" * 16000


def test_4_bombs_in_every_format_are_refused_before_decoding(tmp_path):
    files = {"bomb.tiff": tiff_bomb(), "bomb.jp2": b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 99}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    rc, out, _, peak_mb = run_measured(
        "classify", *(tmp_path / n for n in files), "--format", "jsonl"
    )
    by = {Path(x["path"]).name: x["error"] for x in map(json.loads, out.splitlines())}
    assert "pixel limit" in by["bomb.tiff"] and "not a supported image format" in by["bomb.jp2"]
    assert rc == 1 and peak_mb < 1000, peak_mb


# ---------------------------------------------------------------- 5, 6: the server
@pytest.fixture(scope="module")
def server():
    proc = start_cli("serve", "--port", "0", "--idle-timeout", "2")
    m = re.search(r"http://([\d.]+):(\d+)/", proc.stderr.readline())
    assert m
    yield proc, m.group(1), int(m.group(2))
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


def raw_request(host, port, data: bytes, timeout=30) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def post(host, port, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return raw_request(
        host,
        port,
        f"POST /api/classify HTTP/1.1\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{head}\r\n".encode()
        + body,
    )


def test_5_cross_origin_and_foreign_host_requests_are_refused(server, images):
    _, host, port = server
    body = images[0].read_bytes()
    own = f"{host}:{port}"
    assert post(host, port, body, {"Host": own, "Origin": f"http://{own}"}).startswith(
        b"HTTP/1.0 200"
    )
    for headers in (
        {"Host": own, "Origin": "http://evil.example"},
        {"Host": own, "Origin": "null"},
        {"Host": own, "Sec-Fetch-Site": "cross-site"},
        {"Host": "rebound.example:80"},
    ):
        reply = post(host, port, body, headers)
        assert reply.startswith(b"HTTP/1.0 403"), (headers, reply[:80])
    model = raw_request(host, port, f"GET /api/model HTTP/1.1\r\nHost: {own}\r\n\r\n".encode())
    assert str(ROOT).encode() not in model  # no absolute paths leak


def test_6_idle_connections_do_not_delay_others_and_are_closed(server):
    _, host, port = server
    idle = [socket.create_connection((host, port), timeout=10) for _ in range(200)]
    t = time.perf_counter()
    reply = raw_request(
        host, port, f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    )
    took = time.perf_counter() - t
    assert reply.startswith(b"HTTP/1.0 200"), reply[:60]
    closed = 0
    for s in idle:
        try:
            closed += s.recv(10) == b""  # the server closed it after --idle-timeout
        except OSError:
            closed += 1
        s.close()
    assert closed == len(idle)
    print(f"normal request beside 200 idle connections: {took * 1000:.0f} ms")


def test_6_client_disconnect_and_non_loopback_warning_and_sigterm(tmp_path, images):
    proc = start_cli("serve", "--host", "0.0.0.0", "--port", "0")
    lines = [proc.stderr.readline(), proc.stderr.readline()]
    assert any("WARNING" in x and "no authentication" in x for x in lines), lines
    port = int(re.search(r":(\d+)/", "".join(lines)).group(1))
    with socket.create_connection(("127.0.0.1", port)) as s:  # sends half a body, hangs up
        s.sendall(b"POST /api/classify HTTP/1.1\r\nContent-Length: 100000\r\n\r\nabc")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err, err


# ---------------------------------------------------------------- 7, 8, 11: the watcher's files
def test_7_a_stalled_copy_is_classified_once_when_complete(tmp_path, images):
    folder, results, failed = tmp_path / "in", tmp_path / "r.jsonl", tmp_path / "failed"
    folder.mkdir()
    data = images[0].read_bytes()
    proc = start_cli(
        "watch",
        folder,
        "--results",
        results,
        "--failed-dir",
        failed,
        *WATCH_FAST,
        "--retry-for",
        "30",
    )
    target = folder / "slow.jpg"
    with open(target, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        time.sleep(2.5)  # the copy stalls for many times --settle
        fh.write(data[len(data) // 2 :])
    wait_for(lambda: len(jsonl(results)) >= 1)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    recs = jsonl(results)
    assert len(recs) == 1 and recs[0]["status"] != "error", recs
    assert not failed.exists() or not any(failed.iterdir())


def test_8_a_transient_read_error_is_retried(tmp_path, images):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run as an unprivileged user")
    folder = world_dir(tmp_path / "in")
    results = world_dir(tmp_path / "out") / "r.jsonl"
    late = folder / "late.jpg"
    late.write_bytes(images[0].read_bytes())
    late.chmod(0o000)  # permissions applied late by the share
    args = ("watch", folder, "--results", results, *WATCH_FAST, "--retry-for", "60")
    cmd = [*NOBODY, sys.executable, "-m", "edge_infer.cli", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": "/tmp"}
    proc = subprocess.Popen(cmd, cwd="/", env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    late.chmod(0o644)
    wait_for(lambda: len(jsonl(results)) >= 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    recs = jsonl(results)
    assert len(recs) == 1 and recs[0]["status"] != "error", (recs, err)
    assert "retry" in err


def test_11_once_exits_with_a_zero_byte_image(tmp_path, images):
    folder, results = tmp_path / "in", tmp_path / "r.jsonl"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "good.jpg").write_bytes(images[0].read_bytes())
    r = watch_once(folder, results, timeout=60)
    assert r.returncode == 0, r.stderr
    by = {Path(x["path"]).name: x for x in jsonl(results)}
    assert by["empty.jpg"]["status"] == "error" and by["good.jpg"]["status"] != "error"


# ---------------------------------------------------------------- 9, 10: ledgers and moves
def test_9_a_second_watcher_refuses_to_start(tmp_path, images):
    folder, results = tmp_path / "in", tmp_path / "r.jsonl"
    folder.mkdir()
    first = start_cli("watch", folder, "--results", results, *WATCH_FAST)
    try:
        wait_for(lambda: Path(str(results) + ".lock").exists(), 30)
        time.sleep(0.5)
        r = run_cli("watch", folder, "--results", tmp_path / "other.jsonl", *WATCH_FAST)
        assert r.returncode == 2 and "already watched" in r.stderr
        other = tmp_path / "other"
        other.mkdir()
        r = run_cli("watch", other, "--results", results, *WATCH_FAST)
        assert r.returncode == 2 and "in use by another watcher" in r.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)


def test_10_results_file_deleted_while_running(tmp_path, images):
    folder, results = tmp_path / "in", tmp_path / "r.jsonl"
    folder.mkdir()
    proc = start_cli("watch", folder, "--results", results, *WATCH_FAST)
    (folder / "a.jpg").write_bytes(images[0].read_bytes())
    wait_for(lambda: len(jsonl(results)) == 1)
    results.unlink()  # log rotation, or a user cleaning up
    (folder / "b.jpg").write_bytes(images[1].read_bytes())
    wait_for(lambda: len(jsonl(results)) == 1)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert [Path(x["path"]).name for x in jsonl(results)] == ["b.jpg"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KB tmpfs: a disk that can be filled."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)])
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_10_full_disk_pauses_without_moving_or_losing(tmp_path, images, tiny_disk):
    folder, done = tmp_path / "in", tmp_path / "done"
    folder.mkdir()
    results = tiny_disk / "r.jsonl"
    filler = fill(tiny_disk)
    (folder / "a.jpg").write_bytes(images[0].read_bytes())
    proc = start_cli("watch", folder, "--results", results, "--done-dir", done, *WATCH_FAST)
    time.sleep(4)
    assert proc.poll() is None  # still running, paused
    assert (folder / "a.jpg").exists() and not (done / "a.jpg").exists()
    assert results.read_bytes() == b""  # no partial record left behind
    filler.unlink()  # space again: it resumes by itself
    wait_for(lambda: len(jsonl(results)) == 1, 30)
    wait_for(lambda: (done / "a.jpg").exists(), 30)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert "cannot write results" in err and "resuming" in err and "Traceback" not in err, err
    assert not (folder / "a.jpg").exists()


def test_10_a_device_as_results_file_is_refused(tmp_path):
    results = tmp_path / "r.jsonl"
    results.symlink_to("/dev/full")
    r = run_cli("watch", tmp_path, "--results", results, "--once", *WATCH_FAST, timeout=60)
    assert r.returncode == 2 and "not a regular file" in r.stderr


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)
    return filler


def test_10_a_full_done_dir_is_retried_to_the_same_name(tmp_path, images, tiny_disk):
    folder, results = tmp_path / "in", tmp_path / "r.jsonl"
    folder.mkdir()
    done = tiny_disk / "done"
    done.mkdir()
    filler = fill(tiny_disk)
    (folder / "a.jpg").write_bytes(images[0].read_bytes())
    proc = start_cli("watch", folder, "--results", results, "--done-dir", done, *WATCH_FAST)
    wait_for(lambda: len(jsonl(results)) == 1)
    time.sleep(2)  # many scans with a full disk
    assert sorted(p.name for p in done.iterdir()) == []  # no trail of new names
    filler.unlink()  # the disk is cleaned up
    wait_for(lambda: (done / "a.jpg").exists(), 30)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert sorted(p.name for p in done.iterdir()) == ["a.jpg"]
    assert (done / "a.jpg").read_bytes() == images[0].read_bytes()
    assert jsonl(results)[0]["moved_to"] == str(done / "a.jpg")
    assert len(jsonl(results)) == 1 and not (folder / "a.jpg").exists()


def test_10_a_cross_filesystem_move_is_durable(tmp_path, images, monkeypatch):
    src = tmp_path / "a.jpg"
    src.write_bytes(images[0].read_bytes())
    dest = tmp_path / "elsewhere" / "a.jpg"

    def exdev(a, b):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", exdev)
    durable_move(src, dest)
    assert not src.exists() and dest.read_bytes() == images[0].read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["a.jpg"]  # no temporary left


# ---------------------------------------------------------------- 13: the rest
def test_13_symlinked_folder_and_replaced_files(tmp_path, images):
    real, results = tmp_path / "real", tmp_path / "r.jsonl"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    (real / "a.jpg").write_bytes(images[0].read_bytes())
    assert watch_once(real, results).returncode == 0
    assert watch_once(link, results).returncode == 0  # the same folder, spelled otherwise
    assert len(jsonl(results)) == 1
    # same size, same mtime, other content (a camera reusing a name): classified again
    st = (real / "a.jpg").stat()
    other = bytearray(images[0].read_bytes())
    other[-100] ^= 0xFF
    tmp = real / ".new"
    tmp.write_bytes(bytes(other))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, real / "a.jpg")
    assert watch_once(real, results).returncode == 0
    recs = jsonl(results)
    assert len(recs) == 2 and recs[0]["sha256"] != recs[1]["sha256"]
    assert Counter(Path(x["path"]).is_absolute() for x in recs) == {True: 2}


def exif_rotated_jpeg(img: np.ndarray) -> bytes:
    """A JPEG whose EXIF orientation (6) says: rotate 90 degrees clockwise to display."""
    ok, buf = cv2.imencode(".jpg", img)
    data = buf.tobytes()
    ifd = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01"
    ifd += b"\x00\x06\x00\x00" + b"\x00\x00\x00\x00"
    app1 = b"Exif\x00\x00" + ifd
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def test_13_exif_orientation_is_the_same_for_paths_bytes_and_imread(tmp_path, images):
    img = load_image(images[0])[:, :200]  # not square, so a rotation shows
    path = tmp_path / "rotated.jpg"
    path.write_bytes(exif_rotated_jpeg(img))
    by_path, by_bytes = load_image(path), load_image(path.read_bytes())
    assert by_path.shape == by_bytes.shape == cv2.imread(str(path)).shape == (200, 224, 3)


def test_13_model_metadata_that_contradicts_the_graph_is_refused_at_open(tmp_path):
    import onnx

    from edge_infer import ModelError

    proto = onnx.load(str(ROOT / "models" / "all_pbs_cnn.onnx"))
    for p in proto.metadata_props:
        if p.key == "classes":
            p.value = json.dumps(json.loads(p.value)[:3])
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(ModelError, match="classes"):
        Classifier(bad)


def test_13_nul_in_a_path_is_a_failure():
    out = Classifier().predict_batch(["bad\0name.jpg"])
    assert isinstance(out[0], Failure) and "invalid path" in out[0].error
