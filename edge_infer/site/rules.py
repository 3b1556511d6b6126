"""check-site's verdict, findings and their thresholds: what the lab's figures mean.

The types of a site check's result (Verdict, Finding, StatSummary, SiteImage, SiteReport) and
the rules that turn measured statistics and outcomes into findings; `check.py` runs the check.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from ..io.writers import printable
from ..metadata import IMAGE_STAT_FAMILIES
from ..result import HEADLINE, LABEL, NOT_RECOGNISED, PATH, STATUS, Outcome, Status
from .stats import SiteStat, quantile

#: fewer images say too little about a site (and the median of 30 is already noisy)
MIN_SITE_IMAGES = 30
#: the outcome rules: shares of the lab's images (the source lab's own test images: 0.7% not
#: recognised, 3.2% uncertain)
NOT_RECOGNISED_DO_NOT_USE = 0.20
NOT_RECOGNISED_CHECK = 0.05
UNCERTAIN_CHECK = 0.10
#: labelled images: below these the model does not fit (95% upper bound) or needs a check
ACCURACY_DO_NOT_USE = 0.90
ACCURACY_CHECK = 0.95
SENSITIVITY_CHECK = 0.97
#: per class, fewer labelled images than this make the figures too uncertain to lean on
SMALL_CLASS_N = 30
#: z for two-sided 99% (the "is the lab's median different" test) and 95% (intervals)
Z99 = 2.576
Z95 = 1.96
#: which guard-statistic family a not-recognised image's image-statistics score came from
GUARD_FAMILY = IMAGE_STAT_FAMILIES


class Verdict(str, Enum):
    FITS = "fits"
    CHECK = "fits_but_check"
    DOES_NOT_FIT = "does_not_fit"


VERDICT_WORDS = {
    Verdict.FITS: "Fits: the model can be used on images from this microscope.",
    Verdict.CHECK: "Fits, but check: usable, with the reasons below looked at first.",
    Verdict.DOES_NOT_FIT: "Does not fit: do not use the model on images from this microscope.",
}
#: `edge-infer check-site` exit codes (2 is a usage error, as everywhere)
EXIT_CODES = {Verdict.FITS: 0, Verdict.CHECK: 3, Verdict.DOES_NOT_FIT: 4}
SEVERITY = [Verdict.FITS, Verdict.CHECK, Verdict.DOES_NOT_FIT]


@dataclass(frozen=True)
class Finding:
    """One reason for the verdict: how bad, what was measured, what to do."""

    severity: Verdict
    topic: str
    measured: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return {
            "severity": self.severity.value,
            "topic": self.topic,
            "measured": self.measured,
            "fix": self.fix,
        }


@dataclass
class StatSummary:
    """One acquisition statistic: the lab's median and spread against the training range."""

    stat: SiteStat
    lab: dict[str, float]
    training: dict[str, float]
    measurable: float
    direction: str = ""  # "low", "high" or "" (inside)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.stat.key,
            "title": self.stat.title,
            "unit": self.stat.unit,
            "lab": self.lab,
            "training": self.training,
            "measurable_share": self.measurable,
            "direction": self.direction,
        }


@dataclass
class SiteImage:
    path: str
    truth: str | None
    outcome: Outcome
    stats: np.ndarray | None
    why: str | None  # for an image-statistics refusal: colour / stain / sharpness
    thumbnail: bytes | None = None  # a small JPEG of a refused image, for the report

    @property
    def shown(self) -> str:
        """What classify's `label` column holds, or the reason there is none."""
        if self.outcome.status is Status.ERROR:
            return Status.ERROR.value
        return self.outcome.label or NOT_RECOGNISED


@dataclass
class SiteReport:
    folder: str
    model: str
    model_sha256: str
    n: int
    verdict: Verdict
    findings: list[Finding]
    shares: dict[str, float]
    refusals: dict[str, int]
    predicted: dict[str, int]
    stats: list[StatSummary]
    images: list[SiteImage]
    labelled: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "model_version": self.model,
            "model_sha256": self.model_sha256,
            "n_images": self.n,
            "site_verdict": self.verdict.value,
            "verdict_words": VERDICT_WORDS[self.verdict],
            "findings": [f.to_dict() for f in self.findings],
            "shares": self.shares,
            "not_recognised_by_reason": self.refusals,
            "predicted": self.predicted,
            "statistics": [s.to_dict() for s in self.stats],
            "labelled": self.labelled,
            "notes": self.notes,
            "images": [
                {
                    PATH: im.path,
                    "truth": im.truth,
                    STATUS: im.outcome.status.value,
                    LABEL: im.outcome.label,
                    HEADLINE: im.outcome.headline,
                    "why": im.why,
                }
                for im in self.images
            ],
        }


