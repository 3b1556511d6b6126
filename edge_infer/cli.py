"""`edge-infer`: a thin click layer over the Python API (parse, call, format; nothing else)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import click

from . import __version__
from .classifier import DEFAULT_BATCH
from .errors import EdgeInferError, ModelError
from .io.fileops import write_atomically
from .io.inputs import expand_paths
from .io.writers import FORMATS, RecordWriter, terminal_text
from .serve.limits import MAX_BODY_BYTES, SOCKET_TIMEOUT_S


def echo(text: str = "", err: bool = False) -> None:
    """click.echo through formats.terminal_text: every line printed is escaped the same way."""
    click.echo(terminal_text(text), err=err)


class _ResultsNotWritten(Exception):
    """The results could not be written (its __cause__ is the OSError)."""


class BadModel(click.ClickException):
    """A model that cannot be used: one line on stderr, exit 2 (like other usage errors), so
    scripts can tell it from 'some inputs failed' (1)."""

    exit_code = 2


def _classifier(model: str | None, threads: int | None, tta: bool = False, latency: bool = False):
    from .classifier import Classifier

    try:
        clf = Classifier(model, threads=threads, tta=tta, latency=latency)
    except ModelError as exc:
        raise BadModel(f"model {exc}") from None
    if clf.batches_side_by_side:  # this process is ours: one core per worker, no nested pool
        from .image.preprocess import opencv_single_threaded

        opencv_single_threaded()
    return clf


LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def _setup_logging(verbose: int = 0, quiet: int = 0, log_file: str | None = None) -> None:
    """Timestamped log lines on stderr for the long-running commands (stdout stays for data),
    and in `log_file` too when given. Default INFO (one line per image); -q: warnings only,
    -qq: errors only; -v: debug."""
    import logging

    from .io.logfmt import PrintableFormatter

    level = logging.INFO + 10 * (quiet - verbose)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        try:
            handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
        except OSError as exc:
            raise click.UsageError(f"--log-file {log_file}: {exc.strerror or exc}") from None
    formatter = PrintableFormatter(LOG_FORMAT)
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(
        level=max(logging.DEBUG, min(level, logging.CRITICAL)), handlers=handlers, force=True
    )


def logging_options(fn):
    """-v / -q / --log-file for the long-running commands."""
    fn = click.option(
        "--log-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Also append the log to this file (the journal or console gets it anyway).",
    )(fn)
    fn = click.option(
        "-q", "--quiet", count=True, help="Less logging: -q warnings and errors, -qq errors only."
    )(fn)
    fn = click.option("-v", "--verbose", count=True, help="More logging (debug).")(fn)
    return fn


def case_options(what: str):
    """--cases (saying what it does for this command), --case-map and --case-pattern."""

    def add(fn):
        fn = click.option(
            "--case-pattern",
            default=None,
            metavar="REGEX",
            help="With --cases: the case is the first group of this pattern in the image's path.",
        )(fn)
        fn = click.option(
            "--case-map",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="With --cases: a CSV with columns path,case saying which case each image is.",
        )(fn)
        return click.option("--cases", "with_cases", is_flag=True, help=what)(fn)

    return add


model_option = click.option(
    "--model",
    "-m",
    type=click.Path(dir_okay=False),
    default=None,
    help="ONNX model file (default: the bundled model).",
)
recursive_option = click.option("--recursive", "-r", is_flag=True, help="Descend into sub-folders.")
tta_option = click.option(
    "--tta",
    is_flag=True,
    help="Average the network over the 8 flip/rotate views of each image (8x slower).",
)
batch_size_option = click.option(
    "--batch-size",
    type=click.IntRange(1, 1024),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Images per network call.",
)
threads_option = click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=None,
    help=(
        "onnxruntime threads per network call (default: 1, with batches side by side on every"
        " core; serve: the cores, at most 4)."
    ),
)


def _versions(ctx: click.Context, _param, value: bool) -> None:
    """--version / -V: the runtime, the bundled model and the libraries that decide results."""
    if not value or ctx.resilient_parsing:
        return
    import cv2
    import numpy as np
    import onnxruntime as ort

    from .model import OnnxModel

    try:
        model = OnnxModel(threads=1).meta.version
    except EdgeInferError as exc:
        model = f"unusable ({exc})"
    echo(
        f"edge-infer {__version__}, bundled model {model}; onnxruntime {ort.__version__}, "
        f"opencv {cv2.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}"
    )
    ctx.exit(0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    "-V",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_versions,
    help="Show the runtime, model and library versions and exit.",
)
def main() -> None:
    """Classify peripheral blood smear images: Benign (hematogone) or B-ALL Early Pre-B / Pre-B /
    Pro-B. A screening aid for trained staff, not a diagnosis."""


#: set by run(): this process is the `edge-infer` program, not a caller of main()
_AS_PROGRAM = False


def run() -> None:
    """The `edge-infer` program (console script and `python -m edge_infer`). Click's own
    error messages (a folder that does not exist, a bad option value) name what the user
    gave: they are escaped like every other line (formats.terminal_text)."""
    global _AS_PROGRAM
    _AS_PROGRAM = True
    args = sys.argv[1:]
    if not args and getattr(sys, "frozen", False):
        # the self-contained executable, double-clicked: the upload page, in the browser
        args = ["serve", "--open"]
    try:
        code = main.main(args, prog_name="edge-infer", standalone_mode=False)
    except click.ClickException as exc:
        message = exc.format_message
        exc.format_message = lambda: terminal_text(message())  # type: ignore[method-assign]
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _finish(code: int) -> NoReturn:
    """End a batch command once every record is written and flushed. As the program, without
    the interpreter's teardown (unloading numpy, OpenCV and onnxruntime: ~65 ms here, after the
    last result; `classify` of one image 0.22-0.28 -> 0.19-0.22 s, alternated); called
    in-process, an ordinary exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    if _AS_PROGRAM:
        os._exit(code)
    sys.exit(code)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(readable=False))
