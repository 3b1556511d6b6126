"""What a result is and how it reads: statuses, reasons, messages, headlines and record fields.

Every output (the table, CSV, JSON lines, the watcher's ledger, the page) is derived from the
record built here, so a status word, a message or a field is spelled once. A result that must not
be used never headlines a class: its `label` is None (the network's argmax stays available as
`raw_label`), and its headline starts with "Not recognised".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from .metadata import IMAGE_SCORE, OOD_SCORE, PROBABILITIES

#: version of the record layout below (1: the first release; 2: `label` is null unless the
#: result may be used, `raw_label`, `verdict`, `headline`, `reason` added, booleans dropped)
RECORD_SCHEMA = 2


class Status(str, Enum):
    """A result is exactly one of these; a failed input is `error`."""

    OK = "ok"
    UNCERTAIN = "uncertain"
    OUT_OF_DISTRIBUTION = "out_of_distribution"
    ERROR = "error"


class Reason(str, Enum):
    """Why a result is not `ok`: which rule fired first."""

    NO_CELL = "no_cell"
    IMAGE = "image_statistics"
    FEATURES = "features"
    LOW_CONFIDENCE = "low_confidence"
    # decided by the runtime around the graph (edge_infer.image.scale, edge_infer.tiles), so
    # not among the graph's REASON_CODES
    MAGNIFICATION = "magnification"
    FIELDS_DISAGREE = "fields_disagree"


#: what the graph's `status_code` and `reason_code` outputs mean (their index); train's graph
#: and the metadata's codes are made from these, and a model whose codes differ is refused
STATUS_CODES = (Status.OK, Status.UNCERTAIN, Status.OUT_OF_DISTRIBUTION)
REASON_CODES = (None, Reason.NO_CELL, Reason.IMAGE, Reason.FEATURES, Reason.LOW_CONFIDENCE)


def decision_codes() -> dict[str, list[str | None]]:
    """The codes in the metadata's words: {"status_code": [...], "reason_code": [...]}."""
    from .metadata import REASON_CODE, STATUS_CODE

    return {
        STATUS_CODE: [s.value for s in STATUS_CODES],
        REASON_CODE: [r.value if r else None for r in REASON_CODES],
    }


#: the one-word verdict of a result that must not be used (table, CSV)
NOT_RECOGNISED = "not_recognised"

MESSAGES: Mapping[Reason, str] = {
    Reason.NO_CELL: "no violet-stained cell in view",
    Reason.IMAGE: "colour, stain or sharpness unlike the training images "
    "(another stain, camera, magnification or focus?)",
    Reason.FEATURES: "unlike anything the model was trained on",
    Reason.LOW_CONFIDENCE: "confidence below the model's threshold",
    Reason.MAGNIFICATION: "cells larger than the model reads (a close-up, a single-cell crop "
    "or a higher magnification?): photograph whole fields at the training magnification",
    Reason.FIELDS_DISAGREE: "the fields of this image do not agree",
}
DO_NOT_USE = "do not use this result"
REVIEW = "review by a specialist"


def headline(
    status: Status, display_label: str | None, reason: Reason | None, error: str = ""
) -> str:
    """The one sentence a person reads first, the same in every output."""
    if status is Status.OK:
        return str(display_label)
    if status is Status.UNCERTAIN:
        # a frame read as tiles whose fields disagree says so: the review looks at every field
        why = f"{MESSAGES[reason]}; " if reason is Reason.FIELDS_DISAGREE else ""
        return f"Uncertain ({display_label}?): {why}{REVIEW}"
    if status is Status.OUT_OF_DISTRIBUTION:
        return f"Not recognised: {MESSAGES[reason] if reason else ''}; {DO_NOT_USE}"
    return f"Could not classify: {error}"


def verdict(status: Status, label: str | None) -> str:
    """One token per result for tables and spreadsheets: the class, or the status."""
    if status is Status.OK:
        return str(label)
    if status is Status.OUT_OF_DISTRIBUTION:
        return NOT_RECOGNISED
    return status.value


#: record fields other modules read by name
PATH = "path"
STATUS = "status"
VERDICT = "verdict"
LABEL = "label"
CONFIDENCE = "confidence"
HEADLINE = "headline"
ERROR = "error"
SCHEMA = "record_schema"
MODEL = "model"
#: fields only an image read at another scale has (JSON lines; not CSV columns): how many times
#: larger its cells looked than in training, and each tile's answer
MAGNIFICATION = "magnification"
TILES = "tiles"
#: record fields, in output order (probabilities is a mapping; CSV spreads it into p_<class>;
#: it and ood_score carry the graph's outputs under the graph's own output names)
RECORD_FIELDS = (
    PATH,
    VERDICT,
    STATUS,
    LABEL,
    "raw_label",
    CONFIDENCE,
    HEADLINE,
    "reason",
    PROBABILITIES,
    OOD_SCORE,
    IMAGE_SCORE,
    MODEL,
    ERROR,
    SCHEMA,
)
PROBABILITY_PREFIX = "p_"


def flat_fields(classes: Sequence[str], extra: Sequence[str] = ()) -> tuple[str, ...]:
    """CSV columns: the record fields with probabilities spread over the model's classes."""
    out: list[str] = []
    for f in (*RECORD_FIELDS, *extra):
        if f == PROBABILITIES:
            out += [PROBABILITY_PREFIX + c for c in classes]
        else:
            out.append(f)
    return tuple(out)


#: the table's column titles, in order
TABLE_COLUMNS = ("image", "verdict", "conf.", "note")
VERDICT_WIDTH = 14


def table_line(rec: Mapping[str, Any], printable=str, path_width: int = 0) -> str:
    """`path  verdict  confidence  headline`, readable in a terminal; a result that must not be
    used shows its verdict and headline only, never a class or a confidence. Paths are padded
    to `path_width` so the columns line up."""
    path = printable(str(rec[PATH])).ljust(path_width)
    if rec[STATUS] == Status.ERROR.value:
        return f"{path}  {rec[VERDICT]:<{VERDICT_WIDTH}}  {'-':>5}  {printable(rec[HEADLINE])}"
    conf = "-" if rec[LABEL] is None else f"{rec[CONFIDENCE]:.3f}"
    note = "" if rec[STATUS] == Status.OK.value else printable(rec[HEADLINE])
    if rec.get(TILES):  # read as tiles: say how many, so the answer is read as theirs
        note = f"read as {len(rec[TILES])} tiles" + (f"; {note}" if note else "")
    return f"{path}  {rec[VERDICT]:<{VERDICT_WIDTH}}  {conf:>5}  {note}".rstrip()


def table_header(path_width: int = 0) -> str:
    image, verdict_, conf, note = TABLE_COLUMNS
    return f"{image:<{path_width}}  {verdict_:<{VERDICT_WIDTH}}  {conf:>5}  {note}"


def log_line(rec: Mapping[str, Any], printable=str) -> str:
    """One log line per image (`name -> Pro 0.998 ok`); like the table, a result that must
    not be used shows no class and no confidence."""
    path = printable(str(rec[PATH]))
    status = rec[STATUS]
    if status == Status.OK.value:
        return f"{path} -> {rec[LABEL]} {rec[CONFIDENCE]:.3f} {status}"
    conf = "" if rec[LABEL] is None else f" {rec[CONFIDENCE]:.3f}"
    return f"{path} -> {rec[VERDICT]}{conf}: {printable(rec[HEADLINE])}"


def vocabulary() -> dict[str, Any]:
    """The words the page needs to read records, so it spells none of them itself (the error
    headline with `{reason}` where the page puts what went wrong on its side)."""
    return {
        "status": {s.name: s.value for s in Status},
        "error_headline": headline(Status.ERROR, None, None, "{reason}"),
    }


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row from a record."""
    row = {k: v for k, v in record.items() if k not in (PROBABILITIES, MAGNIFICATION, TILES)}
    for cls, p in (record.get(PROBABILITIES) or {}).items():
        row[PROBABILITY_PREFIX + cls] = p
    return row


@dataclass(frozen=True)
class Prediction:
    """One classified image. `label` is the answer to use, None when `status` says the
    result must not be used; `raw_label` is always the network's most probable class."""

    source: str
    status: Status
    raw_label: str
    display_label: str
    confidence: float
    probabilities: Mapping[str, float]
    reason: Reason | None
    ood_score: float | None
    image_score: float | None
    model: str
    #: the graph's stained share and image statistics (not part of the record)
    cell_fraction: float | None = None
    image_stats: tuple[float, ...] | None = None
    #: where the model looked (the graph's class activation map of the predicted class, h x w
    #: in [0, 1]); None for a model exported without it, or a TTA answer (not part of the
    #: record)
    cam: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: for an image not at the training scale (edge_infer.image.scale): how many times larger
    #: its cells looked, and, when it was read as tiles, each tile's answer and its box
    #: (x, y, width, height in the image's pixels)
    magnification: float | None = None
    tiles: tuple[tuple[tuple[int, int, int, int], Prediction], ...] | None = None

    ok = True

    @property
    def label(self) -> str | None:
        return None if self.status is Status.OUT_OF_DISTRIBUTION else self.raw_label

    @property
    def uncertain(self) -> bool:
        return self.status is Status.UNCERTAIN

    @property
    def out_of_distribution(self) -> bool:
        return self.status is Status.OUT_OF_DISTRIBUTION

    @property
    def headline(self) -> str:
        return headline(self.status, self.display_label, self.reason)

    def to_record(self) -> dict[str, Any]:
        values = (
            self.source,
            verdict(self.status, self.label),
            self.status.value,
            self.label,
            self.raw_label,
            round(self.confidence, 6),
            self.headline,
            self.reason.value if self.reason else None,
            {k: round(v, 6) for k, v in self.probabilities.items()},
            None if self.ood_score is None else round(self.ood_score, 4),
            None if self.image_score is None else round(self.image_score, 4),
            self.model,
            None,
            RECORD_SCHEMA,
        )
        rec = dict(zip(RECORD_FIELDS, values, strict=True))
        if self.magnification is not None:
            # JSON has no infinity: cells too large (or small) to measure have no figure
            m = self.magnification
            rec[MAGNIFICATION] = round(m, 3) if math.isfinite(m) else None
        if self.tiles is not None:
            rec[TILES] = [
                {
                    "box": list(box),
                    VERDICT: verdict(p.status, p.label),
                    CONFIDENCE: round(p.confidence, 6),
                    "reason": p.reason.value if p.reason else None,
                }
                for box, p in self.tiles
            ]
        return rec

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-safe values (`json.dumps(p.to_dict())` works)."""
        return self.to_record()


@dataclass(frozen=True)
class Failure:
    """An input that could not be classified, with the reason."""

    source: str
    error: str

    ok = False
    status = Status.ERROR
    label = None

    @property
    def headline(self) -> str:
        return headline(Status.ERROR, None, None, self.error)

    def to_record(self) -> dict[str, Any]:
        """The same fields as a prediction's (None where there is no value)."""
        return {
            **dict.fromkeys(RECORD_FIELDS),
            PATH: self.source,
            VERDICT: Status.ERROR.value,
            STATUS: Status.ERROR.value,
            HEADLINE: self.headline,
            ERROR: self.error,
            RECORD_FIELDS[-1]: RECORD_SCHEMA,
        }

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-safe values."""
        return self.to_record()


Outcome = Prediction | Failure


#: the decision: its conditions in priority order (the first that holds decides), the reason
#: and status each gives; the last holds always. The graph (train.graph_guards) is built from
#: this table and `decide` reads it, so the two cannot disagree.
DECISION: tuple[tuple[Reason | None, Status], ...] = (
    (Reason.NO_CELL, Status.OUT_OF_DISTRIBUTION),
    (Reason.IMAGE, Status.OUT_OF_DISTRIBUTION),
    (Reason.FEATURES, Status.OUT_OF_DISTRIBUTION),
    (Reason.LOW_CONFIDENCE, Status.UNCERTAIN),
    (None, Status.OK),
)


def decide(
    probabilities: Sequence[float],
    uncertain_below: float | Sequence[float],
    no_cell: bool,
    image_ood: bool,
    feature_ood: bool,
) -> tuple[int, Status, Reason | None]:
    """The decision rule: (argmax, status, reason). Not recognised beats uncertain; among the
    out-of-distribution rules the most specific reason is reported (no cell, then the image
    statistics, then the features). `uncertain_below`: one threshold, or one per class (the
    answer's own applies)."""
    k = max(range(len(probabilities)), key=lambda i: probabilities[i])
    if not isinstance(uncertain_below, (int, float)):
        uncertain_below = uncertain_below[k]
    holds = {
        Reason.NO_CELL: no_cell,
        Reason.IMAGE: image_ood,
        Reason.FEATURES: feature_ood,
        Reason.LOW_CONFIDENCE: probabilities[k] < uncertain_below,
        None: True,
    }
    reason, status = next((r, s) for r, s in DECISION if holds[r])
    return k, status, reason
