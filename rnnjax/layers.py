"""Sequence layers: a cell scanned over time (``RNN``) and ``Bidirectional``, with Keras semantics.

Shape letters: B batch, T time, D input features, U units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnjax import cudnn, fused, pallas
from rnnjax.cells import Array, Carry, RecurrentCell

MERGE_MODES = ("concat", "sum", "mul", "ave", None)
# The paths other than the scan, each a module with ``unsupported(cell, inputs)`` (why it cannot
# compute this layer) and ``unavailable_reason()`` (why it cannot run here at all).
PATHS = {"fused": fused, "cudnn": cudnn, "pallas": pallas}
IMPLEMENTATIONS = ("auto", "scan", *PATHS)
# What 'auto' tries on each JAX backend, in order, before the scan. A path is listed for a kind
# of device only after a measurement there showed it faster than the scan and within Keras
# parity (BUILD_NOTES.md, "Accelerators"). Nothing has been measured on a GPU or TPU yet, so
# 'auto' runs the scan there.
AUTO_PATHS = {"cpu": ("fused",)}


class EmbeddedIds(NamedTuple):
    """The sequence ``table[ids]`` ``[B, T, D]``, not yet gathered: token ids ``[B, T]`` and their
    embedding table ``[V, D]``.

    ``RNN`` and ``Bidirectional`` take it wherever they take inputs ``[B, T, D]``. Where no input
    dropout applies and the table has at most ``B * T`` rows, the layer projects the table
    (``table @ kernel + bias``, ``V`` rows) and gathers the projected rows, instead of
    projecting every step (``B * T`` rows): the same values to float32 rounding, and in the
    backward pass one scatter of the projection's gradient into ``V`` rows instead of a matmul over
    all steps. ``Classifier`` passes its embedding to the first layer this way.
    """

    table: Array
    ids: Array

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.ids.shape, self.table.shape[-1])

    @property
    def ndim(self) -> int:
        return self.ids.ndim + 1

    @property
    def dtype(self):
        return self.table.dtype

    def gather(self) -> Array:
        """``table[ids]``, ``[B, T, D]``."""
        return jnp.take(self.table, self.ids, axis=0)


def _reverse_time(inputs: Array | EmbeddedIds) -> Array | EmbeddedIds:
    if isinstance(inputs, EmbeddedIds):
        return inputs._replace(ids=jnp.flip(inputs.ids, axis=1))
    return jnp.flip(inputs, axis=1)


def _project(cell: RecurrentCell, inputs: Array | EmbeddedIds, input_masks: Array | None) -> Array:
    """``cell.project`` of every step, ``[B, T, G*U]``; through the table when that is less work
    (see ``EmbeddedIds``)."""
    if isinstance(inputs, EmbeddedIds):
        if input_masks is None and inputs.table.shape[0] <= inputs.ids.size:
            return jnp.take(cell.project(inputs.table), inputs.ids, axis=0)
        inputs = inputs.gather()
    return cell.project(inputs, input_masks)


def padding_mask(ids: Array, padding_id: int = 0) -> Array:
    """``[B, T]`` True where a token is real: Keras ``Embedding(mask_zero=True)`` for id 0."""
    return ids != padding_id


def _as_carry(
    cell: RecurrentCell, initial_state: Array | Sequence[Array], batch_size: int, dtype: Any
) -> Carry:
    states = (initial_state,) if hasattr(initial_state, "ndim") else tuple(initial_state)
    if len(states) != cell.num_states:
        raise ValueError(
            f"{type(cell).__name__} has {cell.num_states} state(s) (Keras order "
            f"{'[h, c]' if cell.num_states == 2 else '[h]'}), got {len(states)} initial states"
        )
    states = tuple(jnp.asarray(state).astype(dtype) for state in states)
    # Checked here for every path: the fused kernels read [batch, units] floats per state
    # whatever the shape they are given.
    expected = [state.shape for state in cell.zero_carry(batch_size, dtype)]
    if [state.shape for state in states] != expected:
        raise ValueError(
            f"initial states of {type(cell).__name__} must have shapes {expected} ([batch, "
            f"units]), got {[state.shape for state in states]}"
        )
    return states


class RNN(nn.Module):
    """A cell scanned over time with ``flax.linen.scan``: ``keras.layers.RNN(cell)``.

    Attributes:
      cell: an ``LSTMCell``, ``GRUCell`` or ``SimpleRNNCell`` (or any cell with ``project``,
        ``step``, ``zero_carry``, ``dropout_masks``).
      return_sequences: return every step's output ``[B, T, U]`` instead of the last ``[B, U]``.
      return_state: also return the final states: ``(output, h)`` or, for LSTM, ``(output, h, c)``.
      go_backwards: process the sequence from the last step to the first. As in Keras, the
        sequence output stays in processing order (``output[:, 0]`` has seen only ``x[:, -1]``).
      unroll: timesteps unrolled per loop iteration (``True`` unrolls the whole sequence).
      hoist_input_projection: compute ``x @ kernel`` for all timesteps in one matmul before the
        time loop (True) or inside it, one step at a time (False). Same values either way; which
        is faster depends on the backend and sizes. Scan only.
      implementation: how the time loop runs. 'scan': ``flax.linen.scan`` of the cell, on any
        backend and in any dtype. 'fused': one C++ kernel per sequence on XLA:CPU
        (``rnnjax.fused``): the LSTM, GRU and SimpleRNN cells with Keras' default activations
        (tanh, sigmoid gates) in float32, with everything else the layer does (masks,
        ``go_backwards``, states, dropout, ``Bidirectional``). 'cudnn': cuDNN's LSTM on a GPU
        (``rnnjax.cudnn``; LSTM cells without recurrent dropout, float32). 'pallas': a Pallas
        kernel per sequence for LSTM and GRU (``reset_after=True``) cells in float32
        (``rnnjax.pallas``; on CPU it runs in Pallas' interpreter, for testing). Each of the
        three raises one error where it cannot run the layer. 'auto' (default): the first path
        of ``AUTO_PATHS`` for the backend that can run the layer (the fused kernels on CPU, the
        scan on GPU and TPU until a measurement there says otherwise), else the scan. Same
        values on every path, to float32 rounding.
      dtype: the cell's compute dtype, overriding the cell's own when given (None: the cell's).
      param_dtype: the cell's parameter dtype, overriding the cell's own when given.
    """

    cell: RecurrentCell
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    unroll: int | bool = 1
    hoist_input_projection: bool = True
    implementation: str = "auto"
    dtype: Any = None
    param_dtype: Any = None

    def __post_init__(self):
        # A layer's dtypes are its cell's (as in Keras' ``LSTM(units, dtype=...)``). The cell is
        # replaced before Flax adopts it, detached like ``LayerSpec.make_cell``'s.
        overrides = {
            name: value
            for name in ("dtype", "param_dtype")
            if (value := getattr(self, name)) is not None
        }
        if overrides:
            object.__setattr__(self, "cell", self.cell.clone(parent=None, **overrides))
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: Array | EmbeddedIds,
        mask: Array | None = None,
        initial_state: Array | Sequence[Array] | None = None,
        training: bool = False,
    ) -> Array | tuple[Array, ...]:
        """Runs the cell over ``inputs [B, T, D]``.

        Args:
          inputs: ``[B, T, D]`` floats, or ``EmbeddedIds`` (token ids and their table).
          mask: optional ``[B, T]`` booleans, False at padding. At a masked step the states are
            kept unchanged and the output repeats the previous output (Keras ``mask_zero``), so
            'pre' and 'post' padding both leave the last output equal to the unpadded one.
          initial_state: states in Keras order (``[h, c]`` for LSTM); zeros when None.
          training: apply ``dropout``/``recurrent_dropout``. Masks are drawn once per call from the
            ``'dropout'`` rng and reused at every timestep.

        Returns:
          ``[B, T, U]`` if ``return_sequences`` else ``[B, U]``; with ``return_state`` a tuple
          ``(output, *final_states)``; in the cell's compute dtype (``cell.compute_dtype``).
        """
        if inputs.ndim != 3:
            raise ValueError(
                f"RNN expects inputs [batch, time, features], got shape {inputs.shape}"
            )
        batch_size, time_steps, input_dim = inputs.shape
        cell = self.cell
        if mask is not None and mask.shape != (batch_size, time_steps):
            raise ValueError(f"mask must have shape {(batch_size, time_steps)}, got {mask.shape}")
        dtype = cell.compute_dtype(inputs.dtype)
        carry = (
            cell.zero_carry(batch_size, dtype)
            if initial_state is None
            else _as_carry(cell, initial_state, batch_size, dtype)
        )

        input_masks = recurrent_masks = None
        if training and (cell.dropout > 0 or cell.recurrent_dropout > 0):
            input_masks, recurrent_masks = cell.dropout_masks(
                self.make_rng("dropout"), batch_size, input_dim, dtype
            )
            # Inspectable with mutable=["intermediates"]; a no-op otherwise.
            self.sow("intermediates", "dropout_masks", (input_masks, recurrent_masks))

        if self.go_backwards:
            inputs = _reverse_time(inputs)
            mask = None if mask is None else jnp.flip(mask, axis=1)
        path = self._path(inputs)
        if path != "scan":
            if path == "cudnn":  # cuDNN multiplies the inputs by the kernel itself
                if isinstance(inputs, EmbeddedIds):
                    inputs = inputs.gather()
                carry, outputs = cudnn.run(cell, inputs, carry, mask, input_masks)
            else:
                xw = _project(cell, inputs, input_masks)
                carry, outputs = PATHS[path].run(cell, xw, carry, mask, recurrent_masks)
            output = outputs if self.return_sequences else carry[0]
            return (output, *carry) if self.return_state else output
        if self.hoist_input_projection:
            xs = _project(cell, inputs, input_masks)
        else:
            xs = inputs.gather() if isinstance(inputs, EmbeddedIds) else inputs

        hoisted = self.hoist_input_projection

        def body(cell, carry, step_inputs, dropout_masks):
            x_t, mask_t = step_inputs
            step_input_masks, step_recurrent_masks = dropout_masks
            xw_t = x_t if hoisted else cell.project(x_t, step_input_masks)
            new_carry, _ = cell.step(carry, xw_t, step_recurrent_masks)
            if mask_t is not None:
                keep = mask_t[:, None]
                new_carry = tuple(jnp.where(keep, n, o) for n, o in zip(new_carry, carry))
            # Every Keras cell outputs its first state, so a masked step repeats the last output.
            return new_carry, new_carry[0]

        unroll = time_steps if self.unroll is True else max(1, int(self.unroll))
        scan = nn.scan(
            body,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=(1, nn.broadcast),
            out_axes=1,
            unroll=unroll,
        )
        carry, outputs = scan(cell, carry, (xs, mask), (input_masks, recurrent_masks))
        output = outputs if self.return_sequences else carry[0]
        return (output, *carry) if self.return_state else output

    def _path(self, inputs: Array) -> str:
        """The path that runs this layer: 'scan' or a key of ``PATHS``."""
        implementation = self.implementation
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
            )
        if implementation == "scan":
            return "scan"
        if implementation == "auto":
            candidates = AUTO_PATHS.get(jax.default_backend(), ())
        else:
            candidates = (implementation,)
        for name in candidates:
            # The layer first: a layer a path cannot compute never triggers its build.
            reason = PATHS[name].unsupported(self.cell, inputs)
            reason = reason or PATHS[name].unavailable_reason()
            if reason is None:
                return name
            if implementation != "auto":
                raise ValueError(
                    f"implementation={implementation!r} cannot run this layer: {reason}; use "
                    "implementation='auto' or 'scan'"
                )
        return "scan"


class Bidirectional(nn.Module):
    """``keras.layers.Bidirectional``: a forward and a backward copy of an ``RNN``.

    The backward layer is ``layer`` with ``go_backwards`` flipped (or ``backward_layer``). With
    ``return_sequences`` its output is flipped back to input order before merging, and both
    directions output zeros at masked steps (Keras' ``zero_output_for_mask``), as Keras does.

    Attributes:
      layer: the ``RNN`` to run in both directions.
      merge_mode: 'concat' (``[..., 2U]``), 'sum', 'mul', 'ave', or None for a tuple
        ``(forward, backward)``.
      backward_layer: optional ``RNN`` for the backward direction, used as given: its
        ``go_backwards`` must differ from ``layer``'s and it must return the same things.
    """

    layer: RNN
    merge_mode: str | None = "concat"
    backward_layer: RNN | None = None

    @nn.compact
    def __call__(
        self,
        inputs: Array | EmbeddedIds,
        mask: Array | None = None,
        initial_state: Sequence[Array] | None = None,
        training: bool = False,
    ) -> Array | tuple[Array, ...]:
        """``[B, T, D] -> [B, (T,) 2U]`` (concat) or ``[B, (T,) U]``; with ``return_state``
        ``(output, *forward_states, *backward_states)``. ``initial_state`` is the forward states
        followed by the backward states."""
        if self.merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {self.merge_mode!r}")
        forward = self.layer.clone(parent=self, name="forward", _deep_clone=True)
        if self.backward_layer is None:
            backward = self.layer.clone(
                parent=self,
                name="backward",
                _deep_clone=True,
                go_backwards=not forward.go_backwards,
            )
        else:
            backward = self.backward_layer.clone(parent=self, name="backward", _deep_clone=True)
            if backward.go_backwards == forward.go_backwards:
                raise ValueError("backward_layer must have the opposite go_backwards of layer")
        if forward.return_sequences != backward.return_sequences:
            raise ValueError("forward and backward layers must agree on return_sequences")
        if forward.return_state != backward.return_state:
            raise ValueError("forward and backward layers must agree on return_state")

        forward_state = backward_state = None
        if initial_state is not None:
            states = list(initial_state)
            half = len(states) // 2
            forward_state, backward_state = states[:half], states[half:]

        forward_out = forward(inputs, mask, forward_state, training)
        backward_out = backward(inputs, mask, backward_state, training)
        states: tuple[Array, ...] = ()
        if forward.return_state:
            forward_out, *forward_states = forward_out
            backward_out, *backward_states = backward_out
            states = (*forward_states, *backward_states)
        if forward.return_sequences:
            backward_out = jnp.flip(backward_out, axis=1)
            if mask is not None:
                # Keras' Bidirectional sets zero_output_for_mask on both layers when they return
                # sequences: padded steps output zeros (a plain RNN repeats the last output).
                keep = mask[..., None]
                forward_out = jnp.where(keep, forward_out, 0.0)
                backward_out = jnp.where(keep, backward_out, 0.0)

        merged = self._merge(forward_out, backward_out)
        if states:
            return (*merged, *states) if isinstance(merged, tuple) else (merged, *states)
        return merged

    def _merge(self, forward: Array, backward: Array) -> Array | tuple[Array, Array]:
        match self.merge_mode:
            case "concat":
                return jnp.concatenate([forward, backward], axis=-1)
            case "sum":
                return forward + backward
            case "mul":
                return forward * backward
            case "ave":
                return (forward + backward) / 2
            case None:
                return forward, backward
