"""Keras callbacks: best-epoch selection in inference mode, and one progress line per epoch."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import keras
import numpy as np


class BestEpoch(keras.callbacks.Callback):
    """Keep the weights of the epoch with the best validation accuracy (Keras computes it in
    inference mode), lower validation loss breaking ties; stop after `patience` epochs without
    improvement and restore the best weights at the end."""

    def __init__(
        self,
        patience: int = 10,
        ema: keras.callbacks.Callback | None = None,
        state_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.patience = patience
        self.ema = ema  # a SwapEMAWeights callback: keep the averaged weights, not the raw ones
        self.best_key: tuple[float, float] | None = None
        self.best_epoch = 0
        self.best_weights = None
        # with a state folder the best epoch survives a stopped run (BackupAndRestore resumes
        # the training itself; this keeps what it has chosen so far)
        self.state_dir = state_dir
        if state_dir is not None and (state_dir / "best.json").exists():
            state = json.loads((state_dir / "best.json").read_text())
            self.best_key = tuple(state["key"])
            self.best_epoch = state["epoch"]
            with np.load(state_dir / "best_weights.npz") as z:
                self.best_weights = [z[f"arr_{i}"] for i in range(len(z.files))]

    def _save_state(self) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / "best_weights.tmp.npz"
        np.savez(tmp, *self.best_weights)
        tmp.replace(self.state_dir / "best_weights.npz")
        tmp_json = self.state_dir / "best.json.tmp"
        tmp_json.write_text(json.dumps({"key": list(self.best_key), "epoch": self.best_epoch}))
        tmp_json.replace(self.state_dir / "best.json")

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        key = (logs["val_accuracy"], -logs["val_loss"])
        if self.best_key is None or key > self.best_key:
            self.best_key = key
            self.best_epoch = epoch + 1
            if self.ema is not None:
                self.ema.on_test_begin()  # swaps the EMA weights in ...
                self.best_weights = self.model.get_weights()
                self.ema.on_test_end()  # ... and back out
            else:
                self.best_weights = self.model.get_weights()
            self._save_state()
        elif epoch + 1 - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class ProgressLine(keras.callbacks.Callback):
    """One line per epoch on stdout, flushed, so a log file shows progress as it happens."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.t0 = 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.t0 = time.time()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        sys.stdout.write(
            f"epoch {epoch + 1:3d}/{self.epochs}  loss {logs.get('loss', 0):.4f}  "
            f"acc {logs.get('accuracy', 0):.4f}  val_loss {logs.get('val_loss', 0):.4f}  "
            f"val_acc {logs.get('val_accuracy', 0):.4f}  {time.time() - self.t0:.0f}s\n"
        )
        sys.stdout.flush()
