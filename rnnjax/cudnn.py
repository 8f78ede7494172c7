"""cuDNN's LSTM for Keras LSTM layers on a GPU, through ``jax.experimental.rnn``.

Weights. Keras keeps ``kernel [D, 4U]``, ``recurrent_kernel [U, 4U]`` and one ``bias [4U]``, gates
in the order i, f, c, o. cuDNN (``jax.experimental.rnn``) takes one flat float32 vector: for every
pseudo-layer (layer 0 forward, layer 0 backward, layer 1 forward, ...) ``W_ih [4U, D_in]`` and
``W_hh [4U, U]``, then for every pseudo-layer the two biases ``b_ih [4U]`` and ``b_hh [4U]``, each
stacked in the gate order i, f, g, o, which is Keras' order. So ``W_ih = kernel.T``, ``W_hh =
recurrent_kernel.T``, ``b_ih = bias`` and ``b_hh = 0`` (``to_cudnn``); back, Keras' bias is the
sum of the two (``from_cudnn``). The layer converts its parameters on every call (a transpose
and a concatenation), so parameters, checkpoints and gradients stay in Keras' layout.

Masks. cuDNN takes a length per row and reads steps ``0..length-1``; Keras skips masked steps
wherever they are and outputs, at a masked step, the output of the last real step before it (the
initial ``h`` before any). The layer moves each row's real steps to the front, in order (for
right padding that is no move at all), runs cuDNN with the row's count of real steps as its
length and gathers each step's output back from the real step it repeats; a row without real
steps keeps its initial states. So every Keras mask — 'pre' and 'post' padding, gaps, empty rows
— gives Keras' values, not only the right padding Keras' own cuDNN path accepts.

Precision: full float32 matrix products (``precision=HIGHEST``, no TF32), so values stay within
the 1e-5 of Keras parity. Under ``vmap`` (K models at once) cuDNN runs once per model, in a loop:
its primitives have no batching rule and one cuDNN call cannot take K weight sets.

Shape letters: B batch, T time, D input features, U units, L layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.experimental import rnn

from rnnjax.cells import Array, Carry, LSTMCell, RecurrentCell

FULL = jax.lax.Precision.HIGHEST
Weights = tuple[Array, Array, Array | None]  # Keras' kernel, recurrent_kernel, bias


def to_cudnn(layers: Sequence[Weights]) -> Array:
    """Keras LSTM weights -> cuDNN's flat weight vector.

    Args:
      layers: ``(kernel [D_in, 4U], recurrent_kernel [U, 4U], bias [4U] or None)`` per
        pseudo-layer in cuDNN's order: layer 0 forward, (layer 0 backward,) layer 1 forward, ...

    Returns:
      ``[P]``, as ``jax.experimental.rnn.lstm`` takes it (P = its ``get_num_params_in_lstm``).
    """
    matrices, biases = [], []
    for kernel, recurrent_kernel, bias in layers:
        matrices += [kernel.T.reshape(-1), recurrent_kernel.T.reshape(-1)]
        bias = jnp.zeros(recurrent_kernel.shape[1], kernel.dtype) if bias is None else bias
        biases += [bias, jnp.zeros_like(bias)]  # Keras has one bias: b_hh is zero
    return jnp.concatenate(matrices + biases)


def from_cudnn(
    weights: Array, input_size: int, units: int, num_layers: int = 1, bidirectional: bool = False
) -> list[tuple[Array, Array, Array]]:
    """cuDNN's flat weight vector -> Keras LSTM weights, one ``(kernel, recurrent_kernel, bias)``
    per pseudo-layer in cuDNN's order; ``bias = b_ih + b_hh`` (Keras has one bias)."""
    directions = 2 if bidirectional else 1
    widths = [
        input_size if index < directions else directions * units
        for index in range(num_layers * directions)
    ]
    offset = 0

    def take(*shape: int) -> Array:
        nonlocal offset
        size = math.prod(shape)
        piece = weights[offset : offset + size].reshape(shape)
        offset += size
        return piece

    matrices = [(take(4 * units, width).T, take(4 * units, units).T) for width in widths]
    layers = [
        (kernel, recurrent, take(4 * units) + take(4 * units)) for kernel, recurrent in matrices
    ]
    if offset != weights.shape[0]:
        raise ValueError(
            f"{weights.shape[0]} weights, but {num_layers} layer(s) of {units} units on "
            f"{input_size} inputs{' (bidirectional)' if bidirectional else ''} take {offset}"
        )
    return layers


def unsupported(cell: RecurrentCell, inputs: Array) -> str | None:
    """Why cuDNN cannot run this cell on ``inputs [B, T, D]`` (a sentence), or None: it runs
    ``LSTMCell`` with Keras' default activations, without recurrent dropout, in float32."""
    if type(cell) is not LSTMCell:
        return f"the cuDNN path runs LSTMCell only, not {type(cell).__name__}"
    if cell.activation != "tanh" or cell.recurrent_activation != "sigmoid":
        return "cuDNN's LSTM is activation='tanh', recurrent_activation='sigmoid' only"
    if cell.recurrent_dropout > 0:
        return "cuDNN has no recurrent dropout (Keras leaves cuDNN for it too)"
    dtype = cell.compute_dtype(inputs.dtype)
    if dtype != jnp.float32:
        return f"jax.experimental.rnn's cuDNN LSTM is float32 only, this layer computes in {dtype}"
    return None


