"""Keras 3 reference outputs for ``tests/test_keras_parity.py``.

Run it with a Python that has Keras 3 on the JAX backend, not with rnnjax's environment (this
script never imports rnnjax, and rnnjax never depends on Keras)::

    KERAS_BACKEND=jax path/to/keras-venv/bin/python tests/keras_parity/make_reference.py OUT_DIR

For every case in ``CASES`` it builds the Keras model, overwrites every weight with N(0, s^2)
draws (s = ``WEIGHT_SCALE`` = 0.5 unless the case says otherwise, so biases and embeddings are far
from their initial values), runs it in inference mode and writes ``OUT_DIR/<case>.npz``:

* ``weight_000``, ``weight_001``, ...: the weights in ``get_weights()`` order;
* ``inputs``: int32 ids ``[B, T]`` (classifier cases) or float32 ``[B, T, D]`` (layer cases);
* ``mask``: bool ``[B, T]``, False at padding (layer cases with padding only);
* ``output_0``, ``output_1``, ...: the model's outputs in Keras order: the logits ``[B, C]``, or a
  layer's ``[output, *states]``.

``OUT_DIR/cases.json`` holds the versions used and, per case, its description with every default
spelled out: ``"classifier"`` cases carry ``config`` in ``rnnjax.ModelConfig.from_dict`` terms;
``"layer"`` cases carry ``layer`` in ``rnnjax.LayerSpec`` terms plus ``return_sequences`` and
``return_state``.

Shape letters: B batch, T time, V vocabulary, E embedding width, D input features, C classes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

# Keras' defaults for the LayerSpec fields this script understands, written into cases.json so the
# rnnjax side never relies on its own defaults agreeing with Keras'.
LAYER_DEFAULTS = {
    "activation": "tanh",
    "recurrent_activation": "sigmoid",
    "reset_after": True,
    "go_backwards": False,
    "bidirectional": False,
    "merge_mode": "concat",
}
WEIGHT_SCALE = 0.5


def _layer(kind: str, units: int, **options) -> dict:
    return {"kind": kind, "units": units, **LAYER_DEFAULTS, **options}


def _classifier(
    *layers: dict,
    vocab_size: int = 50,
    embed_dim: int = 12,
    num_classes: int = 3,
    padding: str | None = None,
    batch: int = 6,
    time: int = 9,
    weight_scale: float = WEIGHT_SCALE,
) -> dict:
    """``Sequential([Input((T,)), Embedding(V, E, mask_zero=padding is not None), *layers,
    Dense(C)])``; ``padding`` ('pre' or 'post') also pads the ids with zeros."""
    config = {
        "vocab_size": vocab_size,
        "embed_dim": embed_dim,
        "layers": list(layers),
        "num_classes": num_classes,
        "mask_zero": padding is not None,
    }
    return {
        "model": "classifier",
        "config": config,
        "padding": padding,
        "batch": batch,
        "time": time,
        "weight_scale": weight_scale,
    }


def _recurrent_layer(
    layer: dict, input_dim: int = 5, masked: bool = False, batch: int = 6, time: int = 9
) -> dict:
    """One recurrent layer on float inputs ``[B, T, D]`` returning sequences and states;
    ``masked`` passes a mask with 'pre'- and 'post'-padded rows."""
    return {
        "model": "layer",
        "layer": layer,
        "return_sequences": True,
        "return_state": True,
        "input_dim": input_dim,
        "padding": "mixed" if masked else None,
        "batch": batch,
        "time": time,
        "weight_scale": WEIGHT_SCALE,
    }


CASES: dict[str, dict] = {
    "lstm": _classifier(_layer("lstm", 7), num_classes=1),
    "gru": _classifier(_layer("gru", 7)),
    "gru_reset_before": _classifier(_layer("gru", 7, reset_after=False)),
    "simple_rnn": _classifier(_layer("simple_rnn", 7)),
    "lstm_lstm": _classifier(_layer("lstm", 7), _layer("lstm", 6)),
    "lstm_mask_pre": _classifier(_layer("lstm", 7), padding="pre"),
    "lstm_mask_post": _classifier(_layer("lstm", 7), padding="post"),
    "gru_lstm_mask_pre": _classifier(_layer("gru", 7), _layer("lstm", 6), padding="pre"),
    "gru_lstm_mask_post": _classifier(_layer("gru", 7), _layer("lstm", 6), padding="post"),
    "lstm_go_backwards": _classifier(_layer("lstm", 7, go_backwards=True)),
    # Unmasked reset_after GRUs take Keras' JAX fast path (backend/jax/rnn.py gru()), not rnn().
    "gru_go_backwards": _classifier(_layer("gru", 7, go_backwards=True)),
    "bidirectional_lstm_concat": _classifier(_layer("lstm", 7, bidirectional=True)),
    "bidirectional_gru_sum": _classifier(_layer("gru", 7, bidirectional=True, merge_mode="sum")),
    "bidirectional_gru_ave": _classifier(_layer("gru", 7, bidirectional=True, merge_mode="ave")),
    "bidirectional_gru_mul": _classifier(_layer("gru", 7, bidirectional=True, merge_mode="mul")),
    # Returned sequences: the backward half is flipped back to input order, masked steps included.
    "bidirectional_gru_lstm_mask_post": _classifier(
        _layer("gru", 7, bidirectional=True), _layer("lstm", 6), padding="post"
    ),
    # At width 100, scale 0.5 saturates the LSTM and the Dense sums 100 such units: float32
    # rounding alone then moves the logits ~1.3e-5 from a float64 evaluation, in Keras as in
    # rnnjax. 0.15 * sqrt(100) ~ 0.5 * sqrt(10): the kernels' sums stay as large as in the
    # width-~10 cases, so 1e-5 still measures the implementation, not float32 chaos.
    "reuters": _classifier(
        _layer("lstm", 100),
        vocab_size=1000,
        embed_dim=100,
        num_classes=46,
        batch=8,
        time=40,
        weight_scale=0.15,
    ),
    "lstm_relu_hard_sigmoid": _classifier(
        _layer("lstm", 7, activation="relu", recurrent_activation="hard_sigmoid")
    ),
    "gru_reset_before_softsign_hard_sigmoid": _classifier(
        _layer(
            "gru", 7, reset_after=False, activation="softsign", recurrent_activation="hard_sigmoid"
        )
    ),
    "simple_rnn_relu_mask_pre": _classifier(
        _layer("simple_rnn", 7, activation="relu"), padding="pre"
    ),
    "lstm_layer_sequences_state": _recurrent_layer(_layer("lstm", 7)),
    "gru_layer_sequences_state": _recurrent_layer(_layer("gru", 7)),
    "gru_reset_before_layer_sequences_state": _recurrent_layer(_layer("gru", 7, reset_after=False)),
    "lstm_layer_go_backwards_masked": _recurrent_layer(
        _layer("lstm", 7, go_backwards=True), masked=True
    ),
    "bidirectional_gru_layer_sequences_state": _recurrent_layer(
        _layer("gru", 7, bidirectional=True, merge_mode="concat")
    ),
    # Masks in every cell of the fused kernels, and in both directions of a Bidirectional.
    "gru_reset_before_mask_pre": _classifier(_layer("gru", 7, reset_after=False), padding="pre"),
    "simple_rnn_mask_post": _classifier(_layer("simple_rnn", 7), padding="post"),
    "gru_reset_before_layer_masked": _recurrent_layer(
        _layer("gru", 7, reset_after=False), masked=True
    ),
    "simple_rnn_layer_go_backwards_masked": _recurrent_layer(
        _layer("simple_rnn", 7, go_backwards=True), masked=True
    ),
    "bidirectional_lstm_layer_masked": _recurrent_layer(
        _layer("lstm", 7, bidirectional=True), masked=True
    ),
}


def keras_recurrent_layer(keras, spec: dict, return_sequences: bool, return_state: bool = False):
    """The Keras layer a LayerSpec-style dict describes (wrapped in Bidirectional if asked)."""
    kind = spec["kind"]
    options = {
        "units": spec["units"],
        "activation": spec["activation"],
        "go_backwards": spec["go_backwards"],
        "return_sequences": return_sequences,
        "return_state": return_state,
    }
    if kind != "simple_rnn":
        options["recurrent_activation"] = spec["recurrent_activation"]
    if kind == "gru":
        options["reset_after"] = spec["reset_after"]
    cls = {
        "lstm": keras.layers.LSTM,
        "gru": keras.layers.GRU,
        "simple_rnn": keras.layers.SimpleRNN,
    }[kind]
    layer = cls(**options)
    if spec["bidirectional"]:
        layer = keras.layers.Bidirectional(layer, merge_mode=spec["merge_mode"])
    return layer


def padded_lengths(rng: np.random.Generator, batch: int, time: int) -> np.ndarray:
    """Sequence lengths ``[B]``: one full row, one of length 1, one empty, the rest random."""
    return np.concatenate([[time, 1, 0], rng.integers(2, time, size=batch - 3)])


def padding_mask(lengths: np.ndarray, time: int, padding: str) -> np.ndarray:
    """``[B, T]`` True at real steps. ``padding``: 'pre', 'post' or 'mixed' (alternating rows)."""
    steps = np.arange(time)
    post = steps[None, :] < lengths[:, None]
    pre = steps[None, :] >= time - lengths[:, None]
    if padding == "mixed":
        return np.where((np.arange(len(lengths)) % 2 == 0)[:, None], pre, post)
    return pre if padding == "pre" else post


def randomize_weights(model, rng: np.random.Generator, scale: float) -> list[np.ndarray]:
    """Sets every weight to N(0, scale^2) draws; returns them in ``get_weights()`` order."""
    weights = [
        (scale * rng.standard_normal(w.shape)).astype(np.float32) for w in model.get_weights()
    ]
    model.set_weights(weights)
    return weights


def run_classifier(keras, case: dict, rng: np.random.Generator) -> dict:
    """Builds and runs a classifier case: ``{"inputs": ids [B, T], "outputs": [logits [B, C]],
    "weights": [...]}``."""
    config, batch, time = case["config"], case["batch"], case["time"]
    layers = config["layers"]
    model = keras.Sequential(
        [
            keras.Input(shape=(time,), dtype="int32"),
            keras.layers.Embedding(
                config["vocab_size"], config["embed_dim"], mask_zero=config["mask_zero"]
            ),
            *(
                keras_recurrent_layer(keras, spec, return_sequences=index < len(layers) - 1)
                for index, spec in enumerate(layers)
            ),
            keras.layers.Dense(config["num_classes"]),
        ]
    )
    weights = randomize_weights(model, rng, case["weight_scale"])
    if case["padding"] is None:
        # Without mask_zero, id 0 is an ordinary token: draw it too.
        ids = rng.integers(0, config["vocab_size"], size=(batch, time))
    else:
        mask = padding_mask(padded_lengths(rng, batch, time), time, case["padding"])
        ids = np.where(mask, rng.integers(1, config["vocab_size"], size=(batch, time)), 0)
    ids = ids.astype(np.int32)
    logits = model(ids, training=False)
    return {"inputs": ids, "outputs": [logits], "weights": weights}


def run_layer(keras, case: dict, rng: np.random.Generator) -> dict:
    """Builds and runs a layer case: ``{"inputs": x [B, T, D], "outputs": [output, *states],
    "weights": [...]}`` plus ``"mask" [B, T]`` when padded."""
    batch, time = case["batch"], case["time"]
    layer = keras_recurrent_layer(
        keras, case["layer"], case["return_sequences"], case["return_state"]
    )
    x = rng.standard_normal((batch, time, case["input_dim"])).astype(np.float32)
    mask = None
    if case["padding"] is not None:
        mask = padding_mask(padded_lengths(rng, batch, time), time, case["padding"])
    layer.build(x.shape)
    weights = randomize_weights(layer, rng, case["weight_scale"])
    outputs = layer(x, mask=mask, training=False)
    arrays = {"inputs": x, "outputs": list(outputs), "weights": weights}
    if mask is not None:
        arrays["mask"] = mask
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # Keras reads the backend when it is first imported.
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import keras

    args.out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for name, case in CASES.items():
        run = run_classifier if case["model"] == "classifier" else run_layer
        result = run(keras, case, rng)
        arrays = {"inputs": result["inputs"]}
        if "mask" in result:
            arrays["mask"] = result["mask"]
        arrays |= {f"weight_{i:03d}": w for i, w in enumerate(result["weights"])}
        arrays |= {
            f"output_{i}": keras.ops.convert_to_numpy(o) for i, o in enumerate(result["outputs"])
        }
        np.savez(args.out_dir / f"{name}.npz", **arrays)
    manifest = {
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "jax_version": jax.__version__,
        "jax_platform": jax.default_backend(),
        "seed": args.seed,
        "cases": CASES,
    }
    (args.out_dir / "cases.json").write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
