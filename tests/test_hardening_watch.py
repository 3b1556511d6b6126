"""Field hardening, round 2 (issue 24, items 9-14): what a hostile share, folder or second
user does to a real watcher (real processes, real folders, the bundled model)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_infer import Classifier
from edge_infer.io.fileops import LockUnsafe, lock_exclusive, private_dir
from edge_infer.watch.watcher import Watcher, folder_lock_path
from tests.conftest import ENV, ROOT, jsonl, wait_for

WATCH_FAST = ("--settle", "0.3", "--interval", "0.1", "--heartbeat", "1")


def cli_env(lock_dir: Path) -> dict[str, str]:
    return {**ENV, "EDGE_INFER_LOCK_DIR": str(lock_dir)}


def watch(*args, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_infer", "watch", *map(str, args), *WATCH_FAST],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def start_watch(*args, env, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_infer", "watch", *map(str, args), *WATCH_FAST],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),  # noqa: SIM115 - the child keeps it
        env=env,
        cwd=ROOT,
    )


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def other_filesystem(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        folder = shm / f"edge-infer-test-{os.getpid()}-{time.monotonic_ns()}"
        folder.mkdir()
        return folder
    pytest.skip("no second filesystem (/dev/shm) here")


def test_9_a_symlink_in_the_inbox_is_recorded_never_followed_or_copied(tmp_path, sample_images):
    inbox, secret = tmp_path / "in", tmp_path / "private" / "secret.jpg"
    inbox.mkdir()
    secret.parent.mkdir()
    secret.write_bytes(sample_images[0].read_bytes())
    secret.chmod(0o600)
    (inbox / "looks-like-an-image.jpg").symlink_to(secret)
    (inbox / "real.jpg").write_bytes(sample_images[1].read_bytes())
    far = other_filesystem(tmp_path)
    try:
        r = watch(
            inbox,
            "--once",
            "--results",
            tmp_path / "r.jsonl",
            "--done-dir",
            far / "done",
            "--failed-dir",
            far / "failed",
            env=cli_env(tmp_path / "locks"),
        )
        recs = {Path(x["path"]).name: x for x in jsonl(tmp_path / "r.jsonl")}
        assert set(recs) == {"looks-like-an-image.jpg", "real.jpg"}, r.stderr
        link = recs["looks-like-an-image.jpg"]
        assert link["status"] == "error" and "symbolic link" in link["error"]
        assert link["moved_to"] is None
        assert (inbox / "looks-like-an-image.jpg").is_symlink()  # left where it was
        copies = [p for p in far.rglob("*") if p.is_file() and not p.is_symlink()]
        assert [p.name for p in copies] == ["real.jpg"]  # the target was never copied
    finally:
        import shutil

        shutil.rmtree(far, ignore_errors=True)


def test_10_the_folder_lock_is_private_and_a_planted_link_truncates_nothing(tmp_path):
    lock_dir = tmp_path / "locks"
    inbox = tmp_path / "in"
    inbox.mkdir()
    env = cli_env(lock_dir)
    os.environ["EDGE_INFER_LOCK_DIR"] = str(lock_dir)
    try:
        lock = folder_lock_path(Path(os.path.realpath(inbox)))
    finally:
        del os.environ["EDGE_INFER_LOCK_DIR"]
    assert lock.parent == lock_dir and not str(lock).startswith("/tmp/edge-infer-watch")
    assert (lock_dir.stat().st_mode & 0o777) == 0o700
    victim = tmp_path / "results.jsonl"
    victim.write_text('{"precious": 1}\n')
    lock.symlink_to(victim)
    r = watch(inbox, "--once", "--results", tmp_path / "r.jsonl", env=env)
    assert r.returncode == 2 and "symbolic link" in r.stderr, r.stderr
    assert victim.read_text() == '{"precious": 1}\n'


def test_10_lock_files_refuse_links_and_other_names(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "link.lock").symlink_to(target)
    with pytest.raises(LockUnsafe, match="symbolic link"):
        lock_exclusive(tmp_path / "link.lock")
    os.link(target, tmp_path / "hard.lock")
    with pytest.raises(LockUnsafe, match="other names"):
        lock_exclusive(tmp_path / "hard.lock")
    assert target.read_text() == "keep"


def test_10_a_lock_folder_others_may_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="not this user's own"):
        private_dir({"EDGE_INFER_LOCK_DIR": str(shared)})
    assert private_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path / "edge-infer"


def test_10_units_have_a_private_tmp():
    for unit in ("edge-infer-watch.service", "edge-infer-serve.service"):
        assert "PrivateTmp=yes" in (ROOT / "deploy" / unit).read_text()


def test_11_a_results_alias_takes_the_same_lock_and_a_swapped_link_is_not_followed(
    tmp_path, sample_images
):
    env = cli_env(tmp_path / "locks")
    inbox, results = tmp_path / "in", tmp_path / "r.jsonl"
    inbox.mkdir()
    proc = start_watch(inbox, "--results", results, env=env, log=tmp_path / "w.log")
    try:
        wait_for(lambda: results.exists(), 30)
        alias = tmp_path / "alias.jsonl"
        alias.symlink_to(results)
        other_in = tmp_path / "in2"
        other_in.mkdir()
        r = watch(other_in, "--once", "--results", alias, env=env)
        assert r.returncode == 2 and "in use by another watcher" in r.stderr, r.stderr
        # the results file swapped for a link to another file while the watcher runs
        elsewhere = tmp_path / "elsewhere.jsonl"
        elsewhere.write_text("")
        results.unlink()
        results.symlink_to(elsewhere)
        (inbox / "a.jpg").write_bytes(sample_images[0].read_bytes())
        wait_for(lambda: "symbolic link" in (tmp_path / "w.log").read_text(), 30)
        assert elsewhere.read_text() == ""
    finally:
        stop(proc)


def test_12_a_watched_folder_swapped_for_a_link_is_not_followed(tmp_path, sample_images):
    env = cli_env(tmp_path / "locks")
    inbox, results, log = tmp_path / "in", tmp_path / "r.jsonl", tmp_path / "w.log"
    inbox.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "not-ours.jpg").write_bytes(sample_images[0].read_bytes())
    proc = start_watch(inbox, "--results", results, env=env, log=log)
    try:
        wait_for(lambda: results.exists(), 30)
        inbox.rename(tmp_path / "in.old")
        inbox.symlink_to(other)
        wait_for(lambda: "no longer the folder watched" in log.read_text(), 30)
        time.sleep(1.0)
        assert jsonl(results) == []
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier()


def test_13_a_file_renamed_while_classified_gets_one_record_and_no_false_move(
    tmp_path, sample_images, clf, caplog, monkeypatch
):
    monkeypatch.setenv("EDGE_INFER_LOCK_DIR", str(tmp_path / "locks"))
    inbox, done = tmp_path / "in", tmp_path / "done"
    inbox.mkdir()
    (inbox / "a.jpg").write_bytes(sample_images[0].read_bytes())
    w = Watcher(inbox, clf, tmp_path / "r.jsonl", done_dir=done, settle=0.0, once=True)
    real_iter = clf.iter_predict

    def renaming(*args, **kwargs):
        for out in real_iter(*args, **kwargs):
            (inbox / "a.jpg").rename(inbox / "b.jpg")  # the camera software renames it
            yield out

    monkeypatch.setattr(w.clf, "iter_predict", renaming)
    with caplog.at_level(logging.INFO, logger="edge_infer.watch"):
        w.process(w.scan())
        monkeypatch.setattr(w.clf, "iter_predict", real_iter)
        time.sleep(0.05)
        for _ in range(3):
            ready = w.scan()
            if ready:
                w.process(ready)
    w.close()
    recs = jsonl(tmp_path / "r.jsonl")
    assert len(recs) == 1, recs
    assert recs[0]["moved_to"] is None  # the move did not happen: not recorded
    assert "renamed or removed while it was classified" in caplog.text
    assert "same image (size and sha256)" in caplog.text
    assert (inbox / "b.jpg").exists()


def test_14_mtimes_shifted_by_an_hour_are_not_classified_again(tmp_path, sample_images):
    env = cli_env(tmp_path / "locks")
    inbox, results = tmp_path / "in", tmp_path / "r.jsonl"
    inbox.mkdir()
    for i, p in enumerate(sample_images[:5]):
        (inbox / f"{i}.jpg").write_bytes(p.read_bytes())
    assert watch(inbox, "--once", "--results", results, env=env).returncode == 0
    for f in inbox.iterdir():
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 3600 * 10**9))  # DST on a share
    assert watch(inbox, "--once", "--results", results, env=env).returncode == 0
    assert len(jsonl(results)) == 5