def unavailable_reason() -> str | None:
    """Why cuDNN cannot run here (it needs a GPU backend), or None."""
    backend = jax.default_backend()
    if backend != "gpu":
        return f"cuDNN needs a GPU, and the default JAX backend is {backend!r}"
    return None


# --- The cuDNN call -----------------------------------------------------------------------------


def _cudnn_forward(x, h0, c0, weights, lengths):
    """cuDNN's forward for one layer and direction: ``((y [B, T, U], h [1, B, U], c [1, B, U]),
    residuals)``; ``y`` is zero past each row's length, ``h`` and ``c`` are at its last step."""
    return rnn.lstm_fwd(
        x,
        h0,
        c0,
        weights,
        lengths,
        input_size=x.shape[-1],
        hidden_size=h0.shape[-1],
        num_layers=1,
        dropout=0.0,
        bidirectional=False,
        precision=FULL,
    )


def _cudnn_backward(residuals, cotangents):
    """cuDNN's backward: the cotangents of ``(x, h0, c0, weights)``."""
    x, h0 = residuals[0], residuals[1]
    dx, dh0, dc0, dw, _ = rnn.lstm_bwd(
        x.shape[-1], h0.shape[-1], 1, 0.0, False, FULL, residuals, cotangents
    )
    return dx, dh0, dc0, dw


# One cuDNN call per model under vmap: cuDNN's primitives have no batching rule. (Named
# functions calling the two above, so that each call looks them up where they are defined.)
@jax.custom_batching.sequential_vmap
def _forward(x, h0, c0, weights, lengths):
    return _cudnn_forward(x, h0, c0, weights, lengths)


@jax.custom_batching.sequential_vmap
def _backward(residuals, cotangents):
    return _cudnn_backward(residuals, cotangents)


@jax.custom_vjp
def _lstm(x, h0, c0, weights, lengths):
    return _forward(x, h0, c0, weights, lengths)[0]


def _lstm_fwd(x, h0, c0, weights, lengths):
    return _forward(x, h0, c0, weights, lengths)


def _lstm_bwd(residuals, cotangents):
    return (*_backward(residuals, cotangents), None)  # lengths: integers, no cotangent


# custom_vjp outside sequential_vmap, as jax.custom_batching asks: grad of vmap, vmap of grad.
_lstm.defvjp(_lstm_fwd, _lstm_bwd)


def run(
    cell: RecurrentCell,
    inputs: Array,
    carry: Carry,
    mask: Array | None = None,
    input_masks: Array | None = None,
) -> tuple[Carry, Array]:
    """Runs a bound ``LSTMCell`` over ``inputs [B, T, D]`` in cuDNN from ``carry (h, c)`` with
    an optional padding ``mask [B, T]`` (any pattern) and input dropout masks ``[1, B, D]``;
    returns ``(final carry, outputs [B, T, U])`` with Keras' semantics."""
    # cuDNN multiplies by the kernel itself; the cell's projection of no timesteps creates (at
    # init) or reads the parameters and computes nothing.
    cell.project(inputs[:, :0])
    params = {name: cell.get_variable("params", name) for name in ("kernel", "recurrent_kernel")}
    bias = cell.get_variable("params", "bias") if cell.use_bias else None
    weights = to_cudnn([(params["kernel"], params["recurrent_kernel"], bias)]).astype(jnp.float32)
    x = inputs.astype(jnp.float32)
    if input_masks is not None:  # one mask for every gate: recurrent_dropout is 0 here
        x = x * input_masks[0][:, None, :]
    batch, time, _ = x.shape
    h0, c0 = carry
    if mask is None:
        lengths = jnp.full((batch,), time, jnp.int32)
        outputs, h, c = _lstm(x, h0[None], c0[None], weights, lengths)
        return (h[0], c[0]), outputs
    mask = mask.astype(bool)
    lengths = jnp.sum(mask, axis=1, dtype=jnp.int32)
    order = jnp.argsort(~mask, axis=1, stable=True)  # each row's real steps first, in order
    compacted = jnp.take_along_axis(x, order[..., None], axis=1)
    # Rows without a real step run one (padding) step; their results are discarded below.
    compact_outputs, h, c = _lstm(compacted, h0[None], c0[None], weights, jnp.maximum(lengths, 1))
    # Step t outputs the output of the row's last real step up to t, or h0 before its first.
    position = jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1
    outputs = jnp.take_along_axis(compact_outputs, jnp.maximum(position, 0)[..., None], axis=1)
    outputs = jnp.where((position >= 0)[..., None], outputs, h0[:, None])
    real = (lengths > 0)[:, None]
    return (jnp.where(real, h[0], h0), jnp.where(real, c[0], c0)), outputs
