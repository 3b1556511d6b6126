"""Cases: membership by folder, mapping file and pattern; the case rule on constructed
mixtures (no model, no data)."""

from __future__ import annotations

import os

import pytest

from edge_infer.cases import (
    BENIGN,
    INSUFFICIENT,
    MALIGNANT,
    REVIEW,
    CaseDefinition,
    CaseError,
    CaseRule,
    CaseTally,
    case_records,
    verdict,
)
from edge_infer.metadata import ALL_PBS_CLASSES
from edge_infer.result import NOT_RECOGNISED


class Meta:
    """The parts of ModelMetadata the rule reads."""

    classes = ALL_PBS_CLASSES
    class_names = tuple(c.name for c in ALL_PBS_CLASSES)

    def is_malignant(self, name):
        return next(c.malignant for c in ALL_PBS_CLASSES if c.name == name)

    def display(self, name):
        return next(c.display for c in ALL_PBS_CLASSES if c.name == name)


META = Meta()


def tally(uncertain=0, not_recognised=0, unreadable=0, **answers) -> CaseTally:
    t = CaseTally("c")
    for cls, k in answers.items():
        for _ in range(k):
            t.add({"status": "ok", "label": cls})
    for _ in range(uncertain):
        t.add({"status": "uncertain", "label": "Pre"})
    for _ in range(not_recognised):
        t.add({"status": "out_of_distribution", "label": None})
    for _ in range(unreadable):
        t.add({"status": "error", "label": None, "error": "truncated"})
    return t


@pytest.mark.parametrize(
    "t, kind, words",
    [
        (tally(Pre=27, uncertain=2, not_recognised=1), MALIGNANT, "Pre-B ALL suspected, 27 of 27"),
        (tally(Benign=20), BENIGN, "benign: 20 of 20"),
        (tally(Benign=19, Pro=1), REVIEW, "mixed: review (19 Benign, 1 malignant"),
        (tally(Benign=10, Pre=6, Pro=5), MALIGNANT, "subtype mixed"),
        (tally(Pre=2, uncertain=10), INSUFFICIENT, "insufficient: 2 answered of 12"),
        (tally(unreadable=5), INSUFFICIENT, "fewer than 3 usable"),
    ],
)
def test_the_rule_on_constructed_mixtures(t, kind, words):
    k, sentence = verdict(t, META)
    assert k == kind and words in sentence, sentence
    assert sentence.startswith(kind if kind != REVIEW else "mixed")


def test_the_rule_describes_itself_and_can_be_stricter():
    strict = CaseRule(min_answered=10)
    assert verdict(tally(Pre=5), META, strict)[0] == INSUFFICIENT
    assert "10 answered" in strict.describe()


def test_cases_by_folder_map_and_pattern(tmp_path):
    records = [
        {"path": "/lab/slide-1/a.jpg", "status": "ok", "label": "Pro"},
        {"path": "/lab/slide-1/b.jpg", "status": "ok", "label": "Pro"},
        {"path": "/lab/slide-2/c.jpg", "status": "out_of_distribution", "label": None},
    ]
    by_folder = case_records(records, CaseDefinition(), META)
    assert [c["case"] for c in by_folder] == ["/lab/slide-1", "/lab/slide-2"]
    assert by_folder[0]["answers"]["Pro"] == 2 and by_folder[1][NOT_RECOGNISED] == 1
    assert all(c["kind"] == "case" for c in by_folder)
    by_pattern = case_records(
        records, CaseDefinition.from_options(None, r"slide-(\d+)"), META, CaseRule(1)
    )
    assert [c["case"] for c in by_pattern] == ["1", "2"]
    mapping = tmp_path / "cases.csv"
    mapping.write_text("path,case\nslide-1/a.jpg,P7\nslide-1/b.jpg,P7\n")
    os.makedirs(tmp_path / "slide-1")
    defn = CaseDefinition.from_options(str(mapping), None)
    recs = [{**r, "path": str(tmp_path / r["path"][5:])} for r in records]
    assert [c["case"] for c in case_records(recs, defn, META)] == ["P7", "(not in the case map)"]


def test_bad_definitions_are_refused(tmp_path):
    with pytest.raises(CaseError, match="needs a group"):
        CaseDefinition.from_options(None, r"slide-\d+")
    with pytest.raises(CaseError, match="not both"):
        CaseDefinition.from_options("x.csv", "(x)")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,patient\na,b\n")
    with pytest.raises(CaseError, match="path,case"):
        CaseDefinition.from_options(str(bad), None)
