"""`python -m train --data DIR --out runs/NAME`: train, pick the best epoch, calibrate, report."""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from .acquisition import RANGES
    from .dataset import MANIFEST, default_data_root
    from .recipe import read_recipe

    ap = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    ap.add_argument(
        "--recipe",
        type=Path,
        default=None,
        help="a recipe file (TOML, keys = these options with underscores); flags override it",
    )
    ap.add_argument("--data", type=Path, default=default_data_root(), help="dataset root")
    ap.add_argument("--out", type=Path, required=True, help="run folder to write")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument(
        "--split-column",
        default="split",
        choices=("split", "group_split"),
        help="'split' (stratified, duplicate-aware) or 'group_split' (pseudo-patient groups)",
    )
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument(
        "--patience", type=int, default=12, help="stop after this many epochs without improvement"
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--mask-background", action="store_true", help="feed the segmented image")
    ap.add_argument("--no-color-jitter", action="store_true")
    ap.add_argument(
        "--acquisition",
        action="store_true",
        help="acquisition augmentation (train.acquisition: lamp, white balance, stain, focus, "
        "noise, JPEG, any angle, magnification, resolution); validation adds one fixed "
        "acquisition-shifted copy of the validation images",
    )
    ap.add_argument(
        "--acquisition-p",
        type=float,
        default=0.5,
        help="probability of each photometric acquisition change (train.acquisition)",
    )
    for flag, default, what in (
        ("--magnification", RANGES.magnification, "magnification"),
        ("--lamp", RANGES.brightness, "lamp intensity"),
    ):
        ap.add_argument(
            flag,
            type=float,
            nargs=2,
            default=list(default),
            metavar=("LO", "HI"),
            help=f"{what} range of the acquisition augmentation (log-uniform)",
        )
    ap.add_argument(
        "--linear-light",
        type=float,
        default=RANGES.linear_light,
        help="share of lamp changes made in linear light with sensor clipping",
    )
    ap.add_argument(
        "--init-weights",
        type=Path,
        default=None,
        help="start from this run's model.keras (fine-tuning) instead of random weights",
    )
    ap.add_argument(
        "--normalise",
        default="none",
        choices=("none", "white_patch"),
        help="acquisition normalisation in edge_infer.image.preprocess (travels in the model)",
    )
    ap.add_argument(
        "--ema",
        action="store_true",
        help="validate and keep an exponential moving average of the weights (momentum 0.99)",
    )
    ap.add_argument(
        "--consistency",
        type=float,
        default=0.0,
        help="weight of a Jensen-Shannon consistency loss between a clean and an acquired view "
        "of each training image (train.consistency; needs --acquisition; 0: off)",
    )
    ap.add_argument(
        "--class-weight",
        choices=("none", "balanced"),
        default="none",
        help="balanced: weight each class's loss by N / (classes * count), for the minority Benign",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--limit",
        type=int,
        default=0,
        help="at most this many images per class and split (smoke tests)",
    )
    ap.add_argument(
        "--uncertain-below",
        type=float,
        default=0.90,
        help="confidence under which a result is flagged for review",
    )
    ap.add_argument(
        "--uncertain-target",
        type=float,
        default=0.0,
        help="choose --uncertain-below on the validation images so that at most this share "
        "of them is uncertain (0: use --uncertain-below as given)",
    )
    ap.add_argument(
        "--strategy",
        default="default",
        choices=("default", "mirrored", "multiworker"),
        help="tf.distribute strategy: mirrored = all local GPUs/CPU, multiworker = TF_CONFIG hosts",
    )
    first, _ = ap.parse_known_args(argv)
    if first.recipe is not None:
        ap.set_defaults(**read_recipe(first.recipe, ap))
    args = ap.parse_args(argv)
    if args.consistency < 0:
        ap.error("--consistency must be >= 0")
    if args.consistency and not args.acquisition:
        ap.error("--consistency compares a clean and an acquired view: it needs --acquisition")
    if args.consistency and args.class_weight != "none":
        ap.error("--consistency does not weight classes: use --class-weight none")
    return args


def acquisition_ranges(args: argparse.Namespace):
    from .acquisition import RANGES

    return replace(
        RANGES,
        magnification=tuple(args.magnification),
        brightness=tuple(args.lamp),
        linear_light=args.linear_light,
    )


def repo_relative(path: Path) -> str:
    """A path inside the repository as written from its root (what metrics.json records, so
    it does not name the build machine's folders); other paths as given."""
    from .dataset import PROJECT_ROOT

    try:
        return Path(path).resolve().relative_to(PROJECT_ROOT.resolve()).as_posix()
    except ValueError:
        return str(path)


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    import cv2
    import keras
    import tensorflow as tf

    import edge_infer

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "edge_infer": edge_infer.__version__,
    }


