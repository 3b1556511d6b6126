"""`python -m train.normalisation_probe`: how much of each acquisition change a candidate
normalisation undoes, before any training, and what it costs per image.

For validation images x and a photometric change S (lamp, tone curve, white balance, stain,
hue), the residual is the mean absolute difference, in grey levels at the network's 160 px,
between N(S(x)) and N(x): 0 means the normalisation undoes the change completely. The spread
kept is the mean per-image standard deviation after N, relative to before: a normalisation that
flattens images (loses contrast between cells and background) scores low. Runtime only.

`clipping`: why a brighter lamp in 8-bit values is the hard case. The share of pixels at 255
per channel (clean and lamp x1.15 / x1.25), and how much the white-patch-normalised darker
levels (10th-50th percentile per channel) vary between clean images (5th-95th percentile over
images, relative to the median): once the bright background is burnt out, those levels are
all that could say how bright the lamp was, so their spread bounds any such estimate.
Writes reports/normalisation_probe.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from edge_infer.image.decode import load_image
from edge_infer.image.preprocess import normalise_acquisition
from edge_infer.image.spec import PreprocessSpec

from . import acquisition as A
from .dataset import default_data_root, read_manifest, select

SPEC = PreprocessSpec(input_size=160)


def none(img: np.ndarray) -> np.ndarray:
    return img


def white_patch(img: np.ndarray) -> np.ndarray:
    return normalise_acquisition(img, replace(SPEC, normalise="white_patch"))


#: reference Lab statistics for Reinhard (set from the training images in main)
REINHARD_REF: dict[str, np.ndarray] = {}


def reinhard(img: np.ndarray) -> np.ndarray:
    """Reinhard et al. 2001: each Lab channel moved to the reference mean and spread."""
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB).astype(np.float32)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0) + 1e-3
    lab = (lab - mean) / std * REINHARD_REF["std"] + REINHARD_REF["mean"]
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


def standardise(img: np.ndarray) -> np.ndarray:
    """Per-image, per-channel standardisation (mean 128, std 40)."""
    x = img.astype(np.float32).reshape(-1, 3)
    x = (x - x.mean(0)) / (x.std(0) + 1e-3) * 40.0 + 128.0
    return np.clip(x, 0, 255).astype(np.uint8).reshape(img.shape)


CANDIDATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": none,
    "white_patch": white_patch,
    "reinhard": reinhard,
    "standardise": standardise,
}

CHANGES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "lamp x0.8": lambda x: A.brightness(x, 0.8),
    "lamp x1.2": lambda x: A.brightness(x, 1.2),
    "gamma 1.3": lambda x: A.gamma(x, 1.3),
    "warm (b +10)": lambda x: A.white_balance(x, 0, 10),
    "green (a -10)": lambda x: A.white_balance(x, -10, 0),
    "stain x0.75": lambda x: A.saturation(x, 0.75),
    "hue +6": lambda x: A.hue(x, 6),
}


def small(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (160, 160), interpolation=cv2.INTER_AREA)


def clipping(images: list[np.ndarray]) -> dict:
    """The burnt-out background under a brighter lamp, and the spread of what is left."""
    saturated = {
        name: np.median([(fn(x) == 255).mean(axis=(0, 1)) for x in images], axis=0)
        for name, fn in (
            ("clean", none),
            ("lamp x1.15", lambda x: A.brightness(x, 1.15)),
            ("lamp x1.25", lambda x: A.brightness(x, 1.25)),
        )
    }
    normalised = [white_patch(x) for x in images]
    spread = {}
    for q in (10, 25, 50):
        levels = np.array([np.percentile(n.reshape(-1, 3), q, axis=0) for n in normalised])
        med = np.median(levels, axis=0)
        spread[f"p{q}"] = {
            ch: [
                round(float(np.percentile(levels[:, i], 5) / med[i]), 3),
                round(float(np.percentile(levels[:, i], 95) / med[i]), 3),
            ]
            for i, ch in enumerate("BGR")
        }
    return {
        "median_share_at_255": {
            k: {ch: round(float(v[i]), 3) for i, ch in enumerate("BGR")}
            for k, v in saturated.items()
        },
        "normalised_level_5_95_relative": spread,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m train.normalisation_probe", description=__doc__)
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--out", type=Path, default=Path("reports/normalisation_probe.json"))
    args = ap.parse_args(argv)
    records = read_manifest()
    train = select(records, "train")[::10]
    val = select(records, "val")
    val = val[:: max(1, len(val) // args.images)][: args.images]
    labs = np.stack(
        [
            cv2.cvtColor(small(load_image(args.data / r.path)), cv2.COLOR_BGR2LAB)
            .reshape(-1, 3)
            .astype(np.float32)
            for r in train
        ]
    )
    REINHARD_REF["mean"] = labs.mean(axis=1).mean(0)
    REINHARD_REF["std"] = labs.std(axis=1).mean(0)
    images = [small(load_image(args.data / r.path)) for r in val]
    out: dict = {"images": len(images), "candidates": {}}
    for name, norm in CANDIDATES.items():
        base = [norm(x) for x in images]
        t = time.perf_counter()
        for x in images:
            norm(x)
        ms = (time.perf_counter() - t) / len(images) * 1000
        spread = float(np.mean([b.std() for b in base]) / np.mean([x.std() for x in images]))
        residual = {
            change: float(
                np.mean(
                    [
                        np.abs(norm(fn(x)).astype(np.float32) - b.astype(np.float32)).mean()
                        for x, b in zip(images, base, strict=True)
                    ]
                )
            )
            for change, fn in CHANGES.items()
        }
        out["candidates"][name] = {
            "ms_per_image_160px": round(ms, 3),
            "spread_kept": round(spread, 3),
            "mean_residual": round(float(np.mean(list(residual.values()))), 2),
            "residual_grey_levels": {k: round(v, 2) for k, v in residual.items()},
        }
        print(name, json.dumps(out["candidates"][name]), flush=True)
    out["clipping"] = clipping(images)
    print("clipping", json.dumps(out["clipping"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
