"""`python -m train.shift_compare A.json B.json ...`: shift reports side by side.

A lever is kept or rejected on validation (issue 29): this prints the summaries and every
shift of two or more `train.shift_eval` reports of the same split next to each other (served
/ uncertain / not recognised / silent errors per model), and refuses reports of different
splits or image counts, which would not compare like with like.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SUMMARY = (
    "inside_mean_served",
    "inside_min_served",
    "inside_max_silent_errors",
    "stress_max_silent_errors",
    "stress_max_silent_missed_malignant",
)
CELLS = ("served", "uncertain", "flagged", "silent_errors")


def compare(reports: list[dict]) -> list[str]:
    """The lines of the side-by-side table."""
    first = reports[0]
    for r in reports[1:]:
        if (r["split"], r["images"]) != (first["split"], first["images"]):
            raise ValueError(
                f"{r['model']}: {r['split']} ({r['images']} images) is not "
                f"{first['split']} ({first['images']} images)"
            )
        if [s["shift"] for s in r["shifts"]] != [s["shift"] for s in first["shifts"]]:
            raise ValueError(f"{r['model']}: another list of shifts")
    lines = [
        f"{first['split']}, {first['images']} images: " + " | ".join(r["model"] for r in reports)
    ]
    for key in SUMMARY:
        lines.append(f"  {key:36s} " + "  ".join(f"{r['summary'][key]:.4f}" for r in reports))
    lines.append(f"  {'shift':36s} " + " ".join("/".join(CELLS) for _ in reports))
    for i, shift in enumerate(first["shifts"]):
        cells = [r["shifts"][i] for r in reports]
        lines.append(
            f"  {shift['shift'][:36]:36s} "
            + "  ".join(
                "/".join(f"{c[k]:.{4 if k == 'silent_errors' else 3}f}" for k in CELLS)
                for c in cells
            )
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m train.shift_compare", description=__doc__)
    ap.add_argument("reports", type=Path, nargs="+", help="train.shift_eval JSON reports")
    args = ap.parse_args(argv)
    if len(args.reports) < 2:
        ap.error("give two reports or more")
    try:
        print("\n".join(compare([json.loads(p.read_text()) for p in args.reports])))
    except ValueError as exc:
        ap.error(str(exc))


if __name__ == "__main__":
    main()
