"""`edge-infer archive`: classify an archive on Ray Data, resumable and exactly once.

The driver lists the inputs, reads what the output already holds for this model (path and
sha256), and sends the rest through an actor pool (worker.ArchiveWorker: one onnxruntime session
per actor). It alone writes, in files committed whole (store.ArchiveStore): a crash of the driver
loses only the rows not yet committed, and a re-run does those; a worker that dies has its block
re-run by Ray Data, whose output reaches the driver once. Rows are de-duplicated by (path,
sha256) on the way in as well, so nothing is written twice."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ..classifier import DEFAULT_BATCH, Classifier
from ..model import usable_cpus
from ..result import PATH, STATUS, Failure
from .block import SHA256, archive_row, columns, now_utc
from .sources import list_sources
from .store import ArchiveStore, archive_schema, to_table
from .worker import ALREADY_DONE, KNOWN, SOURCE, ArchiveWorker, printable_path

#: rows per input block at most: the unit Ray Data schedules (and re-runs if its worker dies);
#: a small run is cut into BLOCKS_PER_WORKER blocks per worker so that every worker gets some
BLOCK_ROWS = 256
BLOCKS_PER_WORKER = 4
#: rows per call of a worker (its network batches are --batch-size): Ray's cost per call is
#: spread over more images, and reads of one call run side by side
ROWS_PER_CALL = 64
#: environment the workers need to reach an S3-compatible store (passed to every worker)
FORWARDED_ENV_PREFIXES = ("AWS_",)
#: seconds between progress lines
PROGRESS_EVERY_S = 5.0


@dataclass
class ArchiveSummary:
    """What one run did."""

    output: str
    listed: int = 0
    #: inputs whose content was already in the output for this model
    already_done: int = 0
    #: rows written by this run, per status
    counts: dict[str, int] = field(default_factory=dict)
    files_written: int = 0
    workers: int = 0
    seconds: float = 0.0
    #: seconds to start or join Ray, and from then to the first block of results
    ray_start_s: float = 0.0
    first_result_s: float = 0.0
    #: (seconds since Ray was up, inputs done) at each block of results: the steady rate
    timeline: list[tuple[float, int]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def written(self) -> int:
        return sum(self.counts.values())


@dataclass
class ArchiveOptions:
    """How to run (the command's options)."""

    model: str | None = None
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 1
    batch_size: int = DEFAULT_BATCH
    rows_per_file: int = 5000
    flush_seconds: float = 30.0
    #: Ray Data's progress bars (default: when stderr is a terminal)
    bars: bool | None = None


class _Committer:
    """Rows in, files out: a file per `rows_per_file` rows or `flush_seconds`, whichever first;
    a row already taken in this run (same path and sha256) is dropped."""

    def __init__(self, store: ArchiveStore, summary: ArchiveSummary, opts: ArchiveOptions) -> None:
        self.store, self.summary, self.opts = store, summary, opts
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.last = time.monotonic()
        self.seen: set[tuple[str, str | None]] = set()

    def add(self, table: pa.Table) -> None:
        keys = zip(table.column(PATH).to_pylist(), table.column(SHA256).to_pylist(), strict=True)
        keep = [not (k in self.seen or self.seen.add(k)) for k in keys]
        if not all(keep):
            table = table.filter(pa.array(keep))
        for status in table.column(STATUS).to_pylist():
            self.summary.counts[status] = self.summary.counts.get(status, 0) + 1
        if table.num_rows:
            self.pending.append(table)
            self.pending_rows += table.num_rows
        if self.pending_rows >= self.opts.rows_per_file or (
            self.pending and time.monotonic() - self.last >= self.opts.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.store.write(pa.concat_tables(self.pending))
            self.summary.files_written = self.store.files_written
        self.pending, self.pending_rows, self.last = [], 0, time.monotonic()


def _blocks(items: Sequence[tuple[str, str]], size: int) -> Iterator[pa.Table]:
    for i in range(0, len(items), size):
        part = items[i : i + size]
        yield pa.table(
            {
                SOURCE: pa.array([os.fsencode(s) for s, _ in part], pa.binary()),
                KNOWN: pa.array([k for _, k in part], pa.string()),
            }
        )


def _connect(address: str | None) -> int:
    """Join the cluster at `address`, or start a local Ray with this machine's usable CPUs;
    returns the cluster's CPUs."""
    import ray

    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
    common = {
        "runtime_env": {"env_vars": env} if env else None,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if address:
        ray.init(address=address, **common)
    else:
        # "local": a new Ray of our own, even where `ray start` left one running on this machine
        ray.init(address="local", num_cpus=usable_cpus(), include_dashboard=False, **common)
    return int(ray.cluster_resources().get("CPU", 1))


def run_archive(
    sources: Sequence[str],
    out: str,
    opts: ArchiveOptions | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> ArchiveSummary:
    """Classify every input of `sources` not yet in `out` for this model (module docstring)."""
    opts = opts or ArchiveOptions()
    started = time.monotonic()
    clf = Classifier(opts.model, threads=1, workers=1)  # the model is checked before anything
    schema = archive_schema(clf.classes)
    store = ArchiveStore(out, clf.version, clf.model.sha256, schema)
    summary = ArchiveSummary(output=store.dir)
    committer = _Committer(store, summary, opts)
    try:
        done = store.done()
        listing = list_sources(sources)
        summary.listed = len(listing.files) + len(listing.unlisted)
        todo: list[tuple[str, str]] = []
        for source in listing.files:
            shas = done.get(printable_path(source))
            if shas is None:
                todo.append((source, ""))
            elif None in shas:  # it could not be read then: its row says so, once
                summary.already_done += 1
            else:
                todo.append((source, ",".join(s for s in shas if s)))
        now = now_utc()
        failures = [
            archive_row(Failure(printable_path(p), reason), store.model_sha256, now)
            for p, reason in listing.unlisted
            if printable_path(p) not in done
        ]
        summary.already_done += len(listing.unlisted) - len(failures)
        if failures:
            committer.add(to_table(columns(failures, schema.names), schema))
        try:
            if todo:
                _classify(todo, clf, committer, summary, opts, progress)
        except KeyboardInterrupt:
            summary.interrupted = True
        committer.flush()
    finally:
        store.close()
        summary.seconds = time.monotonic() - started
    return summary


def _classify(
    todo: Sequence[tuple[str, str]],
    clf: Classifier,
    committer: _Committer,
    summary: ArchiveSummary,
    opts: ArchiveOptions,
    progress: Callable[[str], None],
) -> None:
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    t_connect = time.monotonic()
    cpus = _connect(opts.address)
    t0 = time.monotonic()
    summary.ray_start_s = t0 - t_connect
    try:
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = sys.stderr.isatty() if opts.bars is None else opts.bars
        if not ctx.enable_progress_bars:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        summary.workers = opts.workers or max(1, cpus // opts.cpus_per_worker)
        model: dict[str, object] = {"model_sha256": committer.store.model_sha256}
        if opts.address:  # another machine's workers: the model travels with the job
            with open(clf.model.path, "rb") as fh:
                model["model_bytes"] = fh.read()
        else:
            model["model_path"] = str(clf.model.path)
        rows = max(1, min(BLOCK_ROWS, math.ceil(len(todo) / (BLOCKS_PER_WORKER * summary.workers))))
        ds = ray.data.from_arrow(list(_blocks(todo, rows))).map_batches(
            ArchiveWorker,
            fn_constructor_kwargs={
                **model,
                "threads": opts.cpus_per_worker,
                "batch_size": opts.batch_size,
            },
            batch_size=ROWS_PER_CALL,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=summary.workers),
            num_cpus=opts.cpus_per_worker,
        )
        seen, last_line = 0, 0.0
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            done_before = pc.equal(table.column(STATUS), ALREADY_DONE).fill_null(False)
            n_done = pc.sum(done_before).as_py() or 0
            summary.already_done += n_done
            seen += table.num_rows
            if n_done < table.num_rows:
                committer.add(table.filter(pc.invert(done_before)).cast(committer.store.schema))
            now = time.monotonic()
            if not summary.timeline:
                summary.first_result_s = now - t0
            summary.timeline.append((now - t0, seen))
            if now - last_line >= PROGRESS_EVERY_S or seen == len(todo):
                rate = seen / max(now - t0, 1e-9)
                progress(f"{seen} of {len(todo)} inputs ({rate:.1f}/s, {summary.workers} workers)")
                last_line = now
    finally:
        ray.shutdown()
