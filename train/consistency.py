"""A consistency loss between a clean and an acquired view of the same image (issue 29's lever).

Robustness learnt from augmentation alone trades clean accuracy for it: the network only sees
each image once per epoch, either shifted or not. Showing it both views of one image in the
same step and penalising the Jensen-Shannon divergence between their predictions (AugMix,
Hendrycks et al. 2020) asks for the same answer whatever the lamp or the objective did, which
is exactly what a second microscope needs, while both views keep the cross-entropy.

The network stays the functional model export reads: `ConsistencyTrainer` only wraps it for
`fit` (its weights are the network's), and `train.__main__` keeps `trainer.net`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

#: keeps log() finite where a probability underflows to 0
_EPS = 1e-7


def jensen_shannon(p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    """Per-row Jensen-Shannon divergence (nats, in [0, ln 2]) between probability rows."""
    p = tf.clip_by_value(p, _EPS, 1.0)
    q = tf.clip_by_value(q, _EPS, 1.0)
    m = 0.5 * (p + q)
    kl_pm = tf.reduce_sum(p * (tf.math.log(p) - tf.math.log(m)), axis=-1)
    kl_qm = tf.reduce_sum(q * (tf.math.log(q) - tf.math.log(m)), axis=-1)
    return 0.5 * (kl_pm + kl_qm)


class ConsistencyTrainer(keras.Model):
    """Trains `net` on batches of ((clean, acquired), label): the cross-entropy of both views
    plus `weight` times their Jensen-Shannon divergence; both views go through the network in
    one batch, so BatchNorm sees the mixture it meets at inference. Evaluation (validation,
    predict) is the network itself on single images."""

    def __init__(self, net: keras.Model, weight: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = net
        self.weight = float(weight)
        self.consistency_tracker = keras.metrics.Mean(name="consistency")
        # built (its variables are the built network's) so that a checkpoint can restore it
        self(keras.ops.zeros((1, *net.input_shape[1:])))

    def call(self, x, training=False):
        return self.net(x, training=training)

    def train_step(self, data):
        (clean, acquired), y = data[0], data[1]
        n = tf.shape(clean)[0]
        both = tf.concat([clean, acquired], axis=0)
        y2 = tf.concat([y, y], axis=0)
        with tf.GradientTape() as tape:
            probs = self(both, training=True)
            cross_entropy = self.compute_loss(x=both, y=y2, y_pred=probs, training=True)
            js = tf.reduce_mean(jensen_shannon(probs[:n], probs[n:]))
            loss = cross_entropy + self.weight * js
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            elif metric is self.consistency_tracker:
                metric.update_state(js)
            else:
                metric.update_state(y2, probs)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        """The network's own evaluation; the divergence is a training figure only."""
        logs = super().test_step(data)
        logs.pop(self.consistency_tracker.name, None)
        return logs