# --------------------------------------------------------------------------- statistics


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n (sound at small n and at 0 or n)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, centre - half), min(1.0, centre + half))


def compare_stat(stat: SiteStat, values: np.ndarray, reference: dict) -> StatSummary:
    """The lab's median against the training images'. `direction` is set when the median lies
    both outside the training's middle half and outside what a sample of this many training
    images would give in 99 of 100 draws (the median of n draws sits at quantile
    0.5 +- z*0.5/sqrt(n)), so neither a tiny shift nor a small sample raises it."""
    ok = values[~np.isnan(values)]
    q = lambda p: quantile(reference, stat.key, p)  # noqa: E731
    training = {"p1": q(0.01), "p5": q(0.05), "median": q(0.5), "p95": q(0.95), "p99": q(0.99)}
    measurable = float(len(ok) / len(values)) if len(values) else 0.0
    if len(ok) == 0:
        return StatSummary(stat, {}, training, 0.0)
    lab = {
        "p5": float(np.percentile(ok, 5)),
        "median": float(np.median(ok)),
        "p95": float(np.percentile(ok, 95)),
    }
    half = Z99 * 0.5 / math.sqrt(len(ok))
    low = min(q(max(0.0, 0.5 - half)), q(0.25))
    high = max(q(min(1.0, 0.5 + half)), q(0.75))
    direction = "low" if lab["median"] < low else "high" if lab["median"] > high else ""
    if abs(lab["median"] - training["median"]) < stat.min_shift:
        direction = ""
    if direction == "low" and not stat.if_low or direction == "high" and not stat.if_high:
        direction = ""  # a direction that does not matter (e.g. no clipped pixels)
    return StatSummary(stat, lab, training, measurable, direction)


def stat_findings(
    summaries: dict[str, StatSummary], input_size: int
) -> tuple[list[Finding], list[str]]:
    """Findings from the statistics, with the causal links between them resolved: a smaller
    magnification makes cells smaller AND the image sharper, a larger one the reverse, and a
    different stain makes the stained cells' size unreliable."""
    notes: list[str] = []
    off = {k: s for k, s in summaries.items() if s.direction}
    balance = [k for k in ("red_blue_balance", "green_balance") if k in off]
    strength = summaries.get("stain_strength")
    colourless = strength and strength.lab and strength.lab["median"] < strength.training["p1"]
    if balance and colourless:
        notes.append("white balance not judged: the images hold (almost) no colour")
        for k in balance:
            off.pop(k)
    elif balance and off.get("clipped_share"):
        notes.append("white balance not judged: the background is saturated white")
        for k in balance:
            off.pop(k)
    stain_off = any(k in off for k in ("stain_hue", "stain_strength"))
    size = off.get("cell_size")
    if size and stain_off:
        notes.append("cell size not judged: the stain differs, so the stained area does too")
        off.pop("cell_size")
        size = None
    sharp = off.get("sharpness")
    if size and sharp and size.direction != sharp.direction:
        notes.append(
            "sharpness explained by the magnification (cells smaller and sharper together, "
            "or larger and softer)"
        )
        off.pop("sharpness")
    findings = []
    side = summaries.get("image_side_px")
    too_small = bool(side and side.lab and side.lab["median"] < input_size)
    if too_small:
        off.pop("image_side_px", None)  # said once, below, as what the network cannot use
    for key, s in off.items():
        stat = s.stat
        fix = stat.if_low if s.direction == "low" else stat.if_high
        severity = Verdict.CHECK
        # what the model cannot see through, however it was trained: no colour at all, or
        # fewer pixels than its input
        if key == "stain_strength" and colourless:
            severity = Verdict.DOES_NOT_FIT
        findings.append(
            Finding(
                severity,
                stat.title,
                f"lab median {s.lab['median']:.3g} ({s.lab['p5']:.3g}-{s.lab['p95']:.3g}); "
                f"training median {s.training['median']:.3g} "
                f"({s.training['p5']:.3g}-{s.training['p95']:.3g}, 5-95%)",
                fix,
            )
        )
    if too_small:
        findings.append(
            Finding(
                Verdict.DOES_NOT_FIT,
                side.stat.title,
                f"lab median {side.lab['median']:.0f} px; the network needs {input_size} px",
                side.stat.if_low,
            )
        )
    return findings, notes


# --------------------------------------------------------------------------- outcomes


