"""Recurrent cells with Keras 3 maths, initializers and parameter layout.

Shape letters: B batch, T time, D input features, U units, G fused gates (4 for LSTM: i, f, c, o;
3 for GRU: z, r, h; 1 for SimpleRNN).

Every cell owns three parameters named and shaped as in Keras, so Keras weights map one to one:
``kernel [D, G*U]``, ``recurrent_kernel [U, G*U]`` and ``bias`` (``[G*U]``; ``[2, 3*U]`` for a
GRU with ``reset_after=True``). A timestep is computed in two halves so that a sequence layer can
move the input half out of its time loop:

* ``project(x, input_masks)``: the input half, ``x @ kernel + input bias``, for ``x`` of shape
  ``[B, D]`` (one step) or ``[B, T, D]`` (a whole sequence) -> ``[B, (T,) G*U]``.
* ``step(carry, xw_t, recurrent_masks)``: the recurrent half,
  ``carry, [B, G*U] -> carry, h [B, U]``.

``cell(carry, x_t)`` runs both halves: the Flax cell protocol, so the cells also work inside
``flax.linen.RNN``. Carries are tuples in Keras state order: ``(h, c)`` for LSTM, ``(h,)``
otherwise.

Precision follows Flax's convention: parameters are created in ``param_dtype`` (float32 by
default) and every product is computed in ``dtype``, the compute dtype; left None it is the
standard promotion of the inputs' and the parameters' dtypes (float32 for the defaults). With
``dtype=jnp.bfloat16`` the parameters stay float32 and are cast to bfloat16 where they are used,
so gradients and optimizer updates stay float32 (mixed precision); carries and outputs are in the
compute dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Carry = tuple[Array, ...]
Initializer = Callable[..., Array]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": jax.nn.hard_sigmoid,  # relu6(x + 3) / 6, the Keras 3 definition
    "relu": jax.nn.relu,
    "linear": lambda x: x,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # Keras' default is the exact erf form
    "silu": jax.nn.silu,
    "softsign": jax.nn.soft_sign,
    "softplus": jax.nn.softplus,
}


def get_activation(activation: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    """Resolves a Keras activation name ("tanh", "sigmoid", ...) or passes a callable through."""
    if callable(activation):
        return activation
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(
            f"unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)} or a callable"
        ) from None


def validate_rate(name: str, rate: float) -> None:
    """Dropout rates are fractions of units dropped: 0 <= rate < 1."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {rate}")


