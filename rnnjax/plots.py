"""Figures a run writes: the tutorials' train-vs-validation curves and a ``plot_model`` diagram."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402

from rnnjax.metrics import History  # noqa: E402
from rnnjax.models import ModelConfig  # noqa: E402
from rnnjax.summary import layer_rows  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def history_png(history: History, metric: str) -> bytes:
    """``metric`` and ``val_<metric>`` per epoch (1-based), as the Keras tutorials plot them."""
    curves = history.history
    epochs = range(1, len(history) + 1)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(epochs, curves[metric], "o-", label=f"Training {metric}")
    if f"val_{metric}" in curves:
        axes.plot(epochs, curves[f"val_{metric}"], "s-", label=f"Validation {metric}")
    axes.set_xlabel("Epoch")
    axes.set_ylabel(metric)
    axes.set_title(f"Training and validation {metric}")
    axes.legend()
    axes.grid(alpha=0.3)
    return _png(figure)


def model_png(config: ModelConfig, seq_len: int | None = None) -> bytes:
    """``keras.utils.plot_model(model, show_shapes=True)``: one box per layer, top to bottom,
    with its input and output shapes, drawn with matplotlib (no graphviz)."""
    rows = layer_rows(config, seq_len)
    inputs = ["(None, " + ("None" if seq_len is None else str(seq_len)) + ")"]
    inputs += [shape for _, shape, _ in rows[:-1]]
    height = 1.2 * len(rows)
    figure, axes = plt.subplots(figsize=(5.5, height))
    axes.set_xlim(0, 1)
    axes.set_ylim(0, height)
    axes.axis("off")
    for index, ((layer, output, params), shape_in) in enumerate(zip(rows, inputs)):
        y = height - 1.2 * index - 0.9
        axes.add_patch(
            plt.Rectangle(
                (0.08, y),
                0.84,
                0.7,
                fill=True,
                facecolor="#eef3fb",
                edgecolor="#33475b",
                linewidth=1.2,
            )
        )
        axes.text(0.5, y + 0.47, layer, ha="center", va="center", fontsize=10, weight="bold")
        axes.text(
            0.5,
            y + 0.2,
            f"in {shape_in}  →  out {output}   ({params:,} params)",
            ha="center",
            va="center",
            fontsize=8,
        )
        if index:
            axes.annotate(
                "",
                xy=(0.5, y + 0.7),
                xytext=(0.5, y + 1.2),
                arrowprops=dict(arrowstyle="->", color="#33475b"),
            )
    return _png(figure)
