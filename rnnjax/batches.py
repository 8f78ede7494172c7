"""PROVISIONAL (replaced by the data branch): epoch batch indices."""

import math

import numpy as np


def epoch_indices(num_examples, batch_size, seed=0, epoch=0, shuffle=True):
    order = np.random.default_rng([seed, epoch]).permutation(num_examples) if shuffle else np.arange(num_examples)
    steps = math.ceil(num_examples / batch_size)
    pad = steps * batch_size - num_examples
    indices = np.concatenate([order, np.zeros(pad, np.int64)]).astype(np.int32)
    weights = np.concatenate([np.ones(num_examples), np.zeros(pad)]).astype(np.float32)
    return indices.reshape(steps, batch_size), weights.reshape(steps, batch_size)
