"""`python -m export.rewrite_metadata --run RUN --model M.onnx`: write the metadata of RUN into
an already exported model, leaving its graph untouched (e.g. after `train.guard` re-fitted the
thresholds, or to add the figures of the same recipe on another split with `--also-run`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx

from edge_infer.metadata import SCHEMA_KEY, ModelMetadata
from train.guard import GUARDS_FILE
from train.site_reference import read_site_reference

from .onnx_export import metadata_for, write_metadata


def main(argv: list[str] | None = None) -> ModelMetadata:
    ap = argparse.ArgumentParser(prog="python -m export.rewrite_metadata", description=__doc__)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--version", default=None, help="default: the model's current version")
    ap.add_argument("--also-run", type=Path, action="append", default=[])
    args = ap.parse_args(argv)
    proto = onnx.load(str(args.model))
    old = {p.key: p.value for p in proto.metadata_props}
    metrics = json.loads((args.run / "metrics.json").read_text())
    guards = json.loads((args.run / GUARDS_FILE).read_text())
    version = args.version or json.loads(old.get("version", old.get("model_version", '""')))
    if SCHEMA_KEY in old:
        old_uncertain = json.loads(old["uncertain_below"])
    else:
        old_uncertain = metrics["uncertainty"]["threshold"]
    others = [json.loads((r / "metrics.json").read_text()) for r in args.also_run]
    meta = metadata_for(
        metrics, version, old_uncertain, guards, others, read_site_reference(args.run)
    )
    write_metadata(proto, meta)
    onnx.save(proto, str(args.model))
    print(f"{args.model}: metadata schema rewritten from {args.run} (version {version})")
    return meta


if __name__ == "__main__":
    main()
