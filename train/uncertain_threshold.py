"""`python -m train.uncertain_threshold --run RUN --target 0.025`: choose a finished run's
uncertain threshold on its validation images (at most `target` of them uncertain), as
`python -m train --uncertain-target` does at the end of a run, and record it in metrics.json
with what it does on the test split. The export takes it from there."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.uncertain_threshold", description=__doc__)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--target", type=float, required=True, help="share of validation images")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from edge_infer.image.spec import PreprocessSpec

    from . import metrics as M
    from .dataset import CLASSES, default_data_root, read_manifest, run_manifest, select
    from .model import LOGITS_LAYER
    from .pipeline import make_dataset

    metrics = json.loads((args.run / "metrics.json").read_text())
    spec = PreprocessSpec.from_json(metrics["preprocess"])
    data = Path(metrics.get("recipe", {}).get("data", default_data_root()))
    records = read_manifest(run_manifest(metrics))
    model = keras.models.load_model(args.run / "model.keras", compile=False)
    probe = keras.Model(model.input, model.get_layer(LOGITS_LAYER).output)
    temperature = metrics["calibration"]["temperature"]

    def probabilities(split: str):
        rs = select(records, split, metrics["split_column"])
        y = np.array([CLASSES.index(r.label) for r in rs])
        ds = make_dataset([data / r.path for r in rs], y, spec, 64, False)
        return M.softmax(probe.predict(ds, verbose=0).astype(np.float64), temperature), y

    p_va, _ = probabilities("val")
    p_te, y_te = probabilities("test")
    threshold = M.threshold_for_share(p_va.max(axis=1), args.target)
    metrics["uncertainty"] = M.uncertainty_report(
        threshold, p_te, y_te, {"chosen_on": "val", "target_share": args.target}
    )
    (args.run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics["uncertainty"], indent=2))
    return metrics["uncertainty"]


if __name__ == "__main__":
    main()
