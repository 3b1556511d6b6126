"""tf.data input pipeline: edge_infer's preprocessing (never a copy), cached, augmented on the fly.

Decoding and preprocessing run through `tf.numpy_function` over `edge_infer.image`, in
parallel; the result is cached in memory, then each epoch draws one of the 8 dihedral transforms
and a small stain jitter per image, with stateless ops so a seed reproduces the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from edge_infer.image.decode import load_image
from edge_infer.image.preprocess import prepare
from edge_infer.image.spec import PreprocessSpec

from .acquisition import RANGES, Ranges, random_acquisition


def load_prepared(path: str, spec: PreprocessSpec) -> np.ndarray:
    """The exact tensor edge_infer feeds the network for this file."""
    return prepare(load_image(path), spec)


def dihedral_tf(x: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """k % 4 counter-clockwise quarter turns, then a left-right flip when k >= 4
    (the same order as edge_infer.image.preprocess.dihedral)."""
    x = tf.image.rot90(x, k % 4)
    return tf.cond(k >= 4, lambda: tf.image.flip_left_right(x), lambda: x)


def augment(x: tf.Tensor, seed: tf.Tensor, color_jitter: bool = True) -> tf.Tensor:
    """One random dihedral transform plus (optionally) small brightness/contrast/saturation/hue
    jitter, imitating slide-to-slide stain variation."""
    seeds = tf.random.experimental.stateless_split(seed, 5)
    k = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=8, dtype=tf.int32)
    x = dihedral_tf(x, k)
    if color_jitter:
        x = tf.image.stateless_random_brightness(x, 0.06, seeds[1])
        x = tf.image.stateless_random_contrast(x, 0.85, 1.15, seeds[2])
        x = tf.image.stateless_random_saturation(x, 0.85, 1.15, seeds[3])
        x = tf.image.stateless_random_hue(x, 0.02, seeds[4])
        x = tf.clip_by_value(x, 0.0, 1.0)
    return x


def seeded_rng(seed: np.ndarray) -> np.random.Generator:
    """The NumPy generator of one image's acquisition, from its tf.data seed pair."""
    return np.random.default_rng([int(v) & 0x7FFFFFFF for v in np.ravel(seed)])


def acquired_prepared(
    img: np.ndarray,
    seed: np.ndarray,
    spec: PreprocessSpec,
    p: float = 0.5,
    ranges: Ranges = RANGES,
) -> np.ndarray:
    """A random acquisition of a decoded image (seeded), then edge_infer's preprocessing."""
    return prepare(random_acquisition(img, seeded_rng(seed), ranges, p=p), spec)


def paired_prepared(
    img: np.ndarray,
    seed: np.ndarray,
    spec: PreprocessSpec,
    p: float = 0.5,
    ranges: Ranges = RANGES,
) -> np.ndarray:
    """Two views of one decoded image for the consistency loss (train.consistency), stacked:
    a clean one (only turned and flipped: no photometric change, no magnification) and a
    random acquisition, both through edge_infer's preprocessing."""
    rng = seeded_rng(seed)
    clean = prepare(random_acquisition(img, rng, ranges, p=0.0), spec)
    return np.stack([clean, prepare(random_acquisition(img, rng, ranges, p=p), spec)])


def make_dataset(
    paths: Sequence[Path],
    labels: Sequence[int],
    spec: PreprocessSpec,
    batch_size: int,
    training: bool,
    seed: int = 0,
    color_jitter: bool = True,
    acquisition: bool = False,
    shifted_seed: int | None = None,
    acquisition_p: float = 0.5,
    ranges: Ranges = RANGES,
    paired: bool = False,
) -> tf.data.Dataset:
    """Batches of (network input, label).

    `acquisition`: decoded images are cached and every epoch sees a new random acquisition
    (train.acquisition, within `ranges`) before edge_infer's preprocessing. `shifted_seed`: a
    fixed acquisition per image (the same every epoch, within `ranges`), for validating
    robustness. `paired` (training with acquisition): batches of ((clean, acquired), label),
    two views of each image (`paired_prepared`)."""
    if paired and not (acquisition and training):
        raise ValueError("paired views are for training with the acquisition augmentation")
    if acquisition or shifted_seed is not None:
        return _acquisition_dataset(
            paths,
            labels,
            spec,
            batch_size,
            training,
            seed,
            shifted_seed,
            acquisition_p,
            ranges,
            paired,
        )
    size = spec.input_size
    ds = _from_paths(paths, labels, lambda p: load_prepared(p, spec), tf.float32, (size, size, 3))
    if training:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda xy, s: (augment(xy[0], s, color_jitter), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _from_paths(paths, labels, load, dtype, shape) -> tf.data.Dataset:
    """(load(path), label) per file, decoded in parallel, in order, and cached."""
    ds = tf.data.Dataset.from_tensor_slices(([str(p) for p in paths], np.asarray(labels, np.int32)))

    def _load(path, label):
        x = tf.numpy_function(
            lambda p: load(p.decode("utf-8") if isinstance(p, bytes) else p), [path], dtype
        )
        x.set_shape(shape)
        return x, label

    return ds.map(_load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()


def _acquisition_dataset(
    paths,
    labels,
    spec,
    batch_size,
    training,
    seed,
    shifted_seed,
    change_p=0.5,
    ranges=RANGES,
    paired=False,
):
    size = spec.input_size
    ds = _from_paths(paths, labels, load_image, tf.uint8, (None, None, 3))
    if training:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    else:
        base = int(shifted_seed or 0) * 1_000_003
        seeds = tf.data.Dataset.range(base, base + len(paths)).map(lambda i: tf.stack([i, i]))

    def _pair(xy, s):
        x = tf.numpy_function(
            lambda img, sd: paired_prepared(img, sd, spec, change_p, ranges),
            [xy[0], s],
            tf.float32,
        )
        x.set_shape((2, size, size, 3))
        return (x[0], x[1]), xy[1]

    def _acquire(xy, s):
        x = tf.numpy_function(
            lambda img, sd: acquired_prepared(img, sd, spec, change_p if training else 0.5, ranges),
            [xy[0], s],
            tf.float32,
        )
        x.set_shape((size, size, 3))
        return x, xy[1]

    ds = tf.data.Dataset.zip((ds, seeds)).map(
        _pair if paired else _acquire, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if not training:
        ds = ds.cache()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
