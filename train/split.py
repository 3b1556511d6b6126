"""`python -m train.split --data DIR`: index the data, split it, write the committed manifest."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from .dataset import (
    MANIFEST,
    SPLITS,
    default_data_root,
    duplicates,
    grouped_split,
    index_dataset,
    pseudo_patient_groups,
    stratified_split,
    write_manifest,
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--out", type=Path, default=MANIFEST)
    ap.add_argument("--seed", type=int, default=20211)
    args = ap.parse_args(argv)

    print(f"indexing {args.data} ...", flush=True)
    records = index_dataset(args.data)
    dups = duplicates(records)
    print(f"{len(records)} images; {len(dups)} groups of byte-identical files:")
    for paths in dups:
        print("  duplicate: " + " = ".join(paths))
    records = stratified_split(records, seed=args.seed)
    print("clustering pseudo-patient groups ...", flush=True)
    groups = pseudo_patient_groups(args.data, records)
    gsplits = grouped_split(records, groups, seed=args.seed)
    records = [
        r.__class__(**{**r.__dict__, "group": g, "group_split": s})
        for r, g, s in zip(records, groups, gsplits, strict=True)
    ]
    write_manifest(records, args.out)
    for column in ("split", "group_split"):
        counts = Counter((getattr(r, column), r.label) for r in records)
        print(column + ":")
        for s in SPLITS:
            row = {lab: n for (sp, lab), n in counts.items() if sp == s}
            print(f"  {s:5s} {sum(row.values()):5d}  {dict(sorted(row.items()))}")
    print(f"{len({r.group for r in records})} pseudo-patient groups; manifest -> {args.out}")


if __name__ == "__main__":
    main()