@model_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table: aligned columns for a terminal; jsonl: one JSON record per line; csv: one row "
    "per image; excel: CSV with a byte-order mark, so Excel shows accented names right.",
)
@recursive_option
@tta_option
@batch_size_option
@threads_option
@case_options(
    "After the images, one summary and verdict per case (slide or patient): by default the "
    "images of one folder are one case."
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --cases: also write a printable case report (one self-contained HTML file).",
)
def classify(
    paths,
    model,
    fmt,
    recursive,
    tta,
    batch_size,
    threads,
    with_cases,
    case_map,
    case_pattern,
    report,
) -> None:
    """Classify image files and folders. Exit 0 if every input was classified, 1 if some failed
    or the results could not be written."""
    from .image.tile_map import picture_cam
    from .result import Failure

    cases = _case_definition(with_cases, case_map, case_pattern)
    if report and cases is None:
        raise click.UsageError("--report goes with --cases")
    clf = _classifier(model, threads, tta)
    inputs = expand_paths(paths, recursive)
    files = inputs.files
    if not files and not inputs.unlisted:
        raise click.UsageError("no image files found in the given paths")
    names = [str(f) for f in files] + [str(f) for f, _ in inputs.unlisted]
    extra = ()
    if cases is not None:
        from .cases import CASE_INPUT_FIELDS, csv_fields

        extra = csv_fields(clf.classes)
    writer = RecordWriter(sys.stdout, fmt, clf.classes, extra, names=names)
    kept: list[dict] = []  # what the case summaries read of each record
    shown: list[tuple[dict, object]] = []  # each record and its CAM, for the case report

    def output(write, *args) -> None:
        """A write of the results: an OSError here is the output's, not an input's (those
        become error records in the workers), so it is told apart."""
        try:
            write(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _ResultsNotWritten(exc) from exc

    failed = 0
    # a progress bar only where it cannot interleave with the results (stdout redirected)
    show = len(files) >= 20 and sys.stderr.isatty() and not sys.stdout.isatty()
    bar = click.progressbar(length=len(files), label="classifying", file=sys.stderr)
    counts: dict[str, int] = {}
    try:
        for folder, reason in inputs.unlisted:  # an unreadable folder is an error, not skipped
            output(writer.write, Failure(folder, reason).to_record())
            failed += 1
        with bar if show else contextlib.nullcontext():
            for outcome in clf.iter_predict(files, batch_size=batch_size):
                failed += not outcome.ok
                record = outcome.to_record()
                output(writer.write, record)
                if cases is not None:
                    kept.append({k: record[k] for k in CASE_INPUT_FIELDS})
                if report:
                    shown.append((record, picture_cam(outcome) if outcome.ok else None))
                counts[outcome.status.value] = counts.get(outcome.status.value, 0) + 1
                if show:
                    bar.update(1)
        if cases is not None:
            from .cases import case_records

            summaries = case_records(kept, cases, clf.meta)
            for case in summaries:
                output(writer.write_case, case)
            if report:
                _write_case_report(Path(report), summaries, shown, cases, clf.version)
        output(writer.flush)
    except KeyboardInterrupt:
        echo(f"interrupted after {sum(counts.values())} of {len(files)} images", err=True)
        sys.exit(130)
    except BrokenPipeError:  # the reader stopped reading (`| head`): stop, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        _finish(141)
    except _ResultsNotWritten as err:  # a full disk, a vanished share: one line, no traceback
        exc = err.__cause__
        raise click.ClickException(
            f"cannot write the results ({getattr(exc, 'strerror', None) or exc}) after "
            f"{sum(counts.values())} of {len(files)} images"
        ) from None
    total = len(files) + len(inputs.unlisted)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    echo(f"{len(files)} images: {summary or 'none'}", err=True)
    if failed:
        echo(f"{failed} of {total} inputs could not be classified", err=True)
    _finish(1 if failed else 0)


@main.command()
@model_option
@click.option("--json", "as_json", is_flag=True, help="The metadata as JSON.")
@click.option(
    "--full",
    is_flag=True,
    help="With --json: include the image guard's reference data (large).",
)
def info(model, as_json, full) -> None:
    """The model's description: classes, input, preprocessing, thresholds, headline metrics."""
    clf = _classifier(model, 1)
    meta = clf.meta
    if as_json:
        body = meta.to_dict() if full else meta.public_json()
        echo(json.dumps({"file": str(clf.model.path), **body}, indent=1))
        return
    echo("\n".join(describe(meta, clf.model.path)))


def describe(meta, path: str) -> list[str]:
    """`edge-infer info` in words: every figure read from the model's metadata."""
    guards = meta.guards
    image_guard = guards.image_stats or {}
    spec = meta.preprocess
    lines = [
        f"model       {path}",
        f"version     {meta.version}",
        "classes     "
        + ", ".join(
            f"{c.name} = {c.display}{' (malignant)' if c.malignant else ''}" for c in meta.classes
        ),
        f"input       {meta.input.name} {meta.input.layout} {meta.input.size}x{meta.input.size} "
        f"{meta.input.channel_order} {meta.input.dtype} in {list(meta.input.value_range)}",
        f"normalise   {spec.normalise}",
        "scale       "
        + (
            f"red-cell ruler: read whole at {spec.field_scale_min}-{spec.field_scale_max}x the "
            "training scale, wider fields as tiles, close-ups not recognised"
            if spec.cell_diameter_share
            else "none (every image read whole: use it at the training magnification)"
        ),
        f"uncertain   confidence < {meta.uncertain_below}"
        + "".join(f"; {c} < {t}" for c, t in meta.uncertain_below_by_class.items()),
        f"not recog.  feature score > {guards.feature_threshold}"
        + (f", image score > {image_guard.get('threshold')}" if image_guard else "")
        + f", stained share < {spec.min_cell_fraction}",
        f"calibration temperature {meta.temperature} (folded into the graph)",
        f"parameters  {meta.parameters}",
    ]
    for m in meta.metrics:
        lines.append(
            f"test        {m.title}, n={m.n}: accuracy {m.accuracy:.4f}, "
            f"macro F1 {m.macro_f1:.4f}, malignant sensitivity {m.malignant_sensitivity:.4f}, "
            f"ECE {m.ece:.4f}"
        )
    weakness = meta.costliest_error()
    if weakness:
        lines.append(f"weakness    {weakness}")
    lines.append(f"intended    {meta.intended_use}")
    return lines


@main.command()
@click.argument("image", type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    required=True,
    help="Image to write (.png or .jpg): the image with the segmented cells outlined.",
)
@model_option
def segment(image, output, model) -> None:
    """Draw the colour-threshold segmentation over IMAGE (green), with every stained cell
    outlined (orange), to see what is in view."""
    import cv2

    from .image.decode import load_image
    from .image.segment import cell_fraction, explain_overlay
    from .image.segment import segment as segment_mask

    spec = _classifier(model, 1).meta.preprocess  # the model says how it segments
    try:
        bgr = load_image(image)
    except EdgeInferError as exc:
        raise click.ClickException(str(exc)) from None
    suffix = Path(output).suffix.lower() or ".png"
    try:
        ok, buf = cv2.imencode(suffix, explain_overlay(bgr, spec))
    except cv2.error:
        ok = False
    if not ok:
        raise click.ClickException(f"{output}: cannot write a '{suffix}' image (use .png or .jpg)")
    try:
        Path(output).write_bytes(buf.tobytes())
    except OSError as exc:
        raise click.ClickException(f"{output}: cannot write ({exc.strerror or exc})") from None
    echo(
        f"{image}: {segment_mask(bgr, spec).mean() * 100:.1f}% segmented, "
        f"{cell_fraction(bgr, spec) * 100:.1f}% stained -> {output}"
    )


@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option(
    "--results",
    type=click.Path(dir_okay=False),
    required=True,
    help="Results file (.jsonl or .csv), also the ledger of what was done; an absolute path "
    "under a service manager.",
)
@click.option(
    "--done-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Move classified originals here.",
)
@click.option(
    "--failed-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Move files that could not be classified here.",
)
@recursive_option
@click.option(
    "--interval",
    type=click.FloatRange(0.05),
    default=2.0,
    show_default=True,
    help="Seconds between folder scans.",
)
@click.option(
    "--settle",
    type=click.FloatRange(0),
    default=2.0,
    show_default=True,
    help="Seconds a file's size and mtime must stay unchanged before it is read.",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(1),
    default=60.0,
    show_default=True,
    help="Seconds between 'alive' log lines.",
)
@click.option(
    "--retry-for",
    type=click.FloatRange(0),
    default=120.0,
    show_default=True,
    help="Seconds to keep retrying a file that cannot be read or is still incomplete, "
    "counted from its last change, before recording it as an error.",
)
@click.option("--once", is_flag=True, help="Process what is there, then exit.")
@case_options(
    "Keep one summary and verdict per case (slide or patient; by default the images of one "
    "folder) in RESULTS.cases.jsonl, replaced as images arrive; log a case's new verdict."
)
@tta_option
@model_option
@threads_option
@logging_options
def watch(
    folder,
    results,
    done_dir,
    failed_dir,
    recursive,
    interval,
    settle,
    heartbeat,
    retry_for,
    once,
    with_cases,
    case_map,
    case_pattern,
    tta,
    model,
    threads,
    verbose,
    quiet,
    log_file,
) -> None:
    """Classify every image saved into FOLDER, exactly once, until SIGINT/SIGTERM. One log line
    per image (`name -> Pro 0.998 ok`) on stderr."""
    import logging

    from .cases import CaseBook, case_summary_path
    from .watch.ledger import LedgerError
    from .watch.watcher import FolderInUse, Watcher

    cases = _case_definition(with_cases, case_map, case_pattern)
    _setup_logging(verbose, quiet, log_file)
    if once and not Path(folder).is_dir():
        raise click.UsageError(f"folder {folder} does not exist")
    clf = _classifier(model, threads, tta)
    try:
        w = Watcher(
            Path(folder),
            clf,
            Path(results),
            done_dir=Path(done_dir) if done_dir else None,
            failed_dir=Path(failed_dir) if failed_dir else None,
            recursive=recursive,
            interval=interval,
            settle=settle,
            tta=tta,
            heartbeat=heartbeat,
            retry_for=retry_for,
            once=once,
            cases=CaseBook(cases, clf.meta) if cases is not None else None,
            case_summary=case_summary_path(Path(results)) if cases is not None else None,
        )
    except (FolderInUse, LedgerError) as exc:
        raise click.UsageError(str(exc)) from None
    w.install_signal_handlers()
    logging.getLogger("edge_infer.watch").info(
        "watching %s -> %s (model %s)", w.folder, w.ledger.path, clf.version
    )
    w.run()


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on (loopback: only this PC).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="TCP port (0: any free port, printed at start).",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(0.1, 512),
    default=MAX_BODY_BYTES / 2**20,
    show_default=True,
    help="Largest accepted upload.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(0.5, 3600),
    default=SOCKET_TIMEOUT_S,
    show_default=True,
    help="Seconds after which an idle or stalled connection is closed.",
)
@click.option(
    "--site-report",
    type=click.Path(dir_okay=False),
    default=None,
    help="A report from `edge-infer check-site`: the page shows its verdict and links to it.",
)
@click.option(
    "--open",
    "open_browser",
    is_flag=True,
    help="Open the page in the default browser once it is served (the executable's default).",
)
@model_option
@threads_option
@logging_options
def serve(
    host,
    port,
    max_upload_mb,
    idle_timeout,
    site_report,
    open_browser,
    model,
    threads,
    verbose,
    quiet,
    log_file,
):
    """A local upload page and JSON API (POST /api/classify, GET /api/model, GET /healthz)."""

    import signal
    import threading

    from .serve.http import is_loopback
    from .serve.server import make_server

    _setup_logging(verbose, quiet, log_file)
    clf = _classifier(model, threads, latency=True)  # one upload at a time: latency first
    try:
        server = make_server(
            clf,
            host,
            port,
            int(max_upload_mb * 1024 * 1024),
            idle_timeout,
            Path(site_report) if site_report else None,
        )
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    h, p = server.server_address[:2]
    if not is_loopback(h):
        echo(
            f"WARNING: listening on {h}, reachable from other computers, with no "
            "authentication: anyone on the network can upload images. Use the default "
            "--host 127.0.0.1 unless the network is trusted.",
            err=True,
        )
    url_host = f"[{h}]" if ":" in h else h
    url = f"http://{url_host}:{p}/"
    echo(f"serving model {clf.version} on {url}  (Ctrl+C to stop)", err=True)
    if open_browser:
        import webbrowser

        # in a thread: a browser that takes long to start does not hold the server back
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()

    def stop(signum, _frame):  # shutdown() waits for serve_forever: call it from another thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        echo("stopped", err=True)


