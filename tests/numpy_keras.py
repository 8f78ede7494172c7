"""Plain-numpy transcriptions of the Keras 3 recurrent equations, the tests' reference.

Written from keras/src/layers/rnn/{lstm,gru,simple_rnn}.py and backend/jax/rnn.py (see
../shared/reference/keras_semantics.md §1-4), one sample-batch timestep at a time, in float64,
without importing rnnjax. Dropout masks are given, not drawn: ``dp``/``rdp`` are ``[M, B, D]`` /
``[M, B, U]`` with M = 1 (one mask for every gate, Keras implementation 2) or M = gates
(implementation 1, which Keras forces when ``recurrent_dropout > 0``).
"""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def hard_sigmoid(x):
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0)


def _gate_mask(masks, gate):
    if masks is None:
        return 1.0
    return masks[gate] if masks.shape[0] > 1 else masks[0]


def _run(step, x, states, mask, go_backwards, zero_output_for_mask=False):
    """Keras' generic ``rnn()``: time loop, masking by carrying states, processing-order outputs.
    A masked step outputs the previous output, or zeros with ``zero_output_for_mask`` (which
    ``Bidirectional`` sets when returning sequences)."""
    x = np.asarray(x, np.float64)
    steps = range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])
    outputs = []
    for t in steps:
        new_states = step(x[:, t], states)
        output = new_states[0]  # the output of every Keras cell is its first state
        if mask is not None:
            keep = np.asarray(mask[:, t], bool)[:, None]
            new_states = [np.where(keep, n, o) for n, o in zip(new_states, states)]
            output = np.where(keep, output, 0.0 if zero_output_for_mask else states[0])
        states = new_states
        outputs.append(output)
    return np.stack(outputs, axis=1), states


def lstm(
    x,
    kernel,
    recurrent_kernel,
    bias,
    mask=None,
    initial_state=None,
    go_backwards=False,
    dp=None,
    rdp=None,
    activation=np.tanh,
    recurrent_activation=sigmoid,
    zero_output_for_mask=False,
):
    """Returns ``(outputs [B, T, U], h [B, U], c [B, U])``."""
    k, rk, b = (np.asarray(a, np.float64) for a in (kernel, recurrent_kernel, bias))
    units = rk.shape[0]
    batch = x.shape[0]
    gate_slices = [slice(g * units, (g + 1) * units) for g in range(4)]

    def step(x_t, states):
        h, c = states
        if rdp is None:  # implementation 2: one fused matmul after a single input mask
            z = (x_t * _gate_mask(dp, 0)) @ k + h @ rk + b
            zi, zf, zc, zo = (z[:, s] for s in gate_slices)
        else:  # implementation 1: each gate gets its own input and recurrent mask
            zi, zf, zc, zo = (
                (x_t * _gate_mask(dp, g)) @ k[:, s] + b[s] + (h * _gate_mask(rdp, g)) @ rk[:, s]
                for g, s in enumerate(gate_slices)
            )
        i, f, o = recurrent_activation(zi), recurrent_activation(zf), recurrent_activation(zo)
        c = f * c + i * activation(zc)
        h = o * activation(c)
        return [h, c]

    states = (
        [np.zeros((batch, units))] * 2
        if initial_state is None
        else [np.asarray(s, np.float64) for s in initial_state]
    )
    outputs, (h, c) = _run(step, x, states, mask, go_backwards, zero_output_for_mask)
    return outputs, h, c


def gru(
    x,
    kernel,
    recurrent_kernel,
    bias,
    reset_after=True,
    mask=None,
    initial_state=None,
    go_backwards=False,
    dp=None,
    rdp=None,
    activation=np.tanh,
    recurrent_activation=sigmoid,
    zero_output_for_mask=False,
):
    """Returns ``(outputs [B, T, U], h [B, U])``. ``bias`` is ``[2, 3U]`` if ``reset_after``."""
    k, rk, b = (np.asarray(a, np.float64) for a in (kernel, recurrent_kernel, bias))
    units = rk.shape[0]
    batch = x.shape[0]
    input_bias, recurrent_bias = (b[0], b[1]) if reset_after else (b, np.zeros_like(b))
    z_s, r_s, h_s = (slice(g * units, (g + 1) * units) for g in range(3))

    def step(x_t, states):
        (h,) = states
        x_z, x_r, x_h = (
            (x_t * _gate_mask(dp, g)) @ k[:, s] + input_bias[s]
            for g, s in enumerate((z_s, r_s, h_s))
        )
        h_z_in, h_r_in, h_h_in = (h * _gate_mask(rdp, g) for g in range(3))
        rec_z = h_z_in @ rk[:, z_s] + recurrent_bias[z_s]
        rec_r = h_r_in @ rk[:, r_s] + recurrent_bias[r_s]
        z = recurrent_activation(x_z + rec_z)
        r = recurrent_activation(x_r + rec_r)
        if reset_after:
            rec_h = r * (h_h_in @ rk[:, h_s] + recurrent_bias[h_s])
        else:
            rec_h = (r * h_h_in) @ rk[:, h_s]
        hh = activation(x_h + rec_h)
        return [z * h + (1 - z) * hh]

    states = (
        [np.zeros((batch, units))]
        if initial_state is None
        else [np.asarray(s, np.float64) for s in initial_state]
    )
    outputs, (h,) = _run(step, x, states, mask, go_backwards, zero_output_for_mask)
    return outputs, h


def simple_rnn(
    x,
    kernel,
    recurrent_kernel,
    bias,
    mask=None,
    initial_state=None,
    go_backwards=False,
    dp=None,
    rdp=None,
    activation=np.tanh,
    zero_output_for_mask=False,
):
    """Returns ``(outputs [B, T, U], h [B, U])``."""
    k, rk, b = (np.asarray(a, np.float64) for a in (kernel, recurrent_kernel, bias))
    batch, units = x.shape[0], rk.shape[0]

    def step(x_t, states):
        (h,) = states
        return [activation((x_t * _gate_mask(dp, 0)) @ k + b + (h * _gate_mask(rdp, 0)) @ rk)]

    states = (
        [np.zeros((batch, units))]
        if initial_state is None
        else [np.asarray(s, np.float64) for s in initial_state]
    )
    outputs, (h,) = _run(step, x, states, mask, go_backwards, zero_output_for_mask)
    return outputs, h


def dense(x, kernel, bias):
    return np.asarray(x, np.float64) @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)


def pad(sequences, maxlen, padding):
    """Left ('pre') or right ('post') zero padding of id lists to ``maxlen``."""
    out = np.zeros((len(sequences), maxlen), np.int32)
    for row, seq in enumerate(sequences):
        if padding == "pre":
            out[row, maxlen - len(seq) :] = seq
        else:
            out[row, : len(seq)] = seq
    return out