def make_strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def load_splits(args: argparse.Namespace):
    """(paths, labels) of train, val and test from the manifest (at most --limit per class)."""
    from .dataset import CLASSES, read_manifest, select

    records = read_manifest(args.manifest)

    def split(name: str):
        rs = select(records, name, args.split_column)
        if args.limit:
            rs = [r for c in CLASSES for r in [x for x in rs if x.label == c][: args.limit]]
        return [args.data / r.path for r in rs], np.array([CLASSES.index(r.label) for r in rs])

    return split("train"), split("val"), split("test")


def make_datasets(args: argparse.Namespace, spec, splits):
    """Training, epoch-selection, validation and test datasets. With --acquisition the epoch
    is selected on clean AND acquisition-shifted validation images."""
    from .pipeline import make_dataset

    (xtr, ytr), (xva, yva), (xte, yte) = splits
    ds_tr = make_dataset(
        xtr,
        ytr,
        spec,
        args.batch_size,
        True,
        args.seed,
        not args.no_color_jitter,
        acquisition=args.acquisition,
        acquisition_p=args.acquisition_p,
        ranges=acquisition_ranges(args),
        paired=args.consistency > 0,
    )
    ds_va = make_dataset(xva, yva, spec, 64, False)
    ds_select = ds_va
    if args.acquisition:
        ds_select = ds_va.concatenate(
            make_dataset(
                xva, yva, spec, 64, False, shifted_seed=args.seed, ranges=acquisition_ranges(args)
            )
        )
    return ds_tr, ds_select, ds_va, make_dataset(xte, yte, spec, 64, False)


