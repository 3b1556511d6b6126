"""`edge-infer archive` on a real Ray (a head started for the session, drivers joining it with
--address, as on a cluster) over real dataset images: rows equal `edge-infer classify`'s
records, bad files are rows, a re-run skips what is done, a driver or a worker killed with -9
loses nothing and doubles nothing, and an S3 source and sink on a real S3-compatible server
(moto's, on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RAY_ENV, ROOT, free_port, require_extra, run_cli, wait_for
from tests.test_archive_block import png_bomb

pa = require_extra("pyarrow", "ray")
import pyarrow.dataset as pads  # noqa: E402


def version_dir() -> str:
    from edge_infer.model import OnnxModel

    return f"model={OnnxModel(threads=1).meta.version}"


def archive_cmd(*args, address: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edge_infer.cli",
        "archive",
        *map(str, args),
        "--address",
        address,
    ]


def run_archive(*args, address: str, env: dict | None = None, timeout: float = 600):
    return subprocess.run(
        archive_cmd(*args, address=address),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env or RAY_ENV,
    )


def rows(out: Path | str, filesystem=None) -> list[dict]:
    ds = pads.dataset(str(out), format="parquet", partitioning="hive", filesystem=filesystem)
    return ds.to_table().to_pylist()


def spread(data: Path, per_class: int, offset: int = 0) -> list[Path]:
    out = []
    for c in ("Benign", "Early", "Pre", "Pro"):
        files = sorted((data / "Original" / c).glob("*.jpg"))
        step = max(1, len(files) // per_class)
        out += files[offset::step][:per_class]
    return out


def part_files(out: Path) -> list[Path]:
    return sorted(out.glob(f"{version_dir()}/part-*.parquet"))


def test_rows_equal_classify_and_bad_files_are_rows(ray_address, data, tmp_path) -> None:
    images = spread(data, 10)
    odd = tmp_path / "odd names"
    odd.mkdir()
    (odd / "not an image.jpg").write_bytes(b"hello")
    (odd / "bomb.png").write_bytes(png_bomb())
    (odd / "empty.jpg").write_bytes(b"")
    (odd / "new\nline é.jpg").write_bytes(images[0].read_bytes())
    (odd / os.fsdecode(b"latin1-\xe9.jpg")).write_bytes(images[1].read_bytes())
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join([*map(str, images), "# a comment", "", str(odd), "/no/such.jpg"]))
    out = tmp_path / "out"
    r = run_archive(listing, "--out", out, address=ray_address)
    assert r.returncode == 1, r.stderr[-3000:]  # some inputs are errors
    assert "inputs:" in r.stderr and "4 error" in r.stderr
    got = {row["path"]: row for row in rows(out)}
    assert len(got) == len(images) + 6
    want = run_cli("classify", *images, "--format", "jsonl")
    for line in want.stdout.splitlines():
        rec = json.loads(line)
        row = got[os.path.abspath(rec["path"])]
        assert (row["status"], row["label"], row["reason"]) == (
            rec["status"],
            rec["label"],
            rec["reason"],
        )
        for cls, p in rec["probabilities"].items():
            assert abs(row[f"p_{cls}"] - p) <= 1e-6
        assert row["model"] == rec["model"] and row["record_schema"] == rec["record_schema"]
    errors = {Path(p).name: r for p, r in got.items() if r["status"] == "error"}
    assert set(errors) == {"not an image.jpg", "bomb.png", "empty.jpg", "such.jpg"}
    assert errors["such.jpg"]["error"] == "file not found" and errors["such.jpg"]["sha256"] is None
    assert "limit" in errors["bomb.png"]["error"] and errors["empty.jpg"]["error"] == "empty file"
    assert all(r["label"] is None and r["confidence"] is None for r in errors.values())
    # odd names are rows like any other: a newline kept, bytes that are not UTF-8 escaped
    assert str(odd / "new\nline é.jpg") in got
    assert str(odd / "latin1-\\xe9.jpg") in got
    assert got[str(odd / "latin1-\\xe9.jpg")]["status"] != "error"
    assert len({r["model_sha256"] for r in got.values()}) == 1


def test_a_rerun_does_only_what_is_new(ray_address, data, tmp_path) -> None:
    folder = tmp_path / "archive"
    (folder / "day1").mkdir(parents=True)
    first = spread(data, 3)
    for i, p in enumerate(first):
        (folder / "day1" / f"{i}.jpg").write_bytes(p.read_bytes())
    out = tmp_path / "out"
    r1 = run_archive(folder, "--out", out, address=ray_address)
    assert r1.returncode == 0, r1.stderr[-3000:]
    assert len(rows(out)) == len(first)
    # a new day's images, and one image replaced by other content under the same name
    (folder / "day2").mkdir()
    second = spread(data, 2, offset=7)
    for i, p in enumerate(second):
        (folder / "day2" / f"{i}.jpg").write_bytes(p.read_bytes())
    changed = folder / "day1" / "0.jpg"
    changed.write_bytes(second[0].read_bytes())
    r2 = run_archive(folder, "--out", out, address=ray_address)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert f"{len(first) - 1} already in the output" in r2.stderr
    got = rows(out)
    assert len(got) == len(first) + len(second) + 1
    assert len({(r["path"], r["sha256"]) for r in got}) == len(got)
    assert sum(r["path"] == str(changed) for r in got) == 2  # one row per content
    r3 = run_archive(folder, "--out", out, address=ray_address)
    assert r3.returncode == 0 and "none new" in r3.stderr, r3.stderr[-3000:]
    assert len(rows(out)) == len(got)


def _inputs(data: Path, n: int) -> list[str]:
    files = sorted((data / "Original").rglob("*.jpg"))
    return [str(p) for p in files[:: max(1, len(files) // n)][:n]]


def _assert_once(out: Path, inputs: list[str]) -> None:
    got = rows(out)
    paths = [r["path"] for r in got]
    assert len(paths) == len(set(paths)), "a row was written twice"
    assert set(paths) == set(inputs), f"{len(set(inputs) - set(paths))} inputs have no row"


def _start_long_run(data: Path, tmp_path: Path, address: str):
    """900 inputs, a file committed every block: (inputs, list file, output, the driver); the
    driver's stderr goes to tmp_path/driver.log (a pipe nobody reads could fill and stall it)."""
    inputs = _inputs(data, 900)
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join(inputs))
    out = tmp_path / "out"
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(
            archive_cmd(listing, "--out", out, "--rows-per-file", "40", address=address),
            cwd=ROOT,
            env=RAY_ENV,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    return inputs, listing, out, driver


def test_the_driver_killed_mid_run_loses_and_doubles_nothing(ray_address, data, tmp_path) -> None:
    inputs, listing, out, driver = _start_long_run(data, tmp_path, ray_address)
    try:
        wait_for(lambda: len(part_files(out)) >= 2 or driver.poll() is not None, timeout=300)
        assert driver.poll() is None, "the run ended before it could be killed"
        driver.kill()  # SIGKILL: no clean-up of any kind
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    done = len(rows(out))
    assert 0 < done < len(inputs)
    r = run_archive(listing, "--out", out, address=ray_address)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{done} already in the output" in r.stderr
    _assert_once(out, inputs)


def _worker_pids() -> list[int]:
    ps = subprocess.run(["pgrep", "-f", "MapWorker"], capture_output=True, text=True)
    return [int(p) for p in ps.stdout.split()]


def test_a_worker_killed_mid_run_loses_and_doubles_nothing(ray_address, data, tmp_path) -> None:
    inputs, _, out, driver = _start_long_run(data, tmp_path, ray_address)
    try:
        wait_for(lambda: len(part_files(out)) >= 1 or driver.poll() is not None, timeout=300)
        pids = _worker_pids()
        assert pids and driver.poll() is None, "no worker to kill"
        os.kill(pids[0], signal.SIGKILL)
        driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    _assert_once(out, inputs)


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3-compatible server on 127.0.0.1 (a real HTTP server, not a mock of our code)."""
    require_extra("moto", "dev")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    import socket

    def up() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(up, timeout=60)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_an_s3_source_and_sink(ray_address, s3_server, data, tmp_path, monkeypatch) -> None:
    import boto3
    import pyarrow.fs as pafs

    for k, v in s3_server.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="smears")
    images = spread(data, 4)
    for i, p in enumerate(images):
        s3.put_object(Bucket="smears", Key=f"lab1/2024/{i:03d} {p.name}", Body=p.read_bytes())
    s3.put_object(Bucket="smears", Key="lab1/2024/broken.jpg", Body=b"\xff\xd8 not a jpeg")
    s3.put_object(Bucket="smears", Key="lab1/notes.txt", Body=b"not listed: not an image name")
    env = {**RAY_ENV, **s3_server}
    r = run_archive(
        "s3://smears/lab1", "--out", "s3://smears/results", address=ray_address, env=env
    )
    assert r.returncode == 1, r.stderr[-3000:]
    fs = pafs.S3FileSystem(endpoint_override=s3_server["AWS_ENDPOINT_URL"])
    got = {row["path"]: row for row in rows("smears/results", filesystem=fs)}
    assert len(got) == len(images) + 1
    assert got["s3://smears/lab1/2024/broken.jpg"]["status"] == "error"
    want = run_cli("classify", *images, "--format", "jsonl")
    for i, line in enumerate(want.stdout.splitlines()):
        rec = json.loads(line)
        row = got[f"s3://smears/lab1/2024/{i:03d} {images[i].name}"]
        assert (row["status"], row["label"], row["reason"]) == (
            rec["status"],
            rec["label"],
            rec["reason"],
        )
        assert all(abs(row[f"p_{c}"] - p) <= 1e-6 for c, p in rec["probabilities"].items())
    again = run_archive(
        "s3://smears/lab1", "--out", "s3://smears/results", address=ray_address, env=env
    )
    assert "none new" in again.stderr, again.stderr[-3000:]
    assert len(rows("smears/results", filesystem=fs)) == len(got)


def test_without_the_extra_the_command_says_how_to_get_it(tmp_path) -> None:
    shadow = tmp_path / "no-ray" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**RAY_ENV, "PYTHONPATH": f"{shadow.parent}{os.pathsep}{ROOT}"}
    r = subprocess.run(
        [sys.executable, "-m", "edge_infer.cli", "archive", str(tmp_path), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert r.returncode == 1
    want = "Error: archive needs the ray extra (No module named 'ray'): "
    assert r.stderr.strip().splitlines() == [want + 'pip install "edge-infer[ray]"']


def test_a_new_model_writes_beside_the_old(ray_address, tiny_onnx, data, tmp_path) -> None:
    from edge_infer.model import OnnxModel

    images = spread(data, 2)
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join(map(str, images)))
    out = tmp_path / "out"
    assert run_archive(listing, "--out", out, address=ray_address).returncode == 0
    r = run_archive(listing, "--out", out, "--model", tiny_onnx, address=ray_address)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 already in the output" in r.stderr  # the other model's rows do not count
    tiny = OnnxModel(tiny_onnx, threads=1)
    got = rows(out)
    assert {r["model"] for r in got} == {version_dir()[len("model=") :], tiny.meta.version}
    assert len(got) == 2 * len(images)
    mine = [r for r in got if r["model"] == tiny.meta.version]
    assert {r["model_sha256"] for r in mine} == {tiny.sha256}
