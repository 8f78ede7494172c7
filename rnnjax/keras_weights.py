"""Keras weights -> rnnjax parameters, so a Keras-trained model runs here with the same outputs.

Keras' ``model.get_weights()`` for ``Sequential([Embedding, *RNN layers, Dense])`` is a flat list:
the embedding matrix; per recurrent layer ``kernel, recurrent_kernel, bias`` (forward then
backward for ``Bidirectional``); the Dense ``kernel, bias``. rnnjax keeps Keras' names and shapes,
so the mapping is positional and exact.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np

from rnnjax.models import ModelConfig, init_params

Path = tuple[str, ...]


def keras_weight_paths(config: ModelConfig) -> list[Path]:
    """rnnjax parameter paths in Keras ``get_weights()`` order."""
    paths: list[Path] = [("embedding", "embedding")]
    cell_params = ("kernel", "recurrent_kernel", "bias")
    for spec, name in zip(config.layers, config.layer_names()):
        prefixes = [(name, "forward"), (name, "backward")] if spec.bidirectional else [(name,)]
        for prefix in prefixes:
            paths += [(*prefix, "cell", param) for param in cell_params]
    paths += [("dense", "kernel"), ("dense", "bias")]
    return paths


def params_from_keras(config: ModelConfig, weights: Sequence[np.ndarray]) -> dict:
    """Builds the parameter tree of ``Classifier(config)`` from Keras ``model.get_weights()``.

    Args:
      config: the rnnjax description of the Keras model.
      weights: the arrays in ``get_weights()`` order.

    Returns:
      A parameter dict for ``Classifier(config).apply({"params": params}, ids)``.

    Raises:
      ValueError: when the number of arrays or any shape does not match ``config``.
    """
    expected = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    paths = keras_weight_paths(config)
    if len(weights) != len(paths):
        raise ValueError(
            f"config expects {len(paths)} Keras weight arrays "
            f"({', '.join('/'.join(p) for p in paths)}), got {len(weights)}"
        )
    params: dict = {}
    for path, array in zip(paths, weights):
        node = expected
        for key in path:
            node = node[key]
        array = np.asarray(array, dtype=np.float32)
        if array.shape != node.shape:
            raise ValueError(
                f"Keras weight for {'/'.join(path)} has shape {array.shape}, the config expects "
                f"{node.shape}; check vocab_size, embed_dim, units, kind and reset_after"
            )
        target = params
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = jax.numpy.asarray(array)
    return params


def load_keras_weights(config: ModelConfig, path: str | os.PathLike) -> dict:
    """Reads ``np.savez(path, *model.get_weights())`` (arrays in saved order) into parameters."""
    with np.load(path) as archive:
        return params_from_keras(config, [archive[key] for key in archive.files])
