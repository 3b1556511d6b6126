"""`python -m train.uncertain_threshold --run RUN --target 0.025 [--benign-safety]`: choose a
finished run's uncertain threshold on its validation images (at most `target` of them
uncertain), as `python -m train --uncertain-target` does at the end of a run, and with
`--benign-safety` a stricter one for Benign answers: the lowest at which no malignant
validation image (clean, or the run's acquisition-shifted copy) is answered Benign. Both are
recorded in metrics.json with what they do on the test split; the export takes them from
there (the graph applies each answer's own threshold)."""

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
    ap.add_argument(
        "--benign-safety",
        action="store_true",
        help="a stricter threshold for Benign answers, chosen on validation (clean + shifted)",
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from edge_infer.image.spec import PreprocessSpec

    from . import metrics as M
    from .acquisition import Ranges
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

    ranges = Ranges.from_json(metrics.get("acquisition_ranges"))

    def probabilities(split: str, shifted_seed: int | None = None):
        rs = select(records, split, metrics["split_column"])
        y = np.array([CLASSES.index(r.label) for r in rs])
        paths = [data / r.path for r in rs]
        ds = make_dataset(paths, y, spec, 64, False, shifted_seed=shifted_seed, ranges=ranges)
        return M.softmax(probe.predict(ds, verbose=0).astype(np.float64), temperature), y

    p_va, y_va = probabilities("val")
    p_te, y_te = probabilities("test")
    threshold = M.threshold_for_share(p_va.max(axis=1), args.target)
    chosen: dict = {"chosen_on": "val", "target_share": args.target}
    by_class = None
    if args.benign_safety:
        p_sh, y_sh = probabilities("val", shifted_seed=int(metrics["training"]["seed"]))
        both_p, both_y = np.concatenate([p_va, p_sh]), np.concatenate([y_va, y_sh])
        by_class = {M.BENIGN_INDEX: M.benign_threshold(both_p, both_y, M.BENIGN_INDEX, threshold)}
        chosen["benign_chosen_on"] = "val, clean and acquisition-shifted"
    metrics["uncertainty"] = M.uncertainty_report(
        threshold, p_te, y_te, chosen, by_class, tuple(CLASSES)
    )
    (args.run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics["uncertainty"], indent=2))
    return metrics["uncertainty"]


if __name__ == "__main__":
    main()
