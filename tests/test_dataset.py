"""The committed split manifest: stratified, duplicate-safe, pseudo-patient groups disjoint."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from train.dataset import (
    CLASSES,
    MANIFEST,
    Record,
    duplicates,
    grouped_split,
    index_dataset,
    read_manifest,
    sha256_file,
    stratified_split,
)

records = read_manifest(MANIFEST)


def test_manifest_has_every_class_in_every_split():
    for column in ("split", "group_split"):
        counts = Counter((getattr(r, column), r.label) for r in records)
        for s in ("train", "val", "test"):
            for c in CLASSES:
                assert counts[(s, c)] > 0, (column, s, c)


def test_split_is_stratified_70_15_15():
    by_class = Counter(r.label for r in records)
    counts = Counter((r.split, r.label) for r in records)
    for c in CLASSES:
        for s, frac in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
            assert abs(counts[(s, c)] / by_class[c] - frac) < 0.02, (s, c)


def test_identical_files_share_split_and_group():
    by_hash = defaultdict(list)
    for r in records:
        by_hash[r.sha256].append(r)
    dup_sets = [rs for rs in by_hash.values() if len(rs) > 1]
    assert len(dup_sets) == 33
    for rs in dup_sets:
        assert len({r.split for r in rs}) == 1
        assert len({r.group for r in rs}) == 1


def test_groups_never_cross_grouped_splits():
    split_of = defaultdict(set)
    for r in records:
        split_of[r.group].add(r.group_split)
        assert r.group.startswith(r.label)
    assert all(len(s) == 1 for s in split_of.values())
    assert len(split_of) == 89


def test_manifest_matches_the_data(data):
    for r in records[::97]:
        assert sha256_file(data / r.path) == r.sha256


def test_index_and_split_functions_on_real_folder(data, tmp_path):
    # a small copy in the <root>/<class>/ layout, with a planted duplicate
    for c in CLASSES:
        (tmp_path / c).mkdir()
        for f in sorted((data / "Original" / c).glob("*.jpg"))[:10]:
            (tmp_path / c / f.name).write_bytes(f.read_bytes())
    first = sorted((tmp_path / "Early").iterdir())[0]
    (tmp_path / "Early" / "copy.jpg").write_bytes(first.read_bytes())
    recs = index_dataset(tmp_path)
    assert len(recs) == 41
    assert [r.label for r in recs][:10] == ["Benign"] * 10
    assert duplicates(recs) == [[f"Early/{first.name}", "Early/copy.jpg"]]
    split = stratified_split(recs, seed=1)
    pair = [r for r in split if r.sha256 == sha256_file(first)]
    assert len({r.split for r in pair}) == 1


def test_grouped_split_keeps_groups_whole():
    recs = [Record(f"{c}/{i}.jpg", c, f"h{c}{i}") for c in CLASSES for i in range(40)]
    groups = [f"{r.label}-{i // 4}" for i, r in enumerate(recs)]
    splits = grouped_split(recs, groups, seed=0)
    seen = defaultdict(set)
    for g, s in zip(groups, splits, strict=True):
        seen[g].add(s)
    assert all(len(v) == 1 for v in seen.values())
    assert set(splits) == {"train", "val", "test"}


@pytest.mark.parametrize("column", ["split", "group_split"])
def test_manifest_columns(column):
    assert {getattr(r, column) for r in records} == {"train", "val", "test"}
