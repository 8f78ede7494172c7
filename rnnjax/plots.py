"""Figures a run writes: the tutorials' train-vs-validation curves and a ``plot_model`` diagram."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np

from rnnjax.models import ModelConfig
from rnnjax.summary import layer_rows


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported when a figure is drawn (it
    takes half a second, which a run pays only at its end)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def _epoch_axis(axes, epochs: int) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.set_xlabel("Epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlim(0.5, max(epochs, 1) + 0.5)


def history_png(
    history,
    metric: str,
    title: str | None = None,
    best_epoch: int | None = None,
    stopped_epoch: int | None = None,
) -> bytes:
    """``metric`` and ``val_<metric>`` per epoch (1-based, integer ticks), as the Keras tutorials
    plot them, with the restored best epoch (0-based ``best_epoch``) and the early stop
    (``stopped_epoch``) marked and the run's name in the title. ``history`` is a ``History`` (or
    anything with its ``history`` dict of lists)."""
    plt = _pyplot()
    curves = history.history
    epochs = np.arange(1, len(curves[metric]) + 1)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(epochs, curves[metric], "o-", label=f"Training {metric}")
    if f"val_{metric}" in curves:
        axes.plot(epochs, curves[f"val_{metric}"], "s-", label=f"Validation {metric}")
    if best_epoch is not None:
        axes.axvline(best_epoch + 1, color="tab:green", ls="--", lw=1, label="best (restored)")
    if stopped_epoch is not None:
        axes.axvline(stopped_epoch + 1, color="tab:red", ls=":", lw=1, label="early stop")
    _epoch_axis(axes, len(epochs))
    axes.set_ylabel(metric)
    heading = f"Training and validation {metric}"
    axes.set_title(f"{title}: {heading}" if title else heading)
    axes.legend()
    axes.grid(alpha=0.3)
    return _png(figure)


def ensemble_png(
    histories: Sequence[Sequence[dict]], metric: str, title: str | None = None
) -> bytes:
    """K models' ``metric`` and ``val_<metric>`` per epoch: each model faint, the mean over the
    models still training at that epoch bold, with a band of one standard deviation."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    longest = max((len(h) for h in histories), default=0)
    for key, color in ((metric, "tab:blue"), (f"val_{metric}", "tab:orange")):
        values = np.full((len(histories), longest), np.nan)
        for k, history in enumerate(histories):
            values[k, : len(history)] = [logs.get(key, np.nan) for logs in history]
        if np.isnan(values).all():
            continue
        epochs = np.arange(1, longest + 1)
        for row in values:
            axes.plot(epochs, row, color=color, alpha=0.2, lw=0.8)
        with warnings.catch_warnings():  # epochs every model stopped before: no mean, no band
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        label = ("Validation " if key.startswith("val_") else "Training ") + metric
        axes.plot(epochs, mean, "o-", color=color, label=f"{label} (mean of {len(histories)})")
        axes.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.25)
    _epoch_axis(axes, longest)
    axes.set_ylabel(metric)
    heading = f"Training and validation {metric}"
    axes.set_title(f"{title}: {heading}" if title else heading)
    if axes.get_legend_handles_labels()[0]:  # none when every model diverged at once
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
    plt = _pyplot()
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
