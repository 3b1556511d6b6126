"""Dataset index, duplicate-aware stratified split and pseudo-patient groups.

No TensorFlow here: the manifest is plain CSV that training, export parity and evaluation read, so
every number is tied to a known split.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from edge_infer.image.decode import load_image
from edge_infer.image.formats import IMAGE_SUFFIXES
from edge_infer.image.segment import segment
from edge_infer.metadata import ALL_PBS_CLASSES

CLASSES: tuple[str, ...] = tuple(c.name for c in ALL_PBS_CLASSES)
SPLITS: tuple[str, ...] = ("train", "val", "test")
DATA_ENV = "ALL_PBS_DATA"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "all-pbs"
MANIFEST = PROJECT_ROOT / "splits" / "manifest.csv"
#: The dataset has 89 patients; pseudo-patient groups are made in that number.
N_PATIENTS = 89


@dataclass(frozen=True)
class Record:
    path: str  # relative to the data root, '/'-separated
    label: str
    sha256: str
    split: str = ""
    group: str = ""
    group_split: str = ""


def default_data_root() -> Path:
    return Path(os.environ.get(DATA_ENV, DEFAULT_DATA))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def image_root(root: Path) -> Path:
    """Accept both `<root>/Original/<class>/` (Kaggle) and `<root>/<class>/`."""
    root = Path(root)
    if (root / "Original").is_dir():
        return root / "Original"
    if any((root / c).is_dir() for c in CLASSES):
        return root
    raise FileNotFoundError(
        f"{root}: no Original/<class>/ or <class>/ folders ({', '.join(CLASSES)})"
    )


def index_dataset(root: Path) -> list[Record]:
    """Every image under the class folders, with its content hash, in a stable order."""
    root = Path(root)
    base = image_root(root)
    records = []
    for label in CLASSES:
        folder = base / label
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                records.append(Record(p.relative_to(root).as_posix(), label, sha256_file(p)))
    if not records:
        raise FileNotFoundError(f"{root}: no images found")
    return records


def duplicates(records: list[Record]) -> list[list[str]]:
    """Groups of paths whose files are byte-identical."""
    by_hash: dict[str, list[str]] = defaultdict(list)
    for r in records:
        by_hash[r.sha256].append(r.path)
    return [paths for paths in by_hash.values() if len(paths) > 1]


def _split_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    return [n - n_val - n_test, n_val, n_test]


def stratified_split(
    records: list[Record], seed: int = 20211, fractions=(0.70, 0.15, 0.15)
) -> list[Record]:
    """70/15/15 per class; byte-identical files always land in the same split."""
    rng = random.Random(seed)
    split_of_hash: dict[str, str] = {}
    for label in CLASSES:
        hashes = sorted({r.sha256 for r in records if r.label == label})
        rng.shuffle(hashes)
        counts = _split_counts(len(hashes), fractions)
        bounds = np.cumsum(counts)
        for i, h in enumerate(hashes):
            split_of_hash[h] = SPLITS[int(np.searchsorted(bounds, i, side="right"))]
    return [replace(r, split=split_of_hash[r.sha256]) for r in records]


def _group_features(root: Path, records: list[Record]) -> np.ndarray:
    """Per-image stain/background colour statistics plus the file's position in its class.

    Images of one patient share a slide (stain, background tint, illumination) and, in this
    dataset, were numbered consecutively; both signals are used.
    """
    feats = []
    for r in records:
        bgr = load_image(root / r.path)
        lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32)
        cell = segment(bgr).reshape(-1)
        bg = lab[~cell] if (~cell).sum() > 100 else lab
        fg = lab[cell] if cell.sum() > 50 else bg
        feats.append(
            np.concatenate([bg.mean(0), bg.std(0), fg.mean(0), [cell.mean() * 100]]).astype(
                np.float32
            )
        )
    return np.stack(feats)


def pseudo_patient_groups(
    root: Path, records: list[Record], seed: int = 89, order_weight: float = 2.0
) -> list[str]:
    """Cluster each class into pseudo-patients with k-means (k in proportion to class size).

    Features are standardised colour statistics and the image's rank in its class folder
    (weighted by `order_weight`, in standard deviations); byte-identical files share a group.
    """
    feats = _group_features(root, records)
    groups = [""] * len(records)
    total = len(records)
    cv2.setRNGSeed(seed)
    for label in CLASSES:
        idx = [i for i, r in enumerate(records) if r.label == label]
        if not idx:
            continue
        k = max(1, min(len(idx), round(N_PATIENTS * len(idx) / total)))
        x = feats[idx]
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        rank = np.linspace(0.0, 1.0, len(idx), dtype=np.float32)[:, None]
        x = np.hstack([x, rank * order_weight * np.sqrt(k)]).astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
        _, labels, _ = cv2.kmeans(x, k, None, criteria, 5, cv2.KMEANS_PP_CENTERS)
        for i, g in zip(idx, labels.ravel(), strict=True):
            groups[i] = f"{label}-{int(g):02d}"
    first_group: dict[str, str] = {}
    for i, r in enumerate(records):
        groups[i] = first_group.setdefault(r.sha256, groups[i])
    return groups


def grouped_split(
    records: list[Record], groups: list[str], seed: int = 20211, fractions=(0.70, 0.15, 0.15)
) -> list[str]:
    """Whole groups go to train/val/test, per class, aiming at the fractions by image count."""
    rng = random.Random(seed)
    size: dict[str, int] = defaultdict(int)
    label_of: dict[str, str] = {}
    for r, g in zip(records, groups, strict=True):
        size[g] += 1
        label_of[g] = r.label
    split_of_group: dict[str, str] = {}
    for label in CLASSES:
        gs = sorted(g for g in size if label_of[g] == label)
        rng.shuffle(gs)
        n = sum(size[g] for g in gs)
        targets = dict(zip(SPLITS, _split_counts(n, fractions), strict=True))
        filled = dict.fromkeys(SPLITS, 0)
        for g in gs:  # each group goes where the relative shortfall is largest
            deficit = {s: (targets[s] - filled[s]) / max(targets[s], 1) for s in SPLITS}
            s = max(deficit, key=deficit.get)
            split_of_group[g] = s
            filled[s] += size[g]
    return [split_of_group[g] for g in groups]


FIELDS = ("path", "label", "sha256", "split", "group", "group_split")


def write_manifest(records: list[Record], path: Path = MANIFEST) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(FIELDS)
        for r in records:
            w.writerow([getattr(r, f) for f in FIELDS])


def read_manifest(path: Path = MANIFEST) -> list[Record]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [Record(**{k: row[k] for k in FIELDS}) for row in csv.DictReader(fh)]


def run_manifest(metrics: dict) -> Path:
    """The manifest a run was trained on (metrics.json), checked by its hash: a guard or site
    reference fitted on another split would look at the run's own test images as training."""
    path = Path(metrics.get("manifest", MANIFEST))
    if not path.exists() and not Path(path).is_absolute():
        path = PROJECT_ROOT / path
    want = metrics.get("manifest_sha256")
    if want and path.exists() and manifest_hash(path) != want:
        raise SystemExit(f"{path}: not the manifest this run was trained on (sha256 differs)")
    return path


def manifest_hash(path: Path = MANIFEST) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def select(records: list[Record], split: str, column: str = "split") -> list[Record]:
    return [r for r in records if getattr(r, column) == split]
