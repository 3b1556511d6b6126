"""`edge-infer watch` as a real process on a real folder while another process writes into it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from edge_infer import Classifier
from tests.conftest import jsonl, run_cli, start_cli, wait_for

ROOT = Path(__file__).resolve().parent.parent

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    dest = Path(sys.argv[1]); sources = sys.argv[2:]
    for i, src in enumerate(sources):
        data = Path(src).read_bytes()
        name = Path(src).name
        tmp = dest / (name + ".part") if i % 3 == 0 else dest / name
        with open(tmp, "wb") as fh:          # slow copy, in chunks, like a camera or a share
            for j in range(0, len(data), 4096):
                fh.write(data[j:j + 4096]); fh.flush(); time.sleep(0.01)
        if tmp.name.endswith(".part"):
            os.rename(tmp, dest / name)
        time.sleep(0.15)
    (dest / "notes.jpg").write_text("a text file with an image name")
    cut = Path(sources[0]).read_bytes()
    (dest / "cut.jpg").write_bytes(cut[: len(cut) // 2])
    (dest / "readme.txt").write_text("not an image by name or content: ignored")
    """
)


def start_watcher(folder: Path, results: Path, model: Path) -> subprocess.Popen:
    return start_cli(
        "watch",
        folder,
        "--results",
        results,
        "--model",
        model,
        "--interval",
        "0.2",
        "--settle",
        "0.6",
        "--heartbeat",
        "2",
        "--retry-for",
        "3",
    )


def test_watch_survives_sigterm_and_kill9_without_loss_or_duplicates(tmp_path, data, tiny_onnx):
    folder = tmp_path / "camera"
    folder.mkdir()
    results = tmp_path / "results.jsonl"
    sources = []
    for c in ("Benign", "Early", "Pre", "Pro"):
        sources += sorted((data / "Original" / c).glob("*.jpg"))[20:25]
    # two images are already there when the watcher starts: the backlog
    for s in sources[:2]:
        (folder / s.name).write_bytes(s.read_bytes())
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), *map(str, sources[2:])])

    w = start_watcher(folder, results, tiny_onnx)
    wait_for(lambda: len(jsonl(results)) >= 4)
    w.send_signal(signal.SIGTERM)  # graceful: finish the file in hand, exit 0
    out, err = w.communicate(timeout=60)
    assert w.returncode == 0, err
    assert "alive:" in err

    w = start_watcher(folder, results, tiny_onnx)
    wait_for(lambda: len(jsonl(results)) >= 9)
    w.kill()  # kill -9, at whatever moment it is in
    w.wait(timeout=30)

    w = start_watcher(folder, results, tiny_onnx)
    writer.wait(timeout=120)
    expected = {s.name for s in sources} | {"notes.jpg", "cut.jpg"}
    wait_for(lambda: {Path(r["path"]).name for r in jsonl(results)} >= expected)
    time.sleep(1.5)  # give a duplicate, if there were to be one, the time to appear
    w.send_signal(signal.SIGTERM)
    _, err = w.communicate(timeout=60)
    assert w.returncode == 0, err

    recs = jsonl(results)
    counts = Counter(Path(r["path"]).name for r in recs)
    assert set(counts) == expected, counts
    assert all(n == 1 for n in counts.values()), counts
    by_name = {Path(r["path"]).name: r for r in recs}
    assert "not a supported image format" in by_name["notes.jpg"]["error"]
    assert "truncated" in by_name["cut.jpg"]["error"]
    clf = Classifier(tiny_onnx)
    for s in sources:
        r = by_name[s.name]
        assert r["label"] == clf.predict(s).label
        assert r["size"] == s.stat().st_size and len(r["sha256"]) == 64 and r["classified_at"]


def test_watch_once_moves_files_and_reclassifies_a_replaced_file(tmp_path, data, tiny_onnx):
    folder, done, failed = tmp_path / "in", tmp_path / "done", tmp_path / "failed"
    folder.mkdir()
    imgs = sorted((data / "Original" / "Pre").glob("*.jpg"))[:3]
    for s in imgs:
        (folder / s.name).write_bytes(s.read_bytes())
    (folder / "bad.jpg").write_text("nope")
    done.mkdir()
    (done / imgs[0].name).write_bytes(b"an older file of the same name")
    results = tmp_path / "r.csv"

    def once():
        return run_cli(
            "watch",
            folder,
            "--once",
            "--results",
            results,
            "--model",
            tiny_onnx,
            "--settle",
            "0.3",
            "--interval",
            "0.1",
            "--done-dir",
            done,
            "--failed-dir",
            failed,
            timeout=120,
        )

    r = once()
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in folder.iterdir()) == []
    assert (failed / "bad.jpg").exists()
    assert (done / imgs[0].name).read_bytes() == b"an older file of the same name"
    assert (done / f"{imgs[0].stem}-1.jpg").read_bytes() == imgs[0].read_bytes()
    lines = results.read_text().splitlines()
    assert len(lines) == 1 + 4  # header + one row per file
    # the same name comes back with other content: classified again
    (folder / imgs[1].name).write_bytes(imgs[2].read_bytes())
    r = once()
    assert r.returncode == 0, r.stderr
    assert len(results.read_text().splitlines()) == 1 + 5


def test_watch_logs_one_line_per_image_quiet_and_log_file(tmp_path, data, tiny_onnx):
    folder = tmp_path / "in"
    folder.mkdir()
    imgs = sorted((data / "Original" / "Pro").glob("*.jpg"))[:2]
    for s in imgs:
        (folder / s.name).write_bytes(s.read_bytes())
    (folder / "bad.jpg").write_text("nope")
    fast = ("--once", "--settle", "0.2", "--interval", "0.1", "--model", tiny_onnx)
    log = tmp_path / "watch.log"
    r = run_cli("watch", folder, "--results", tmp_path / "r.jsonl", "--log-file", log, *fast)
    assert r.returncode == 0, r.stderr
    for s in imgs:  # `name -> Pro 0.998 ok`, or the verdict and headline when not ok
        assert f"{folder / s.name} -> " in r.stderr
    assert f"{folder / 'bad.jpg'} -> error: Could not classify" in r.stderr
    assert log.read_text() == r.stderr  # the same lines in the log file
    # -q: warnings and errors only (the unreadable file), no line per classified image
    for s in imgs:
        (folder / ("again-" + s.name)).write_bytes(s.read_bytes())
    q = run_cli("watch", folder, "--results", tmp_path / "r.jsonl", "-q", *fast)
    assert q.returncode == 0 and "again-" not in q.stderr and " INFO " not in q.stderr


def test_watch_once_on_a_missing_folder_fails_fast(tmp_path, tiny_onnx):
    r = run_cli("watch", tmp_path / "nope", "--once", "--results", tmp_path / "r.jsonl", timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr
