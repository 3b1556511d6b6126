"""Cases: the images of one slide or patient, and one verdict for them by a rule stated in words.

A diagnosis is made per patient from many fields of a smear, not per image. An image belongs
to a case by its folder (the default: the immediate parent folder), by a mapping file (CSV
`path,case`) or by a name pattern (a regular expression whose first group is the case). The
rule (`CaseRule`) lives here, in the runtime, so that classify, watch and serve give one
answer; its thresholds are checked on the validation split's pseudo-patient groups by
`python -m train.case_rule` (never on test). Screening first: a case is called benign only
when no answered image is malignant; any mixture goes to review.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metadata import ModelMetadata
from .result import ERROR, LABEL, NOT_RECOGNISED, PATH, STATUS, VERDICT, Status

UNCERTAIN = Status.UNCERTAIN.value

#: the `kind` of a case record (image records carry no `kind`)
CASE_KIND = "case"
#: the case verdicts, in the words their sentence starts with
INSUFFICIENT, MALIGNANT, BENIGN, REVIEW = "insufficient", "malignant", "benign", "review"
#: the fields of a case record, in order
CASE_FIELDS = (
    "kind",
    "case",
    VERDICT,
    "case_verdict",
    "images",
    "answered",
    UNCERTAIN,
    NOT_RECOGNISED,
    "unreadable",
    "answers",
    "rule",
)


#: what a case summary reads of each image record
CASE_INPUT_FIELDS = (PATH, STATUS, LABEL, ERROR)


class CaseError(ValueError):
    """A case definition that cannot be used (a mapping file, a pattern)."""


@dataclass(frozen=True)
class CaseRule:
    """How the answered images of one case become its verdict, in this order:

    1. fewer than `min_answered` images answered (status ok): insufficient;
    2. at least `malignant_share` of the answered images malignant: malignant, naming the
       subtype when one has at least `subtype_share` of the malignant answers;
    3. no answered image malignant: benign;
    4. anything else: mixed, review.
    """

    min_answered: int = 3
    malignant_share: float = 0.5
    subtype_share: float = 0.6

    def describe(self) -> str:
        return (
            f"insufficient below {self.min_answered} answered images; malignant when at least "
            f"{self.malignant_share:.0%} of the answered images are malignant (the subtype "
            f"named when it has {self.subtype_share:.0%} of them); benign when none is; "
            "otherwise review"
        )


RULE = CaseRule()


# --------------------------------------------------------------------------- membership
@dataclass(frozen=True)
class CaseDefinition:
    """Which case an image belongs to: its folder, a mapping file's value, or a pattern."""

    mapping: Mapping[str, str] | None = None
    pattern: re.Pattern[str] | None = None

    def case_of(self, path: str) -> str:
        if self.mapping is not None:
            key = os.path.normpath(os.path.abspath(path))
            return self.mapping.get(key, "(not in the case map)")
        if self.pattern is not None:
            m = self.pattern.search(path)
            return m.group(1) if m and m.groups() else "(no case in the name)"
        return str(Path(path).parent)

    @classmethod
    def from_options(cls, case_map: str | None, case_pattern: str | None) -> CaseDefinition:
        if case_map and case_pattern:
            raise CaseError("give a case map or a case pattern, not both")
        if case_pattern:
            try:
                pattern = re.compile(case_pattern)
            except re.error as exc:
                raise CaseError(f"case pattern {case_pattern!r}: {exc}") from None
            if pattern.groups < 1:
                raise CaseError("the case pattern needs a group, e.g. 'slide-(\\d+)_'")
            return cls(pattern=pattern)
        if case_map:
            return cls(mapping=read_case_map(Path(case_map)))
        return cls()


def read_case_map(path: Path) -> dict[str, str]:
    """A CSV with columns `path,case`; relative paths are relative to the file's folder."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CaseError(f"case map {path}: {exc}") from None
    if not rows or not {PATH, "case"} <= set(rows[0]):
        raise CaseError(f"case map {path}: needs the columns path,case")
    base = path.parent
    out = {}
    for row in rows:
        p = Path(row[PATH])
        out[os.path.normpath(os.path.abspath(base / p if not p.is_absolute() else p))] = row["case"]
    return out


def csv_fields(classes: Iterable[str]) -> tuple[str, ...]:
    """The columns a case adds to classify's CSV: its fields, the answers spread per class;
    its verdict goes into the image rows' own `verdict` column."""
    out: list[str] = []
    for f in CASE_FIELDS:
        if f == "answers":
            out += [f"answers_{c}" for c in classes]
        elif f != VERDICT:
            out.append(f)
    return tuple(out)


def flat_case(record: Mapping[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in record.items() if k != "answers"}
    row.update({f"answers_{c}": k for c, k in record["answers"].items()})
    return row


def case_line(record: Mapping[str, Any]) -> str:
    """A case as one line of the table (the case id escaped by the writer's caller)."""
    return (
        f"case {record['case']}: {record[VERDICT]} ({record['images']} images: "
        f"{record['answered']} answered, {record[UNCERTAIN]} uncertain, "
        f"{record[NOT_RECOGNISED]} not recognised, {record['unreadable']} unreadable)"
    )


# --------------------------------------------------------------------------- tallies
@dataclass
class CaseTally:
    """What the images of one case were answered."""

    case: str
    images: int = 0
    answered: int = 0
    uncertain: int = 0
    not_recognised: int = 0
    unreadable: int = 0
    answers: Counter = field(default_factory=Counter)

    def add(self, record: Mapping[str, Any]) -> None:
        self.images += 1
        status = record.get(STATUS)
        if status == Status.OK.value and record.get(LABEL):
            self.answered += 1
            self.answers[record[LABEL]] += 1
        elif status == Status.UNCERTAIN.value:
            self.uncertain += 1
        elif status == Status.OUT_OF_DISTRIBUTION.value:
            self.not_recognised += 1
        elif status == Status.ERROR.value or record.get(ERROR):
            self.unreadable += 1


def verdict(tally: CaseTally, meta: ModelMetadata, rule: CaseRule = RULE) -> tuple[str, str]:
    """(verdict kind, the sentence people read) of one case under `rule`."""
    n = tally.answered
    if n < rule.min_answered:
        return INSUFFICIENT, (
            f"insufficient: {n} answered of {tally.images} images, fewer than "
            f"{rule.min_answered} usable"
        )
    malignant = {c: k for c, k in tally.answers.items() if meta.is_malignant(c)}
    m = sum(malignant.values())
    benign = n - m
    if m >= rule.malignant_share * n:
        top, k = max(malignant.items(), key=lambda ck: (ck[1], ck[0]))
        if k >= rule.subtype_share * m:
            return MALIGNANT, (
                f"malignant: {meta.display(top)} suspected, {k} of {n} answered images"
            )
        mix = ", ".join(f"{meta.display(c)} {v}" for c, v in sorted(malignant.items()))
        return MALIGNANT, (
            f"malignant: B-ALL suspected, subtype mixed ({mix}), {m} of {n} answered images"
        )
    if m == 0:
        return BENIGN, f"benign: {benign} of {n} answered images Benign"
    return REVIEW, f"mixed: review ({benign} Benign, {m} malignant of {n} answered images)"


def case_records(
    records: Iterable[Mapping[str, Any]],
    definition: CaseDefinition,
    meta: ModelMetadata,
    rule: CaseRule = RULE,
) -> list[dict[str, Any]]:
    """One case record per case, in order of first appearance."""
    book = CaseBook(definition, meta, rule)
    for rec in records:
        book.add(rec)
    return book.records()


def _case_record(t: CaseTally, meta: ModelMetadata, rule: CaseRule) -> dict[str, Any]:
    kind, words = verdict(t, meta, rule)
    return {
        "kind": CASE_KIND,
        "case": t.case,
        VERDICT: words,
        "case_verdict": kind,
        "images": t.images,
        "answered": t.answered,
        UNCERTAIN: t.uncertain,
        NOT_RECOGNISED: t.not_recognised,
        "unreadable": t.unreadable,
        "answers": {c: t.answers.get(c, 0) for c in meta.class_names},
        "rule": rule.describe(),
    }


def one_case(
    records: Iterable[Mapping[str, Any]], meta: ModelMetadata, case: str, rule: CaseRule = RULE
) -> dict[str, Any]:
    """The case record of images that form one case whatever their names (dropped together
    on the page)."""
    tally = CaseTally(case)
    for rec in records:
        tally.add(rec)
    return _case_record(tally, meta, rule)


def case_summary_path(results: Path) -> Path:
    """Where the watcher keeps its case summary: beside its results file."""
    return results.with_name(results.name + ".cases.jsonl")


class CaseBook:
    """The cases of a running watcher: each record added updates its case; the verdicts are
    kept so that a change can be told (and logged), and the whole summary is written by
    atomic replace, so a reader never sees half of it and a crash leaves the last one whole."""

    def __init__(
        self, definition: CaseDefinition, meta: ModelMetadata, rule: CaseRule = RULE
    ) -> None:
        self.definition = definition
        self.meta = meta
        self.rule = rule
        self.tallies: dict[str, CaseTally] = {}
        self.verdicts: dict[str, str] = {}

    def add(self, record: Mapping[str, Any]) -> tuple[str, str | None, str]:
        """(case, verdict before or None, verdict now) after one image record."""
        case = self.definition.case_of(str(record.get(PATH, "")))
        self.tallies.setdefault(case, CaseTally(case)).add(record)
        before = self.verdicts.get(case)
        self.verdicts[case] = verdict(self.tallies[case], self.meta, self.rule)[1]
        return case, before, self.verdicts[case]

    def records(self) -> list[dict[str, Any]]:
        return [_case_record(t, self.meta, self.rule) for t in self.tallies.values()]

    def write(self, path: Path) -> None:
        import json

        from .io.fileops import write_atomically

        lines = "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in self.records())
        write_atomically(path, lines)
