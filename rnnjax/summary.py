"""``model.summary()``: Keras' layer table (layer, output shape, params) and totals."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnjax.models import Classifier, ModelConfig, count_params

LINE_WIDTH = 76  # Keras' width without a terminal (min(88, 80 - 4))
COLUMN_STOPS = (0.45, 0.80, 1.0)
LAYER_TYPES = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"}


def _readable_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size / 1024 < 1:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} PB"


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("None" if dim is None else str(dim) for dim in shape) + ")"


def layer_rows(config: ModelConfig, seq_len: int | None = None) -> list[tuple[str, str, int]]:
    """``(layer (type), output shape, params)`` per layer, from an abstract run of the model.

    The batch axis shows as None, and so does the time axis when ``seq_len`` is None, as in
    Keras' ``Input(shape=(None,))``.
    """
    model = Classifier(config)
    ids = jax.ShapeDtypeStruct((1, seq_len or 1), jnp.int32)
    variables = jax.eval_shape(model.init, jax.random.key(0), ids)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
        variables,
        ids,
    )
    outputs = state["intermediates"]
    kinds = ["Embedding"]
    kinds += [
        "Bidirectional" if spec.bidirectional else LAYER_TYPES[spec.kind] for spec in config.layers
    ]
    kinds += ["Dense"]
    names = ("embedding", *config.layer_names(), "dense")
    rows = []
    # The embedding is never called (the first layer gathers its rows): its output is [B, T, E].
    output_shapes = {"embedding": ids.shape + (config.embed_dim,)}
    for name, kind in zip(names, kinds):
        if name not in output_shapes:
            (output,) = outputs[name]["__call__"]
            output_shapes[name] = output.shape
        shape: list[int | None] = [None, *output_shapes[name][1:]]
        if seq_len is None and len(shape) == 3:
            shape[1] = None
        rows.append(
            (f"{name} ({kind})", _shape_text(tuple(shape)), count_params(variables["params"][name]))
        )
    return rows


def summary(config: ModelConfig, seq_len: int | None = None, name: str = "sequential") -> str:
    """Keras ``model.summary()`` text for ``Classifier(config)``.

    >>> from rnnjax import LayerSpec, ModelConfig
    >>> print(summary(ModelConfig(500, 16, (LayerSpec("lstm", 8),)), seq_len=100))  # doctest: +SKIP
    Model: "sequential"
    ...
     Total params: 8,809 (34.41 KB)
    """
    rows = layer_rows(config, seq_len)
    total = sum(params for _, _, params in rows)
    # Column widths inside the borders as Keras' rich table lays out 76 columns: 33, 24, 15.
    first = int(LINE_WIDTH * COLUMN_STOPS[0]) - 1
    second = int(LINE_WIDTH * COLUMN_STOPS[1]) - int(LINE_WIDTH * COLUMN_STOPS[0]) - 2
    widths = [first, second, LINE_WIDTH - 4 - first - second]

    def rule(left: str, fill: str, joint: str, right: str) -> str:
        return left + joint.join(fill * width for width in widths) + right

    def row(cells: tuple[str, str, str], bar: str) -> str:
        texts = [
            cells[0].ljust(widths[0] - 2),
            cells[1].ljust(widths[1] - 2),
            cells[2].rjust(widths[2] - 2),
        ]
        return bar + bar.join(f" {text} " for text in texts) + bar

    lines = [f'Model: "{name}"', rule("┏", "━", "┳", "┓")]
    lines.append(row(("Layer (type)", "Output Shape", "Param #"), "┃"))
    lines.append(rule("┡", "━", "╇", "┩"))
    for index, (layer, shape, params) in enumerate(rows):
        if index:
            lines.append(rule("├", "─", "┼", "┤"))
        lines.append(row((layer, shape, f"{params:,}"), "│"))
    lines.append(rule("└", "─", "┴", "┘"))
    size = _readable_bytes(total * 4)  # float32 parameters
    lines += [
        f" Total params: {total:,} ({size})",
        f" Trainable params: {total:,} ({size})",
        " Non-trainable params: 0 (0.00 B)",
    ]
    return "\n".join(lines)