def compile_model(args: argparse.Namespace, n_train: int, n_classes: int):
    """The CNN under the chosen tf.distribute strategy, AdamW with warm-up + cosine decay.
    With --consistency, the model to fit is a train.consistency.ConsistencyTrainer around the
    CNN (`.net`): the functional network is what is saved and exported."""
    import keras

    from .consistency import ConsistencyTrainer
    from .model import build_model

    steps = args.epochs * int(np.ceil(n_train / args.batch_size))
    with make_strategy(args.strategy).scope():
        model = build_model(args.input_size, n_classes, width=args.width)
        if args.init_weights is not None:
            model.load_weights(args.init_weights)
        if args.consistency:
            model = ConsistencyTrainer(model, args.consistency)
        schedule = keras.optimizers.schedules.CosineDecay(
            args.lr * 0.1, steps, warmup_target=args.lr, warmup_steps=max(1, steps // 20)
        )
        model.compile(
            optimizer=keras.optimizers.AdamW(
                schedule, weight_decay=1e-4, use_ema=args.ema, ema_momentum=0.99
            ),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    return model


def class_weights(kind: str, y: np.ndarray, n_classes: int) -> dict[int, float] | None:
    if kind != "balanced":
        return None
    counts = np.bincount(y, minlength=n_classes)
    return {i: len(y) / (n_classes * c) for i, c in enumerate(counts) if c}


def fit(args: argparse.Namespace, model, ds_tr, ds_select, weights):
    """Train; keep the best validation epoch (BestEpoch). Returns (history, best epoch, s).

    The run checkpoints every epoch into OUT/backup (model, optimiser, epoch, the best epoch
    so far): the same command after a stopped run resumes where it stopped. Resumed epochs
    draw their augmentation from the start of the seed's sequence again, so a resumed run is
    not bit-identical to an uninterrupted one."""
    import keras

    from .callbacks import BestEpoch, ProgressLine

    backup = args.out / "backup"
    ema = keras.callbacks.SwapEMAWeights(swap_on_epoch=False) if args.ema else None
    best = BestEpoch(patience=args.patience, ema=ema, state_dir=backup)
    log = args.out / "epochs.csv"
    if not backup.exists():
        log.unlink(missing_ok=True)
    elapsed_file = backup / "seconds.txt"
    before = float(elapsed_file.read_text()) if elapsed_file.exists() else 0.0
    t0 = time.time()

    class Elapsed(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            backup.mkdir(parents=True, exist_ok=True)
            elapsed_file.write_text(f"{before + time.time() - t0:.1f}")

    model.fit(
        ds_tr,
        validation_data=ds_select,
        epochs=args.epochs,
        verbose=0,
        class_weight=weights,
        callbacks=[
            c
            for c in (
                keras.callbacks.BackupAndRestore(
                    str(backup), delete_checkpoint=False, double_checkpoint=True
                ),
                ema,
                best,
                keras.callbacks.CSVLogger(str(log), append=True),
                Elapsed(),
                ProgressLine(args.epochs),
            )
            if c is not None
        ],
    )
    return read_epoch_log(log), best.best_epoch, before + time.time() - t0


def read_epoch_log(path: Path) -> dict[str, list[float]]:
    """The per-epoch metrics of every process of a (possibly resumed) run; an epoch logged
    twice (stopped between the log and the checkpoint) keeps its last line."""
    rows: dict[int, dict] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows[int(row["epoch"])] = row
    keys = ["loss", "accuracy", "val_loss", "val_accuracy"]
    return {k: [float(rows[e][k]) for e in sorted(rows)] for k in keys}


def write_history(history: dict, best_epoch: int, out: Path) -> None:
    from .report import plot_curves

    with open(out / "history.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        keys = ["loss", "accuracy", "val_loss", "val_accuracy"]
        w.writerow(["epoch", *keys])
        for i in range(len(history["loss"])):
            w.writerow([i + 1, *(f"{history[k][i]:.6f}" for k in keys)])
    plot_curves(history, best_epoch, out / "curves.png")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from edge_infer.image.spec import PreprocessSpec

    from . import metrics as M
    from .dataset import CLASSES, manifest_hash
    from .model import LOGITS_LAYER, count_flops
    from .recipe import RECIPE_FILE, write_resolved
    from .report import plot_confusion

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    spec = replace(
        PreprocessSpec(),
        input_size=args.input_size,
        mask_background=args.mask_background,
        normalise=args.normalise,
    )
    splits = load_splits(args)
    (xtr, ytr), (xva, yva), (xte, yte) = splits
    print(f"train {len(xtr)}  val {len(xva)}  test {len(xte)}  ({args.split_column})", flush=True)
    command = "python -m train " + " ".join(sys.argv[1:] if argv is None else argv)
    recipe = write_resolved(args, out, command)
    ds_tr, ds_select, ds_va, ds_te = make_datasets(args, spec, splits)
    trainee = compile_model(args, len(xtr), len(CLASSES))
    model = getattr(trainee, "net", trainee)
    n_params = model.count_params()
    print(f"model: {n_params} parameters, {count_flops(model) / 1e6:.1f} M MACs/image", flush=True)
    weights = class_weights(args.class_weight, ytr, len(CLASSES))
    history, best_epoch, train_seconds = fit(args, trainee, ds_tr, ds_select, weights)
    write_history(history, best_epoch, out)
    model.save(out / "model.keras")

    # --- evaluation, all in inference mode (predict() never uses batch statistics)
    probe = keras.Model(model.input, model.get_layer(LOGITS_LAYER).output)

    def run(ds):
        return probe.predict(ds, verbose=0).astype(np.float64)

    lva = run(ds_va)
    lte = run(ds_te)
    temperature = M.fit_temperature(lva, yva)
    p_te_raw = M.softmax(lte, 1.0)
    p_te = M.softmax(lte, temperature)
    report = M.classification_report(yte, p_te, CLASSES)
    val_report = M.classification_report(yva, M.softmax(lva, temperature), CLASSES)
    uncertainty = M.uncertainty_report(args.uncertain_below, p_te, yte)
    if args.uncertain_target > 0:
        conf_va = M.softmax(lva, temperature).max(axis=1)
        threshold = M.threshold_for_share(conf_va, args.uncertain_target)
        uncertainty = M.uncertainty_report(
            threshold,
            p_te,
            yte,
            {"chosen_on": "val", "target_share": args.uncertain_target},
        )
    plot_confusion(
        np.array(report["confusion_matrix"]),
        CLASSES,
        out / "confusion_matrix.png",
        f"test split ({args.split_column}), n={len(yte)}, accuracy {report['accuracy']:.4f}",
    )
    metrics = {
        "split_column": args.split_column,
        "test": report,
        "val": {k: val_report[k] for k in ("n", "accuracy", "macro_f1")},
        "best_epoch": best_epoch,
        "epochs_run": len(history["loss"]),
        "calibration": {
            "temperature": temperature,
            "fitted_on": "val",
            "test_ece_before": M.expected_calibration_error(p_te_raw, yte),
            "test_ece_after": M.expected_calibration_error(p_te, yte),
            "test_nll_before": M.nll(lte, yte, 1.0),
            "test_nll_after": M.nll(lte, yte, temperature),
        },
        "uncertainty": uncertainty,
        "model": {
            "parameters": int(n_params),
            "macs_per_image": count_flops(model),
            "input_size": args.input_size,
            "width": args.width,
            "mask_background": args.mask_background,
        },
        "preprocess": json.loads(spec.to_json()),
        "training": {
            "seconds": round(train_seconds, 1),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "color_jitter": not args.no_color_jitter,
            "acquisition": args.acquisition,
            "acquisition_p": args.acquisition_p,
            "init_weights": str(args.init_weights) if args.init_weights else None,
            "class_weight": args.class_weight,
            "ema": args.ema,
            "consistency": args.consistency,
            "limit": args.limit,
            "strategy": args.strategy,
            "cpu_count": os.cpu_count(),
        },
        "acquisition_ranges": acquisition_ranges(args).to_json(),
        "recipe": recipe,
        "recipe_file": RECIPE_FILE,
        "classes": list(CLASSES),
        "manifest": repo_relative(args.manifest),
        "manifest_sha256": manifest_hash(args.manifest),
        "versions": library_versions(),
        "git_commit": _git_commit(),
        "command": command,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "config.json").write_text(json.dumps(vars(args), indent=2, default=str))
    # the out-of-distribution guards: fitted on train, thresholds from validation only
    from .guard import fit_guards

    guards = fit_guards(out, args.data, acquisition=args.acquisition, limit=args.limit)
    metrics["guards"] = guards["rates"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    # what `edge-infer check-site` compares a lab's images with
    from .site_reference import fit_site_reference

    fit_site_reference(out, args.data, limit=args.limit)
    # the scale rule's reference (its range is chosen on validation with the exported model:
    # python -m train.scale_fit --run RUN --model M.onnx, then export again)
    from .scale_fit import main as fit_scale

    fit_scale(["--run", str(out), "--data", str(args.data), "--limit", str(args.limit)])
    print(
        f"test accuracy {report['accuracy']:.4f}  macro F1 {report['macro_f1']:.4f}  "
        f"malignant sensitivity {report['malignant_sensitivity']:.4f}  "
        f"ECE {metrics['calibration']['test_ece_before']:.4f} -> "
        f"{metrics['calibration']['test_ece_after']:.4f} (T={temperature:.3f})  "
        f"best epoch {best_epoch}  {train_seconds / 60:.1f} min",
        flush=True,
    )
    # the run is complete: the same command again trains anew instead of resuming
    shutil.rmtree(out / "backup", ignore_errors=True)
    return metrics


if __name__ == "__main__":
    main()