def dropout_mask(key: Array, rate: float, shape: tuple[int, ...], dtype: Any) -> Array:
    """Inverted-dropout mask: 1 / (1 - rate) where kept, 0 where dropped (Keras' scaling)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)


def apply_kernel(x: Array, kernel: Array, masks: Array | None) -> Array:
    """``x @ kernel`` with optional dropout masks on ``x``.

    Args:
      x: ``[B, ..., D]``.
      kernel: ``[D, M*U]``: M fused gates of U units.
      masks: None, ``[1, B, D]`` (one mask shared by every gate) or ``[M, B, D]`` (gate ``g`` sees
        ``x * masks[g]``, Keras' ``implementation=1`` when ``recurrent_dropout > 0``).

    Returns:
      ``[B, ..., M*U]``.
    """
    if masks is None:
        return x @ kernel
    if masks.shape[0] == 1:
        # Masks are per sequence: broadcast over any time axis between batch and features.
        return (x * masks[0].reshape(x.shape[:1] + (1,) * (x.ndim - 2) + x.shape[-1:])) @ kernel
    per_gate = kernel.reshape(kernel.shape[0], masks.shape[0], -1)
    if x.ndim > 2:
        # A sequence: fold each row's masks into its own copy of the kernel ([B, D, M*U]), so
        # the product is one matmul per row. Masking x per gate instead materialises M copies of
        # x and an M-batched dot, about 10x slower forward+backward on XLA:CPU.
        rows = jnp.einsum("mbd,dmu->bdmu", masks, per_gate)
        rows = rows.reshape(rows.shape[:2] + (kernel.shape[-1],))
        return jnp.einsum("b...d,bdk->b...k", x, rows)
    out = jnp.einsum("mbd,dmu->bmu", x[None] * masks, per_gate)
    return out.reshape(out.shape[:-2] + (kernel.shape[-1],))


class RecurrentCell(nn.Module):
    """Shared fields and dropout-mask logic of the Keras cells. Not used directly.

    ``dtype`` is the compute dtype (None: promoted from the inputs and parameters) and
    ``param_dtype`` the parameters' dtype, as in Flax's layers.
    """

    units: int
    activation: str | Callable[[Array], Array] = "tanh"
    use_bias: bool = True
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    kernel_init: Initializer = nn.initializers.glorot_uniform()
    recurrent_kernel_init: Initializer = nn.initializers.orthogonal()
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    gates: ClassVar[int] = 1
    # Keras forces per-gate dropout masks (implementation=1) when recurrent_dropout > 0.
    per_gate_masks: ClassVar[bool] = True

    def __post_init__(self):
        if self.units < 1:
            raise ValueError(f"units must be >= 1, got {self.units}")
        validate_rate("dropout", self.dropout)
        validate_rate("recurrent_dropout", self.recurrent_dropout)
        for name in ("activation", "recurrent_activation"):
            get_activation(getattr(self, name, "tanh"))
        super().__post_init__()

    @property
    def num_states(self) -> int:
        return 1

    def compute_dtype(self, input_dtype: Any) -> jnp.dtype:
        """The dtype this cell computes in for inputs of ``input_dtype``: ``dtype`` if set, else
        the standard promotion of ``input_dtype`` and ``param_dtype`` (Flax's rule; explicit so
        that it holds under ``jax_numpy_dtype_promotion='strict'`` too)."""
        if self.dtype is not None:
            return jnp.dtype(self.dtype)
        with jax.numpy_dtype_promotion("standard"):
            return jnp.promote_types(input_dtype, self.param_dtype)

    def zero_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Carry:
        """The Keras initial state: zeros, ``num_states`` arrays of ``[B, U]``."""
        return tuple(jnp.zeros((batch_size, self.units), dtype) for _ in range(self.num_states))

    @nn.nowrap
    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Carry:
        """Flax cell protocol: the zero carry for inputs of shape ``[B, D]`` (in ``dtype``, else
        ``param_dtype``: the input dtype is not known here)."""
        del rng
        return self.zero_carry(input_shape[0], self.compute_dtype(self.param_dtype))

    @property
    def num_feature_axes(self) -> int:
        return 1

    def dropout_masks(
        self, key: Array, batch_size: int, input_dim: int, dtype: Any
    ) -> tuple[Array | None, Array | None]:
        """Draws the per-sequence dropout masks Keras draws at the start of ``RNN.call``.

        Returns:
          ``(input_masks [M, B, D] | None, recurrent_masks [M, B, U] | None)`` where M is the
          number of gates when ``recurrent_dropout > 0`` (and the cell has per-gate masks),
          else 1. A mask is None when its rate is 0.
        """
        count = self.gates if (self.recurrent_dropout > 0 and self.per_gate_masks) else 1
        input_key, recurrent_key = jax.random.split(key)
        input_masks = recurrent_masks = None
        if self.dropout > 0:
            input_masks = dropout_mask(
                input_key, self.dropout, (count, batch_size, input_dim), dtype
            )
        if self.recurrent_dropout > 0:
            recurrent_masks = dropout_mask(
                recurrent_key, self.recurrent_dropout, (count, batch_size, self.units), dtype
            )
        return input_masks, recurrent_masks

    def _create_params(
        self, x: Array, bias_shape: tuple[int, ...]
    ) -> tuple[Array, Array, Array | None]:
        """Creates (or reads) the parameters for inputs ``x [B, (T,) D]``; returns ``x``, the
        kernel and the bias (None without one), all three in the compute dtype."""
        width = self.gates * self.units
        dtype = self.compute_dtype(x.dtype)
        kernel = self._param("kernel", self.kernel_init, (x.shape[-1], width)).astype(dtype)
        self._param("recurrent_kernel", self.recurrent_kernel_init, (self.units, width))
        bias = None
        if self.use_bias:
            bias = self._param("bias", self._init_bias, bias_shape).astype(dtype)
        return x.astype(dtype), kernel, bias

    def _param(self, name: str, init: Initializer, shape: tuple[int, ...]) -> Array:
        """A parameter in ``param_dtype``, drawn in at least float32 and then rounded: the
        orthogonal initializer's QR has no bfloat16 or float16 version."""
        with jax.numpy_dtype_promotion("standard"):
            draw = jnp.promote_types(self.param_dtype, jnp.float32)
        return self.param(
            name,
            lambda key, shape, dtype: init(key, shape, draw).astype(dtype),
            shape,
            self.param_dtype,
        )

    def _init_bias(self, key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        return self.bias_init(key, shape, dtype)

    def _recurrent_kernel(self, dtype: Any) -> Array:
        return self.get_variable("params", "recurrent_kernel").astype(dtype)

    def __call__(self, carry: Carry, x_t: Array) -> tuple[Carry, Array]:
        """One full timestep: ``carry, x_t [B, D] -> carry, h_t [B, U]``."""
        return self.step(carry, self.project(x_t))


class LSTMCell(RecurrentCell):
    """``keras.layers.LSTMCell``: fused gates ``[i, f, c, o]``, carry ``(h, c)``.

    ``z = x @ kernel + h @ recurrent_kernel + bias``; ``i, f, o = recurrent_activation(z_i, z_f,
    z_o)``; ``c' = f * c + i * activation(z_c)``; ``h' = o * activation(c')``. With
    ``unit_forget_bias`` the forget slice of the bias starts at exactly 1 (Keras' default).
    """

    recurrent_activation: str | Callable[[Array], Array] = "sigmoid"
    unit_forget_bias: bool = True

    gates: ClassVar[int] = 4

    @property
    def num_states(self) -> int:
        return 2

    def _init_bias(self, key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        bias = self.bias_init(key, shape, dtype)
        if self.unit_forget_bias:
            bias = bias.at[self.units : 2 * self.units].set(1.0)
        return bias

    @nn.compact
    def project(self, x: Array, input_masks: Array | None = None) -> Array:
        """``[B, (T,) D] -> [B, (T,) 4U]``: ``x @ kernel + bias``."""
        x, kernel, bias = self._create_params(x, (self.gates * self.units,))
        xw = apply_kernel(x, kernel, input_masks)
        return xw if bias is None else xw + bias

    def step(
        self, carry: Carry, xw_t: Array, recurrent_masks: Array | None = None
    ) -> tuple[Carry, Array]:
        h, c = carry
        z = xw_t + apply_kernel(h, self._recurrent_kernel(xw_t.dtype), recurrent_masks)
        z_i, z_f, z_c, z_o = jnp.split(z, 4, axis=-1)
        gate = get_activation(self.recurrent_activation)
        act = get_activation(self.activation)
        c = gate(z_f) * c + gate(z_i) * act(z_c)
        h = gate(z_o) * act(c)
        return (h, c), h


class GRUCell(RecurrentCell):
    """``keras.layers.GRUCell``: fused gates ``[z, r, h]``, carry ``(h,)``.

    ``reset_after=True`` (Keras 3 default): bias ``[2, 3U]`` (input row, recurrent row) and
    ``hh = activation(x_h + r * (h @ R_h + b_h))``. ``reset_after=False``: bias ``[3U]`` and
    ``hh = activation(x_h + (r * h) @ R_h)``. Then ``h' = z * h + (1 - z) * hh``.
    """

    recurrent_activation: str | Callable[[Array], Array] = "sigmoid"
    reset_after: bool = True

    gates: ClassVar[int] = 3

    @nn.compact
    def project(self, x: Array, input_masks: Array | None = None) -> Array:
        """``[B, (T,) D] -> [B, (T,) 3U]``: ``x @ kernel + input bias``."""
        bias_shape = (2, 3 * self.units) if self.reset_after else (3 * self.units,)
        x, kernel, bias = self._create_params(x, bias_shape)
        xw = apply_kernel(x, kernel, input_masks)
        if bias is None:
            return xw
        return xw + (bias[0] if self.reset_after else bias)

    def step(
        self, carry: Carry, xw_t: Array, recurrent_masks: Array | None = None
    ) -> tuple[Carry, Array]:
        (h,) = carry
        units = self.units
        recurrent_kernel = self._recurrent_kernel(xw_t.dtype)
        gate = get_activation(self.recurrent_activation)
        act = get_activation(self.activation)
        x_z, x_r, x_h = jnp.split(xw_t, 3, axis=-1)
        if self.reset_after:
            hw = apply_kernel(h, recurrent_kernel, recurrent_masks)
            if self.use_bias:
                hw = hw + self.get_variable("params", "bias")[1].astype(xw_t.dtype)
            h_z, h_r, h_h = jnp.split(hw, 3, axis=-1)
            z = gate(x_z + h_z)
            r = gate(x_r + h_r)
            candidate = act(x_h + r * h_h)
        else:
            zr_masks = None if recurrent_masks is None else recurrent_masks[:2]
            h_masks = None if recurrent_masks is None else recurrent_masks[2:]
            h_z, h_r = jnp.split(apply_kernel(h, recurrent_kernel[:, : 2 * units], zr_masks), 2, -1)
            z = gate(x_z + h_z)
            r = gate(x_r + h_r)
            # Keras masks h before the reset gate multiplies it: r * (h * mask_h).
            reset_h = r * (h if h_masks is None else h * h_masks[0])
            candidate = act(x_h + reset_h @ recurrent_kernel[:, 2 * units :])
        h = z * h + (1.0 - z) * candidate
        return (h,), h


class SimpleRNNCell(RecurrentCell):
    """``keras.layers.SimpleRNNCell``: ``h' = activation(x @ kernel + bias + h @ R)``, with R the
    ``recurrent_kernel``."""

    gates: ClassVar[int] = 1
    per_gate_masks: ClassVar[bool] = False

    @nn.compact
    def project(self, x: Array, input_masks: Array | None = None) -> Array:
        """``[B, (T,) D] -> [B, (T,) U]``: ``x @ kernel + bias``."""
        x, kernel, bias = self._create_params(x, (self.units,))
        xw = apply_kernel(x, kernel, input_masks)
        return xw if bias is None else xw + bias

    def step(
        self, carry: Carry, xw_t: Array, recurrent_masks: Array | None = None
    ) -> tuple[Carry, Array]:
        (h,) = carry
        recurrent = apply_kernel(h, self._recurrent_kernel(xw_t.dtype), recurrent_masks)
        h = get_activation(self.activation)(xw_t + recurrent)
        return (h,), h