def _write_case_report(path: Path, summaries, shown, cases, version: str) -> None:
    from .case_report import render
    from .result import PATH

    by_case: dict[str, list] = {}
    for record, cam in shown:
        by_case.setdefault(cases.case_of(str(record[PATH])), []).append((record, cam))
    try:
        write_atomically(path, render(summaries, by_case, version))
    except OSError as exc:
        raise click.ClickException(f"cannot write the case report: {exc.strerror or exc}") from None
    echo(f"case report: {path}", err=True)


def _case_definition(with_cases: bool, case_map: str | None, case_pattern: str | None):
    """The case definition asked for, or None without --cases."""
    if not with_cases:
        if case_map or case_pattern:
            raise click.UsageError("--case-map and --case-pattern go with --cases")
        return None
    from .cases import CaseDefinition, CaseError

    try:
        return CaseDefinition.from_options(case_map, case_pattern)
    except CaseError as exc:
        raise click.UsageError(str(exc)) from None


class SiteRefused(click.ClickException):
    """A folder that cannot be checked: one line, exit 2 (the verdicts use 0, 3 and 4)."""

    exit_code = 2


def check_site_outputs(folder: Path, report: Path, json_path: Path | None) -> None:
    """Refuse, before any work, outputs that would clobber the lab's files or each other:
    inside the folder being checked, the report and --json the same file, an existing file
    that is not an earlier output of check-site, or a place that cannot be written."""
    from .site.report import VERDICT_META

    outputs = [("--report", report, VERDICT_META)]
    if json_path is not None:
        outputs.append(("--json", json_path, '"site_verdict"'))
        if os.path.realpath(report) == os.path.realpath(json_path):
            raise SiteRefused("--report and --json name the same file")
    root = os.path.realpath(folder)
    for option, path, mark in outputs:
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) == root:
            raise SiteRefused(f"{option} {path} is inside the folder being checked")
        if os.path.lexists(path):
            try:
                with open(path, "rb") as fh:
                    earlier = mark.encode() in fh.read(1 << 16)
            except OSError as exc:
                raise SiteRefused(f"{option} {path}: {exc.strerror or exc}") from None
            if not earlier:
                raise SiteRefused(
                    f"{option} {path} exists and is not an earlier site check; "
                    "give another name or remove it"
                )
        parent = Path(real).parent
        try:
            tempfile.TemporaryFile(dir=parent).close()
        except OSError as exc:
            reason = exc.strerror or exc
            raise SiteRefused(f"{option} {path}: cannot write there ({reason})") from None


