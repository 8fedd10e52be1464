"""One training step: a plain GradientTape, optionally Horovod's grouped ring-allreduce."""

from __future__ import annotations

import tensorflow as tf

from .features import model_feed
from .objective import Objective, correct_predictions


def make_train_step(model, optimizer, objective: Objective, hvd, *, allreduce: bool, compression):
    """A ``tf.function`` step returning (loss, correct predictions); ``x`` is one array or a
    dict of arrays by input name (:mod:`trainer.features`).

    With ``allreduce`` every rank's gradients are averaged in one grouped allreduce before
    they are applied, so all replicas take the same step (allreduce mode). Without it each
    rank steps on its own gradients (average mode's local steps). A one-rank job steps on its
    own gradients too: there is nobody to average with, so it issues no collective and does
    not round its gradients through ``compression``."""
    variables = model.trainable_variables
    exchange = allreduce and hvd.size() > 1

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            pred = model(model_feed(model, x), training=True)  # several inputs: in the model's order
            loss = objective.loss(y, pred)
        grads = tape.gradient(loss, variables)
        if exchange:
            grads = hvd.grouped_allreduce(grads, op=hvd.Average, compression=compression)
        optimizer.apply_gradients(zip(grads, variables))
        return loss, correct_predictions(objective, y, pred)

    return step
