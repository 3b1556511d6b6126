"""The consistency loss lever (train.consistency): the divergence, the trainer's loss, the
paired views of the pipeline, and the options that cannot go with it."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def test_jensen_shannon_is_zero_for_equal_rows_symmetric_and_at_most_ln2():
    import tensorflow as tf

    from train.consistency import jensen_shannon

    p = tf.constant([[0.7, 0.2, 0.1, 0.0], [1.0, 0.0, 0.0, 0.0]])
    q = tf.constant([[0.1, 0.2, 0.7, 0.0], [0.0, 1.0, 0.0, 0.0]])
    assert np.allclose(jensen_shannon(p, p).numpy(), 0.0, atol=1e-6)
    assert np.allclose(jensen_shannon(p, q).numpy(), jensen_shannon(q, p).numpy())
    js = jensen_shannon(p, q).numpy()
    assert 0.0 < js[0] < js[1] and js[1] == pytest.approx(np.log(2.0), abs=1e-5)
    # by hand for the first row: 0.5 KL(p||m) + 0.5 KL(q||m)
    m = (np.array([0.7, 0.2, 0.1]) + np.array([0.1, 0.2, 0.7])) / 2
    kl = lambda a: float(np.sum(a * np.log(a / m)))  # noqa: E731
    assert js[0] == pytest.approx(
        0.5 * kl(np.array([0.7, 0.2, 0.1])) + 0.5 * kl(np.array([0.1, 0.2, 0.7])), rel=1e-4
    )


def _trainer(weight: float, lr: float):
    import keras

    from train.consistency import ConsistencyTrainer
    from train.model import build_model

    keras.utils.set_random_seed(0)
    net = build_model(32, 4, width=0.25, dropout=0.0)
    trainer = ConsistencyTrainer(net, weight)
    trainer.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return net, trainer


def _views(n: int = 8):
    rng = np.random.default_rng(0)
    clean = rng.random((n, 32, 32, 3), dtype=np.float32)
    acquired = np.clip(clean * 1.4, 0, 1).astype(np.float32)  # a brighter lamp
    return clean, acquired, rng.integers(0, 4, n).astype(np.int32)


def test_the_trainers_loss_is_both_views_cross_entropy_plus_the_weighted_divergence():
    import keras
    import tensorflow as tf

    from train.consistency import jensen_shannon

    net, trainer = _trainer(5.0, lr=0.0)  # lr 0: the step does not move the weights
    clean, acquired, y = _views()
    logs = trainer.train_on_batch((clean, acquired), y, return_dict=True)
    probs = net(np.concatenate([clean, acquired]), training=True)
    ce = keras.losses.sparse_categorical_crossentropy(np.concatenate([y, y]), probs)
    js = jensen_shannon(probs[:8], probs[8:])
    assert logs["consistency"] == pytest.approx(float(tf.reduce_mean(js)), rel=1e-4)
    assert logs["loss"] == pytest.approx(
        float(tf.reduce_mean(ce)) + 5.0 * float(tf.reduce_mean(js)), rel=1e-4
    )


def test_the_trainer_trains_the_network_itself_and_evaluates_it_on_single_images():
    import tensorflow as tf

    net, trainer = _trainer(2.0, lr=0.05)
    clean, acquired, y = _views(16)
    before = [w.copy() for w in net.get_weights()]
    ds = tf.data.Dataset.from_tensor_slices(((clean, acquired), y)).batch(8)
    val = tf.data.Dataset.from_tensor_slices((clean, y)).batch(8)
    h = trainer.fit(ds, validation_data=val, epochs=2, verbose=0)
    assert {"loss", "accuracy", "consistency", "val_loss", "val_accuracy"} == set(h.history)
    assert len(trainer.get_weights()) == len(net.get_weights())
    assert any(not np.array_equal(a, b) for a, b in zip(before, net.get_weights(), strict=True))
    assert np.allclose(trainer.predict(clean, verbose=0), net.predict(clean, verbose=0))


def test_paired_views_are_a_clean_and_an_acquired_view_of_the_same_image(sample_images):
    from edge_infer.image.decode import load_image
    from edge_infer.image.preprocess import prepare
    from edge_infer.image.spec import PreprocessSpec
    from train.pipeline import paired_prepared

    spec = PreprocessSpec()
    img = load_image(sample_images[0])
    pair = paired_prepared(img, np.array([4, 4]), spec, p=1.0)
    s = spec.input_size
    assert pair.shape == (2, s, s, 3) and pair.dtype == np.float32
    assert np.array_equal(pair, paired_prepared(img, np.array([4, 4]), spec, p=1.0))
    assert not np.array_equal(pair, paired_prepared(img, np.array([5, 5]), spec, p=1.0))
    # the clean view is only turned: its colours are the image's own; the acquired one's not
    plain = prepare(img, spec)
    assert np.abs(pair[0].mean((0, 1)) - plain.mean((0, 1))).max() < 0.03
    assert np.abs(pair[1] - pair[0]).mean() > 0.01


@pytest.mark.parametrize(
    "extra",
    [
        ["--consistency", "1"],
        ["--acquisition", "--consistency", "-1"],
        ["--acquisition", "--consistency", "1", "--class-weight", "balanced"],
    ],
)
def test_consistency_needs_the_acquisition_and_no_class_weights(extra):
    from train.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--out", "x", *extra])
    assert parse_args(["--out", "x", "--acquisition", "--consistency", "2"]).consistency == 2.0