@main.command("check-site")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--labelled",
    is_flag=True,
    help="Sub-folders named after the model's classes hold images whose diagnosis the lab "
    "has confirmed: also report accuracy, sensitivity and the confusion matrix.",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    default="site-check.html",
    show_default=True,
    help="The self-contained HTML report to write.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the figures as JSON here.",
)
@model_option
@threads_option
def check_site_command(folder, labelled, report, json_path, model, threads) -> None:
    """Before relying on the model at a new site: does it fit this lab's microscope?

    Classifies FOLDER (at least 30 of the lab's own images) with the model as it is, compares
    their lamp, white balance, stain, focus, cell size and resolution with the training images,
    and says: fits (exit 0), fits but check (3), or does not fit (4), with what to change."""
    from .site.check import SiteCheckError, check_site, site_images
    from .site.report import render
    from .site.rules import VERDICT_WORDS

    check_site_outputs(Path(folder), Path(report), Path(json_path) if json_path else None)
    clf = _classifier(model, threads)
    try:
        total = len(site_images(Path(folder), clf.classes, labelled))
    except SiteCheckError as exc:
        raise SiteRefused(str(exc)) from None
    show = sys.stderr.isatty() and total >= 20
    bar = click.progressbar(length=total, label="checking", file=sys.stderr)
    try:
        with bar if show else contextlib.nullcontext():
            result = check_site(clf, Path(folder), labelled, progress=bar.update if show else None)
    except SiteCheckError as exc:
        raise SiteRefused(str(exc)) from None
    try:
        write_atomically(Path(report), render(result))
        if json_path:
            write_atomically(Path(json_path), json.dumps(result.to_dict(), indent=2))
    except OSError as exc:
        raise SiteRefused(f"cannot write the report: {exc.strerror or exc}") from None
    echo(VERDICT_WORDS[result.verdict])
    for f in result.findings:
        echo(f"- {f.topic}: {f.measured}\n  -> {f.fix}")
    for note in result.notes:
        echo(f"  ({note})")
    echo(f"report: {report}" + (f", figures: {json_path}" if json_path else ""), err=True)
    sys.exit(result.exit_code)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--out",
    required=True,
    help="Folder or s3:// URI; rows go to OUT/model=<version>/ as Parquet files.",
)
@model_option
@click.option(
    "--address",
    default=None,
    metavar="ADDRESS",
    help="Run on this Ray cluster: HOST:6379 (its head), ray://HOST:10001 (Ray Client) or auto "
    "(the cluster this machine is part of). Default: a local Ray with the usable CPUs.",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Model copies (Ray actors; default: the cluster's CPUs / --cpus-per-worker).",
)
@click.option(
    "--cpus-per-worker",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="CPUs (onnxruntime threads) per worker.",
)
@batch_size_option
@click.option(
    "--rows-per-file",
    type=click.IntRange(1),
    default=5000,
    show_default=True,
    help="Rows per Parquet file (one is also written with the first results 30 s after the last "
    "file: a crash loses only what came since).",
)
def archive(sources, out, model, address, workers, cpus_per_worker, batch_size, rows_per_file):
    """Classify an archive on Ray: SOURCES are folders (walked to the bottom), globs, list
    files (one path or s3:// URI per line) or s3:// URIs. Re-running the same command skips
    what OUT already holds for this model (by path and sha256), so a stopped run goes on where
    it stopped. Exit 0 if every input was classified, 1 if some could not be, 130 if
    interrupted. Needs the ray extra: pip install "edge-infer[ray]"."""
    try:
        import ray  # noqa: F401  (the extra: checked here, so its absence is one line)

        from .archive.run import ArchiveOptions, run_archive
        from .archive.store import ArchiveError
        from .result import Status
    except ImportError as exc:
        raise click.ClickException(
            f'archive needs the ray extra ({exc}): pip install "edge-infer[ray]"'
        ) from None
    opts = ArchiveOptions(
        model=model,
        address=address,
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        batch_size=batch_size,
        rows_per_file=rows_per_file,
    )
    try:
        summary = run_archive(sources, out, opts, progress=lambda line: echo(line, err=True))
    except ModelError as exc:
        raise BadModel(f"model {exc}") from None
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{out}: {exc.strerror or exc}") from None
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items()))
    echo(
        f"{summary.listed} inputs: {counts or 'none new'}; {summary.already_done} already in "
        f"the output; {summary.files_written} files written to {summary.output} "
        f"in {summary.seconds:.0f} s",
        err=True,
    )
    if summary.interrupted:
        echo("interrupted: run the same command again to go on", err=True)
        _finish(130)
    _finish(1 if summary.counts.get(Status.ERROR.value) else 0)


@main.command()
@model_option
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False),
    required=True,
    help="Folder of real images (searched recursively).",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=300,
    show_default=True,
    help="Images to use, spread over the folder.",
)
@threads_option
@batch_size_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench(model, images, limit, threads, batch_size, as_json) -> None:
    """Cold start, latency (preprocess vs inference), throughput, peak RSS, model size."""
    from .bench import cold_start_seconds, collect_images, import_seconds, run_bench

    files = collect_images(images, limit)
    if not files:
        raise click.UsageError(f"no images under {images}")
    _classifier(model, 1)  # a bad model fails here, in one line
    echo(f"benchmarking on {len(files)} images ...", err=True)
    figures = run_bench(model, files, threads, batch_size)
    figures["import_s"] = import_seconds()
    figures["cold_start_s"] = cold_start_seconds(model, files[0])
    if as_json:
        echo(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        echo(f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}")


if __name__ == "__main__":
    run()
