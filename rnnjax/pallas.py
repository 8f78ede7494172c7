"""Pallas recurrences: the LSTM and GRU (``reset_after=True``) time loops as Pallas kernels, for
GPU (the Triton lowering) and TPU (Mosaic), forward and backward.

As with the fused CPU kernels (``rnnjax.fused``), only the recurrence is a kernel: it runs over
the hoisted input projection ``xw`` (``cell.project``), a whole sequence per kernel instance, with
the previous ``h`` held in registers or on-chip memory across timesteps instead of a round trip
through device memory and a kernel launch per step. The forward kernel saves what the backward
one needs (LSTM: the activated gates and ``c``; GRU: the gates and ``h @ R_h + b_h``); the
backward kernel returns the gradients of every gate's pre-activation; the weight gradients, the
projection and its gradient stay in XLA, one einsum each. Padding masks carry the states through
masked steps (Keras' ``mask_zero``), in the kernel, as the scan does.

Layout inside the kernels: time-major and gate-major, ``xw [T, G, B, U]``, the recurrent kernel
as ``[G, U, U]`` (one square matrix per gate), states ``[B, U]``, the mask ``[T, B, 1]``
float32. Every block the kernels load or store is then ``[rows, U]``, and both are padded to
powers of two (zeros: a padded unit stays exactly 0 and feeds nothing, a padded row is masked
throughout), because the Triton lowering needs power-of-two sizes; ``[rows, G*U]`` would not be
one for a GRU (3U). The grid runs over blocks of ``rows = min(BLOCK_ROWS, B rounded up to a
power of two)`` batch rows; under ``vmap`` (K models at once) Pallas adds the models as one more
grid axis, one kernel call for all.

Where it runs: a GPU backend through Triton, a TPU backend through Mosaic, and on CPU in Pallas'
interpreter (``interpret=True``: slow, for tests). Neither accelerator lowering has been run yet
(no GPU or TPU was lent to the session that wrote this; BUILD_NOTES.md, "Accelerators").
Differentiation: reverse mode (``grad``, ``value_and_grad``, under ``jit`` and ``vmap``) through
``jax.custom_vjp``; forward mode is not defined (use ``implementation="scan"``).

Shape letters: B batch, T time, U units, G gates (4 LSTM: i, f, c, o; 3 GRU: z, r, h).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from rnnjax.cells import Array, Carry, GRUCell, LSTMCell, RecurrentCell

KINDS = {"lstm": 4, "gru": 3}  # kind -> gates
# Batch rows per kernel instance. Not tuned: no accelerator has measured it (BUILD_NOTES.md).
BLOCK_ROWS = 16
# Triton's matrix product wants a contraction of at least 16; narrower ones are broadcast sums.
MIN_DOT_WIDTH = 16
FULL = jax.lax.Precision.HIGHEST  # full float32 products, as the scan path's on CPU


def kind_of(cell: RecurrentCell) -> str | None:
    """``"lstm"`` or ``"gru"`` for the cells the kernels compute (exact types: a subclass may
    change the equations), else None."""
    if type(cell) is LSTMCell:
        return "lstm"
    if type(cell) is GRUCell and cell.reset_after:
        return "gru"
    return None


def _power_of_two_above(n: int) -> int:
    """The smallest power of two >= n."""
    return 1 << max(n - 1, 0).bit_length()


def unsupported(cell: RecurrentCell, inputs: Array) -> str | None:
    """Why the Pallas kernels cannot run this cell on ``inputs [B, T, D]`` (a sentence), or None.

    They compute ``LSTMCell`` and ``GRUCell(reset_after=True)`` with Keras' default activations
    in float32, with padding masks, ``go_backwards``, initial states and input dropout; not
    recurrent dropout.
    """
    if kind_of(cell) is None:
        name = type(cell).__name__
        if type(cell) is GRUCell:
            name = "GRUCell(reset_after=False)"
        return f"there is no Pallas kernel for {name}"
    if cell.activation != "tanh" or cell.recurrent_activation != "sigmoid":
        return "the kernels implement activation='tanh', recurrent_activation='sigmoid' only"
    if cell.recurrent_dropout > 0:
        return "the Pallas kernels take no recurrent dropout"
    dtype = cell.compute_dtype(inputs.dtype)
    if dtype != jnp.float32:
        return f"the Pallas kernels are float32 only, this layer computes in {dtype}"
    return None


def unavailable_reason() -> str | None:
    """Why Pallas cannot run on the default backend, or None (CPU runs its interpreter)."""
    backend = jax.default_backend()
    if backend in ("cpu", "tpu"):
        return None
    if backend == "gpu":
        try:
            from jax.experimental.pallas import triton  # noqa: F401
        except ImportError as error:
            return f"Pallas' Triton lowering cannot be imported: {error}"
        return None
    return f"Pallas has no lowering for the {backend!r} backend"


def _call_options() -> dict:
    """``pallas_call`` options for the default backend: the interpreter on CPU, Triton on GPU
    (this jax's default for ``pallas_call`` is Mosaic GPU, which targets hand-written warp-group
    kernels), Mosaic on TPU."""
    backend = jax.default_backend()
    if backend == "cpu":
        return {"interpret": True}
    if backend == "gpu":
        from jax.experimental.pallas import triton

        return {"compiler_params": triton.CompilerParams(num_warps=4)}
    return {}


# --- Kernels ----------------------------------------------------------------------------------


def _product(a: Array, b: Array) -> Array:
    """``a [N, K] @ b [K, M]`` in full float32."""
    if a.shape[1] >= MIN_DOT_WIDTH:
        return jnp.dot(a, b, precision=FULL, preferred_element_type=jnp.float32)
    return jnp.sum(a[:, :, None] * b[None, :, :], axis=1)


def _previous(ref, t, initial: Array) -> Array:
    """The state step ``t`` started from: ``ref[t - 1]``, or ``initial`` at step 0."""
    return jnp.where(t > 0, ref[jnp.maximum(t - 1, 0)], initial)


def _lstm_forward_kernel(xw_ref, r_ref, h0_ref, c0_ref, mask_ref, hs_ref, cs_ref, gates_ref):
    recurrent = [r_ref[g] for g in range(4)]

    def step(t, carry):
        h, c = carry
        z = [xw_ref[t, g] + _product(h, recurrent[g]) for g in range(4)]
        i, f, o = jax.nn.sigmoid(z[0]), jax.nn.sigmoid(z[1]), jax.nn.sigmoid(z[3])
        candidate = jnp.tanh(z[2])
        keep = mask_ref[t] > 0
        c_new = jnp.where(keep, f * c + i * candidate, c)
        h_new = jnp.where(keep, o * jnp.tanh(c_new), h)
        hs_ref[t], cs_ref[t] = h_new, c_new
        for g, activated in enumerate((i, f, candidate, o)):
            gates_ref[t, g] = activated
        return h_new, c_new

    jax.lax.fori_loop(0, xw_ref.shape[0], step, (h0_ref[...], c0_ref[...]))


def _lstm_backward_kernel(
    dhs_ref, dc_last_ref, gates_ref, cs_ref, c0_ref, rt_ref, mask_ref, dz_ref, dh0_ref, dc0_ref
):
    transposed = [rt_ref[g] for g in range(4)]
    time = dhs_ref.shape[0]
    c0 = c0_ref[...]

    def step(s, carry):
        t = time - 1 - s
        dh, dc = carry
        dh = dh + dhs_ref[t]
        i, f, candidate, o = (gates_ref[t, g] for g in range(4))
        tanh_c = jnp.tanh(cs_ref[t])
        dc_t = dc + dh * o * (1.0 - tanh_c * tanh_c)
        keep = mask_ref[t] > 0
        dz = [
            dc_t * candidate * i * (1.0 - i),
            dc_t * _previous(cs_ref, t, c0) * f * (1.0 - f),
            dc_t * i * (1.0 - candidate * candidate),
            dh * tanh_c * o * (1.0 - o),
        ]
        dz = [jnp.where(keep, d, 0.0) for d in dz]
        dh_previous = _product(dz[0], transposed[0])
        for g in range(4):
            dz_ref[t, g] = dz[g]
            if g:
                dh_previous = dh_previous + _product(dz[g], transposed[g])
        # A masked step passes both gradients through unchanged (its states were carried).
        return jnp.where(keep, dh_previous, dh), jnp.where(keep, dc_t * f, dc)

    dh0, dc0 = jax.lax.fori_loop(0, time, step, (jnp.zeros_like(c0), dc_last_ref[...]))
    dh0_ref[...], dc0_ref[...] = dh0, dc0


def _gru_forward_kernel(xw_ref, r_ref, b_ref, h0_ref, mask_ref, hs_ref, gates_ref, hh_ref):
    recurrent = [r_ref[g] for g in range(3)]
    bias = [b_ref[g] for g in range(3)]

    def step(t, h):
        hw = [_product(h, recurrent[g]) + bias[g] for g in range(3)]
        z = jax.nn.sigmoid(xw_ref[t, 0] + hw[0])
        r = jax.nn.sigmoid(xw_ref[t, 1] + hw[1])
        candidate = jnp.tanh(xw_ref[t, 2] + r * hw[2])
        h_new = jnp.where(mask_ref[t] > 0, z * h + (1.0 - z) * candidate, h)
        hs_ref[t], hh_ref[t] = h_new, hw[2]
        for g, activated in enumerate((z, r, candidate)):
            gates_ref[t, g] = activated
        return h_new

    jax.lax.fori_loop(0, xw_ref.shape[0], step, h0_ref[...])


def _gru_backward_kernel(
    dhs_ref, gates_ref, hh_ref, hs_ref, h0_ref, rt_ref, mask_ref, dxw_ref, drec_ref, dh0_ref
):
    transposed = [rt_ref[g] for g in range(3)]
    time = dhs_ref.shape[0]
    h0 = h0_ref[...]

    def step(s, dh):
        t = time - 1 - s
        dh = dh + dhs_ref[t]
        z, r, candidate = (gates_ref[t, g] for g in range(3))
        keep = mask_ref[t] > 0
        d_candidate = dh * (1.0 - z) * (1.0 - candidate * candidate)
        dz = dh * (_previous(hs_ref, t, h0) - candidate) * z * (1.0 - z)
        dr = d_candidate * hh_ref[t] * r * (1.0 - r)
        inputs = [jnp.where(keep, d, 0.0) for d in (dz, dr, d_candidate)]
        # The candidate's recurrent product enters through r * (h @ R_h + b_h).
        products = [inputs[0], inputs[1], inputs[2] * r]
        dh_previous = dh * z
        for g in range(3):
            dxw_ref[t, g], drec_ref[t, g] = inputs[g], products[g]
            dh_previous = dh_previous + _product(products[g], transposed[g])
        return jnp.where(keep, dh_previous, dh)

    dh0_ref[...] = jax.lax.fori_loop(0, time, step, jnp.zeros_like(h0))


# --- Calls ------------------------------------------------------------------------------------

# Where each operand's batch axis is (None: the same block for every instance).
_TIME_GATES_ROWS, _TIME_ROWS, _ROWS, _WEIGHTS = -2, -2, 0, None


def _block_spec(shape: tuple[int, ...], batch_axis: int | None, rows: int) -> pl.BlockSpec:
    block = list(shape)
    axis = None if batch_axis is None else batch_axis % len(shape)
    if axis is not None:
        block[axis] = rows

    def index(i):
        return tuple(i if dim == axis else 0 for dim in range(len(shape)))

    return pl.BlockSpec(tuple(block), index)


def _pallas(kernel, inputs, outputs, rows: int):
    """Runs ``kernel`` over blocks of ``rows`` batch rows. ``inputs`` and ``outputs`` are
    ``(array or ShapeDtypeStruct, batch axis)`` pairs."""
    batch = next(a.shape[axis] for a, axis in inputs if axis is not None)
    call = pl.pallas_call(
        kernel,
        out_shape=[jax.ShapeDtypeStruct(s.shape, s.dtype) for s, _ in outputs],
        grid=(batch // rows,),
        in_specs=[_block_spec(a.shape, axis, rows) for a, axis in inputs],
        out_specs=[_block_spec(s.shape, axis, rows) for s, axis in outputs],
        **_call_options(),
    )
    return call(*(a for a, _ in inputs))


def _forward(kind: str, xw, kernel, bias, states, mask, rows):
    """Time-major forward: ``(hs [T, B, U], final c or None), residuals``."""
    time, gates, batch, units = xw.shape
    state = jax.ShapeDtypeStruct((time, batch, units), jnp.float32)
    gate_values = jax.ShapeDtypeStruct(xw.shape, jnp.float32)
    recurrent = (kernel, _WEIGHTS)
    if kind == "lstm":
        hs, cs, activated = _pallas(
            _lstm_forward_kernel,
            [(xw, _TIME_GATES_ROWS), recurrent, (states[0], _ROWS), (states[1], _ROWS)]
            + [(mask, _TIME_ROWS)],
            [(state, _TIME_ROWS), (state, _TIME_ROWS), (gate_values, _TIME_GATES_ROWS)],
            rows,
        )
        return (hs, cs[-1]), (cs, activated)
    hs, activated, hh = _pallas(
        _gru_forward_kernel,
        [(xw, _TIME_GATES_ROWS), recurrent, (bias, _WEIGHTS)]
        + [(states[0], _ROWS), (mask, _TIME_ROWS)],
        [(state, _TIME_ROWS), (gate_values, _TIME_GATES_ROWS), (state, _TIME_ROWS)],
        rows,
    )
    return (hs, None), (activated, hh)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 6))
def _recurrence(kind, xw, kernel, bias, states, mask, rows):
    """The kernels as one differentiable function of the kernel layout: ``xw [T, G, B, U]``,
    ``kernel [G, U, U]``, ``bias [G, 1, U]`` or None, ``states`` each ``[B, U]``, ``mask
    [T, B, 1]``; sizes already padded."""
    return _forward(kind, xw, kernel, bias, states, mask, rows)[0]


def _recurrence_fwd(kind, xw, kernel, bias, states, mask, rows):
    outputs, residuals = _forward(kind, xw, kernel, bias, states, mask, rows)
    return outputs, (kernel, bias, states, mask, outputs[0], residuals)


def _recurrence_bwd(kind, rows, saved, cotangents):
    kernel, bias, states, mask, hs, residuals = saved
    dhs, dc_last = cotangents
    time, batch, units = hs.shape
    gates = KINDS[kind]
    gate_grads = jax.ShapeDtypeStruct((time, gates, batch, units), jnp.float32)
    state = jax.ShapeDtypeStruct((batch, units), jnp.float32)
    transposed = (kernel.transpose(0, 2, 1), _WEIGHTS)
    if kind == "lstm":
        cs, activated = residuals
        dz, dh0, dc0 = _pallas(
            _lstm_backward_kernel,
            [(dhs, _TIME_ROWS), (dc_last, _ROWS), (activated, _TIME_GATES_ROWS)]
            + [(cs, _TIME_ROWS), (states[1], _ROWS), transposed, (mask, _TIME_ROWS)],
            [(gate_grads, _TIME_GATES_ROWS), (state, _ROWS), (state, _ROWS)],
            rows,
        )
        dxw, d_recurrent, d_states, d_bias = dz, dz, (dh0, dc0), None
    else:
        activated, hh = residuals
        dxw, d_recurrent, dh0 = _pallas(
            _gru_backward_kernel,
            [(dhs, _TIME_ROWS), (activated, _TIME_GATES_ROWS), (hh, _TIME_ROWS)]
            + [(hs, _TIME_ROWS), (states[0], _ROWS), transposed, (mask, _TIME_ROWS)],
            [(gate_grads, _TIME_GATES_ROWS), (gate_grads, _TIME_GATES_ROWS), (state, _ROWS)],
            rows,
        )
        d_states = (dh0,)
        d_bias = d_recurrent.sum(axis=(0, 2))[:, None]
    # dR_g = sum over steps and rows of h_{t-1}^T d_g, one einsum in XLA.
    previous = jnp.concatenate([states[0][None], hs[:-1]], axis=0)
    d_kernel = jnp.einsum("tbu,tgbv->guv", previous, d_recurrent)
    return dxw, d_kernel, d_bias, d_states, None


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def recurrence(
    kind: str,
    xw: Array,
    recurrent_kernel: Array,
    initial_states: tuple[Array, ...],
    *,
    recurrent_bias: Array | None = None,
    mask: Array | None = None,
) -> tuple[Array, tuple[Array, ...]]:
    """Runs the Keras recurrence ``kind`` over a sequence in the Pallas kernels.

    Args:
      kind: ``"lstm"`` (gates ``[i, f, c, o]``) or ``"gru"`` (``reset_after=True``, gates
        ``[z, r, h]``); activations tanh and sigmoid.
      xw: ``[B, T, G*U]`` float32, ``x @ kernel + input bias`` of every step.
      recurrent_kernel: ``[U, G*U]``.
      initial_states: ``(h0, c0)`` for LSTM, ``(h0,)`` for GRU, each ``[B, U]``.
      recurrent_bias: ``[3U]`` for ``"gru"`` (Keras' ``bias[1]``), else None.
      mask: optional ``[B, T]`` booleans, False at padding: the states are carried through.

    Returns:
      ``(hs [B, T, U], final states after h)``: the final ``h`` is ``hs[:, -1]``; LSTM adds the
      final ``c``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if (recurrent_bias is None) != (kind != "gru"):
        raise ValueError("recurrent_bias is required for kind 'gru' and only for it")
    batch, time, width = xw.shape
    units = recurrent_kernel.shape[0]
    states = tuple(initial_states)
    if time == 0:  # nothing to run: the states stay as they are
        return jnp.zeros((batch, 0, units), xw.dtype), states[1:]
    gates = KINDS[kind]
    rows = min(BLOCK_ROWS, _power_of_two_above(batch))
    extra_rows = -batch % rows
    extra_units = _power_of_two_above(units) - units
    # Into the kernels' layout, zero-padded; the padding's gradients are dropped by the slices.
    xw = xw.reshape(batch, time, gates, units).transpose(1, 2, 0, 3)  # [T, G, B, U]
    xw = jnp.pad(xw, ((0, 0), (0, 0), (0, extra_rows), (0, extra_units)))
    kernel = recurrent_kernel.reshape(units, gates, units).transpose(1, 0, 2)  # [G, U, U]
    kernel = jnp.pad(kernel, ((0, 0), (0, extra_units), (0, extra_units)))
    bias = None
    if recurrent_bias is not None:
        bias = jnp.pad(recurrent_bias.reshape(gates, 1, units), ((0, 0), (0, 0), (0, extra_units)))
    padded_states = tuple(jnp.pad(s, ((0, extra_rows), (0, extra_units))) for s in states)
    keep = jnp.ones((batch, time), bool) if mask is None else mask.astype(bool)
    keep = jnp.pad(keep, ((0, extra_rows), (0, 0)))  # padded rows: masked throughout
    keep = jnp.swapaxes(keep, 0, 1)[..., None].astype(jnp.float32)  # [T, B, 1]
    hs, c_last = _recurrence(kind, xw, kernel, bias, padded_states, keep, rows)
    hs = jnp.swapaxes(hs[:, :batch, :units], 0, 1)
    return hs, () if c_last is None else (c_last[:batch, :units],)


def run(
    cell: RecurrentCell,
    xw: Array,
    carry: Carry,
    mask: Array | None = None,
    recurrent_masks: Array | None = None,
) -> tuple[Carry, Array]:
    """Runs a bound cell's recurrence over ``xw [B, T, G*U]`` (its ``project`` output) from
    ``carry`` with an optional padding ``mask [B, T]``; returns ``(final carry, outputs
    [B, T, U])``. ``recurrent_masks`` must be None (``unsupported`` says so for such cells)."""
    if recurrent_masks is not None:
        raise ValueError("the Pallas kernels take no recurrent dropout masks")
    kind = kind_of(cell)
    recurrent_kernel = cell.get_variable("params", "recurrent_kernel").astype(xw.dtype)
    recurrent_bias = None
    if kind == "gru":
        recurrent_bias = (
            cell.get_variable("params", "bias")[1].astype(xw.dtype)
            if cell.use_bias
            else jnp.zeros(recurrent_kernel.shape[-1], xw.dtype)
        )
    hs, finals = recurrence(
        kind, xw, recurrent_kernel, carry, recurrent_bias=recurrent_bias, mask=mask
    )
    h_last = hs[:, -1] if hs.shape[1] else carry[0]
    return (h_last, *finals), hs
