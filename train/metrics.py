"""Classification metrics, calibration (temperature scaling, ECE) and out-of-distribution
statistics; numpy only so they can be tested without TensorFlow."""

from __future__ import annotations

import numpy as np

from edge_infer.metadata import ALL_PBS_CLASSES

MALIGNANT = tuple(c.name for c in ALL_PBS_CLASSES if c.malignant)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)[np.arange(len(y_true)), y_true]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


#: lowest temperature considered: when validation has (almost) no errors, the NLL keeps falling
#: as T -> 0 and an unbounded fit makes the model wildly over-confident elsewhere (seen on the
#: pseudo-patient split: validation 100% correct, T hit 0.05, test ECE rose 0.033 -> 0.043)
MIN_TEMPERATURE = 0.5


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Temperature minimising the validation NLL (a 1-D search over log T in [0.5, 20])."""
    grid = np.exp(np.linspace(np.log(MIN_TEMPERATURE), np.log(20.0), 400))
    losses = [nll(logits, y_true, t) for t in grid]
    best = int(np.argmin(losses))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    fine = np.linspace(lo, hi, 200)
    return float(fine[int(np.argmin([nll(logits, y_true, t) for t in fine]))])


def threshold_for_share(
    confidence: np.ndarray, target_share: float, lo: float = 0.5, hi: float = 0.99
) -> float:
    """The highest threshold on a 0.01 grid in [lo, hi] under which at most `target_share` of
    these (validation) confidences fall: as much review as the target allows, no more."""
    best = lo
    for t in np.round(np.arange(lo, hi + 1e-9, 0.01), 2):
        if float((confidence < t).mean()) <= target_share:
            best = float(t)
    return best


#: the index of the benign class in the dataset's class order (the others are malignant)
BENIGN_INDEX = next(i for i, c in enumerate(ALL_PBS_CLASSES) if not c.malignant)


def benign_threshold(
    p: np.ndarray, y: np.ndarray, benign: int, base: float, cap: float = 0.99
) -> float:
    """The lowest threshold (>= base, 0.01 grid, <= cap) at which no malignant image of these
    (validation) images is answered Benign with status ok: a missed leukemia costs more than
    a review, so Benign is the hardest answer to give."""
    called_benign = (p.argmax(1) == benign) & (y != benign)
    worst = float(p[called_benign, benign].max()) if called_benign.any() else 0.0
    return float(min(cap, max(base, np.ceil(worst * 100 + 1e-9) / 100)))


def uncertainty_report(
    threshold: float,
    p_test: np.ndarray,
    y_test: np.ndarray,
    chosen: dict | None = None,
    by_class: dict[int, float] | None = None,
    classes: tuple[str, ...] = (),
) -> dict:
    """The uncertain threshold (and any class's own) and what it does on the test split (never
    chosen on test)."""
    k = p_test.argmax(axis=1)
    per_image = np.full(len(k), threshold)
    for c, t in (by_class or {}).items():
        per_image[k == c] = t
    certain = p_test.max(axis=1) >= per_image
    return {
        "threshold": threshold,
        **({"by_class": {classes[c]: t for c, t in by_class.items()}} if by_class else {}),
        **(chosen or {"chosen_on": "given"}),
        "test_share_uncertain": float(1 - certain.mean()),
        "test_accuracy_when_certain": float((p_test.argmax(1) == y_test)[certain].mean())
        if certain.any()
        else None,
        # malignant images answered Benign without a flag (before the guards), of all images
        "test_silent_missed_malignant": float(
            (certain & (k == BENIGN_INDEX) & (y_test != BENIGN_INDEX)).mean()
        ),
    }


def classification_report(y_true: np.ndarray, probs: np.ndarray, classes: tuple[str, ...]) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1 and benign-vs-malignant rates."""
    y_pred = probs.argmax(axis=1)
    cm = confusion(y_true, y_pred, len(classes))
    per_class = {}
    f1s = []
    for i, name in enumerate(classes):
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        f1s.append(f1)
        per_class[name] = {
            "precision": float(prec),
            "recall": float(rec),
            "f1": float(f1),
            "support": int(cm[i, :].sum()),
        }
    malignant = np.isin(np.array(classes)[y_true], MALIGNANT)
    called_malignant = np.isin(np.array(classes)[y_pred], MALIGNANT)
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": float(np.mean(f1s)),
        "per_class": per_class,
        "malignant_sensitivity": float(called_malignant[malignant].mean())
        if malignant.any()
        else None,
        "benign_specificity": float((~called_malignant[~malignant]).mean())
        if (~malignant).any()
        else None,
        "confusion_matrix": cm.tolist(),
    }


def fit_mahalanobis(features: np.ndarray, y: np.ndarray, n_classes: int, shrinkage: float = 0.01):
    """Class means and the shared (tied) covariance of the pooled features, returned as the
    means and a whitening matrix W = V / sqrt(lambda) (eigenvectors of the shrunk covariance),
    so distance_c = ||(f - mu_c) @ W||^2. An orthogonal projection then a per-axis scale stays
    accurate in float32, where a Cholesky factor of an ill-conditioned precision does not."""
    means = np.stack([features[y == c].mean(axis=0) for c in range(n_classes)])
    centred = features - means[y]
    cov = centred.T @ centred / max(len(features) - n_classes, 1)
    cov += shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    eigval, eigvec = np.linalg.eigh(cov)
    whiten = eigvec / np.sqrt(np.maximum(eigval, 1e-12))[None, :]
    return means.astype(np.float32), whiten.astype(np.float32)


def mahalanobis_score(features: np.ndarray, means: np.ndarray, whiten: np.ndarray) -> np.ndarray:
    """Minimum over classes of the squared Mahalanobis distance (higher = less familiar)."""
    z = (features[:, None, :] - means[None, :, :]) @ whiten
    return (z**2).sum(axis=2).min(axis=1)
