"""`edge-infer check-site`: does the model fit this lab's microscope?

It classifies a folder of the lab's own images with the model as it is (no guard or threshold
is changed), measures their acquisition statistics (edge_infer.site.stats) against the
training reference carried in the model, and gives one verdict with its reasons, each with
what to change at the microscope. With labelled sub-folders it also measures accuracy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..classifier import DEFAULT_BATCH, Classifier
from ..errors import EdgeInferError, ImageError
from ..io.inputs import expand_paths
from ..result import Failure, Reason, Status
from .rules import (
    GUARD_FAMILY,
    MIN_SITE_IMAGES,
    SEVERITY,
    SMALL_CLASS_N,
    SiteImage,
    SiteReport,
    Verdict,
    compare_stat,
    labelled_figures,
    labelled_findings,
    outcome_findings,
    stat_findings,
    unlisted_findings,
)
from .stats import SITE_STATS, site_statistics


class SiteCheckError(EdgeInferError):
    """The folder cannot be checked (too few images, unlabelled images with --labelled)."""


# --------------------------------------------------------------------------- inputs


def site_images(
    folder: Path, classes: Sequence[str], labelled: bool
) -> list[tuple[str, str | None]]:
    return site_inputs(folder, classes, labelled)[0]


def site_inputs(
    folder: Path, classes: Sequence[str], labelled: bool
) -> tuple[list[tuple[str, str | None]], list[tuple[str, str]]]:
    """(path, confirmed class or None) for every image under `folder` (each real file once,
    links into loops not followed), and the folders that could not be listed with the reason.
    Labelled: each image must sit in a sub-folder named after one of the model's classes."""
    inputs = expand_paths([str(folder)], recursive=True)
    files = inputs.files
    if not labelled:
        return [(str(f), None) for f in files], inputs.unlisted
    by_lower = {c.lower(): c for c in classes}
    out, stray = [], []
    for f in files:
        parent = Path(f).parent.name.lower()
        if parent in by_lower:
            out.append((str(f), by_lower[parent]))
        else:
            stray.append(f)
    if stray:
        raise SiteCheckError(
            f"--labelled: {len(stray)} image(s) are not in a folder named after a class "
            f"({', '.join(classes)}), e.g. {stray[0]}"
        )
    return out, inputs.unlisted


# --------------------------------------------------------------------------- the check


def refusal_family(clf: Classifier, stats: Sequence[float]) -> str:
    """For an image the image-statistics guard refused: which family of its statistics (the
    graph's `image_stats` output) is furthest from the training images, in units of their
    interquartile range (median and range travel in the metadata)."""
    guard = clf.meta.guards.image_stats or {}
    names, median, iqr = guard.get("stats"), guard.get("median"), guard.get("iqr")
    if not (names and median and iqr):
        return Reason.IMAGE.value
    z = np.abs(np.asarray(stats) - np.asarray(median)) / np.maximum(np.asarray(iqr), 1e-6)
    return GUARD_FAMILY.get(names[int(np.argmax(z))], Reason.IMAGE.value)


#: refused images shown in the report (the count covers them all)
MAX_THUMBNAILS = 60
THUMBNAIL_PX = 96


def thumbnail(bgr: np.ndarray) -> bytes:
    h, w = bgr.shape[:2]
    scale = THUMBNAIL_PX / max(h, w)
    small = cv2.resize(
        bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else b""


def check_site(
    clf: Classifier,
    folder: Path,
    labelled: bool = False,
    progress: Callable[[int], None] | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> SiteReport:
    meta = clf.meta
    reference = meta.site_reference
    if not reference:
        raise SiteCheckError(
            f"model {meta.version} carries no training reference for a site check "
            "(re-export it with `python -m export` after `python -m train.site_reference`)"
        )
    items, unlisted = site_inputs(folder, meta.class_names, labelled)
    if len(items) < MIN_SITE_IMAGES:
        raise SiteCheckError(
            f"{folder}: {len(items)} images; a site check needs at least {MIN_SITE_IMAGES} of "
            "the lab's own images"
        )
    spec = meta.preprocess
    images: list[SiteImage] = []
    refused = 0
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        loaded = []
        for path, truth in chunk:
            try:
                loaded.append((path, truth, clf.load(path, path)))
            except EdgeInferError as exc:
                loaded.append((path, truth, exc))
        good = [x for x in loaded if not isinstance(x[2], Exception)]
        preds = iter(clf.predict_arrays([g[2] for g in good], [g[0] for g in good]))
        for path, truth, img in loaded:
            if isinstance(img, Exception):
                # the path is in the record already, not again in the headline
                reason = img.reason if isinstance(img, ImageError) else str(img)
                images.append(SiteImage(path, truth, Failure(path, reason), None, None))
                continue
            pred = next(preds)
            why, thumb = None, None
            if pred.reason is Reason.IMAGE and pred.image_stats is not None:
                why = refusal_family(clf, pred.image_stats)
            if pred.status is Status.OUT_OF_DISTRIBUTION and refused < MAX_THUMBNAILS:
                thumb = thumbnail(img)
                refused += 1
            images.append(SiteImage(path, truth, pred, site_statistics(img, spec), why, thumb))
        if progress:
            progress(len(chunk))
    return summarise(clf, str(folder), images, labelled, unlisted)


def summarise(
    clf: Classifier,
    folder: str,
    images: list[SiteImage],
    labelled: bool,
    unlisted: list[tuple[str, str]] | None = None,
) -> SiteReport:
    meta = clf.meta
    n = len(images)
    status_counts = Counter(im.outcome.status.value for im in images)
    shares = {s.value: status_counts.get(s.value, 0) / n for s in Status}
    refusals = Counter(
        (im.why if im.outcome.reason is Reason.IMAGE else im.outcome.reason.value)
        for im in images
        if im.outcome.status is Status.OUT_OF_DISTRIBUTION
    )
    predicted = Counter(im.outcome.label for im in images if im.outcome.label is not None)
    measured = [im.stats for im in images if im.stats is not None]
    table = np.array(measured) if measured else np.empty((0, len(SITE_STATS)))
    summaries = {
        s.key: compare_stat(s, table[:, i], meta.site_reference) for i, s in enumerate(SITE_STATS)
    }
    findings, notes = stat_findings(summaries, meta.input.size)
    errors = status_counts.get(Status.ERROR.value, 0)
    findings = (
        outcome_findings(shares, dict(refusals), n, errors)
        + unlisted_findings(unlisted or [])
        + findings
    )
    figures = None
    if labelled:
        malignant = {c.name for c in meta.classes if c.malignant}
        figures = labelled_figures(images, meta.class_names, malignant)
        findings = labelled_findings(figures) + findings
        if figures["small_classes"]:
            notes.append(
                f"fewer than {SMALL_CLASS_N} confirmed images of "
                f"{', '.join(figures['small_classes'])}: their figures are rough (see the "
                "95% intervals)"
            )
    verdict = max((f.severity for f in findings), key=SEVERITY.index, default=Verdict.FITS)
    findings.sort(key=lambda f: -SEVERITY.index(f.severity))
    return SiteReport(
        folder=folder,
        model=meta.version,
        model_sha256=clf.model.sha256,
        n=n,
        verdict=verdict,
        findings=findings,
        shares=shares,
        refusals=dict(refusals),
        predicted={c: predicted.get(c, 0) for c in meta.class_names},
        stats=list(summaries.values()),
        images=images,
        labelled=figures,
        notes=notes,
    )