def outcome_findings(
    shares: dict[str, float], refusals: dict[str, int], n: int, errors: int = 0
) -> list[Finding]:
    findings = []
    nr = shares[Status.OUT_OF_DISTRIBUTION.value]
    why = ", ".join(f"{k} {v}" for k, v in sorted(refusals.items(), key=lambda kv: -kv[1]))
    measured = f"{nr:.0%} of {n} images not recognised" + (f" ({why})" if why else "")
    if nr > NOT_RECOGNISED_DO_NOT_USE:
        findings.append(
            Finding(
                Verdict.DOES_NOT_FIT,
                "images not recognised",
                measured,
                "the images differ from the training images: see the statistics for what to change",
            )
        )
    elif nr > NOT_RECOGNISED_CHECK:
        findings.append(
            Finding(
                Verdict.CHECK,
                "images not recognised",
                measured,
                "look at the refused images in the report: a cause at the microscope, or images "
                "without a white cell in view",
            )
        )
    unc = shares[Status.UNCERTAIN.value]
    if unc > UNCERTAIN_CHECK:
        findings.append(
            Finding(
                Verdict.CHECK,
                "uncertain results",
                f"{unc:.0%} of the images uncertain (source lab: about 3%)",
                "expect more results sent for review; see the statistics for what differs",
            )
        )
    if shares[Status.ERROR.value] > 0:
        findings.append(
            Finding(
                Verdict.CHECK,
                "unreadable files",
                f"{share_words(errors, n)} files could not be read",
                "save images as JPEG, PNG or TIFF, completely written",
            )
        )
    return findings


def labelled_figures(images: list[SiteImage], classes: Sequence[str], malignant: set[str]):
    """Accuracy, per-class recall, malignant sensitivity (95% Wilson intervals) and the
    confusion matrix (rows: confirmed class; columns: what classify reports)."""
    columns = [*classes, NOT_RECOGNISED, Status.ERROR.value]
    counts = Counter((im.truth, im.shown) for im in images)
    confusion = [[counts[(t, c)] for c in columns] for t in classes]
    answered = [im for im in images if im.outcome.label is not None]
    served = [im for im in answered if im.outcome.status is Status.OK]

    def rate(subset, hit: Callable[[SiteImage], bool]) -> dict[str, Any]:
        k, n = sum(map(hit, subset)), len(subset)
        lo, hi = wilson(k, n)
        return {"value": k / n if n else None, "k": k, "n": n, "ci95": [lo, hi]}

    correct = lambda im: im.outcome.label == im.truth  # noqa: E731
    figures = {
        "columns": columns,
        "rows": list(classes),
        "confusion": confusion,
        "accuracy_answered": rate(answered, correct),
        "accuracy_ok": rate(served, correct),
        "malignant_sensitivity": rate(
            [im for im in answered if im.truth in malignant],
            lambda im: im.outcome.label in malignant,
        ),
        "recall": {c: rate([im for im in answered if im.truth == c], correct) for c in classes},
    }
    small = [c for c in classes if sum(1 for im in images if im.truth == c) < SMALL_CLASS_N]
    figures["small_classes"] = small
    return figures


def labelled_findings(fig: dict) -> list[Finding]:
    out = []
    acc, sens = fig["accuracy_ok"], fig["malignant_sensitivity"]
    for name, f, check_below in (
        ("accuracy of the answers given", acc, ACCURACY_CHECK),
        ("malignant sensitivity", sens, SENSITIVITY_CHECK),
    ):
        if f["value"] is None:
            continue
        measured = (
            f"{f['value']:.3f} ({f['k']}/{f['n']}; 95% CI {f['ci95'][0]:.3f}-{f['ci95'][1]:.3f})"
        )
        if f["ci95"][1] < ACCURACY_DO_NOT_USE:
            out.append(
                Finding(Verdict.DOES_NOT_FIT, name, measured, "the model is wrong too often here")
            )
        elif f["value"] < check_below:
            out.append(
                Finding(
                    Verdict.CHECK,
                    name,
                    measured,
                    "check the misclassified images with a specialist before relying on it",
                )
            )
    return out


def share_words(k: int, n: int) -> str:
    """`k of n (p%)`, never a rounded 0% or 100% for a count that is not."""
    p = k / n if n else 0.0
    pct = f"{p:.0%}"
    if k > 0 and pct == "0%":
        pct = "<1%"
    elif k < n and pct == "100%":
        pct = ">99%"
    return f"{k} of {n:,} ({pct})"


def unlisted_findings(unlisted: list[tuple[str, str]]) -> list[Finding]:
    """Folders that could not be listed: their images are missing from the check, so the
    verdict cannot be 'fits' on what was seen."""
    if not unlisted:
        return []
    folder, reason = unlisted[0]
    more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
    return [
        Finding(
            Verdict.CHECK,
            "folders not read",
            f"{len(unlisted)} folder(s) could not be listed ({printable(folder)}: {reason}{more}); "
            "their images are not in this check",
            "let the user running check-site read every folder, or check them on their own",
        )
    ]
