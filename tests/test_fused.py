"""The fused CPU kernels (``rnnjax.fused``) against the numpy Keras equations and the scan path:
every cell and option (masks, direction, states, dropout, Bidirectional), gradients, forward mode
and second derivatives, vmap, a data-parallel mesh, which path 'auto' runs, and the errors."""

import functools
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_keras as ref
import pytest

from rnnjax import (
    RNN,
    Bidirectional,
    Classifier,
    GRUCell,
    LayerSpec,
    LSTMCell,
    ModelConfig,
    SimpleRNNCell,
    fused,
)

B, T, D, U = 5, 9, 5, 3
CELLS = {
    "lstm": lambda **kw: LSTMCell(U, **kw),
    "gru": lambda **kw: GRUCell(U, **kw),
    "gru_reset_before": lambda **kw: GRUCell(U, reset_after=False, **kw),
    "simple_rnn": lambda **kw: SimpleRNNCell(U, **kw),
}
NUM_STATES = {"lstm": 2, "gru": 1, "gru_reset_before": 1, "simple_rnn": 1}

pytestmark = pytest.mark.skipif(
    not fused.available(), reason=f"fused kernels unavailable: {fused.unavailable_reason()}"
)


def _mask() -> np.ndarray:
    """``[B, T]``: a full row, 'pre' and 'post' padding, padding at arbitrary steps, and a row
    that is padding throughout."""
    steps = np.arange(T)
    arbitrary = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1], bool)
    return np.stack([steps < T, steps >= T - 4, steps < 2, arbitrary, steps < 0])


def _inputs(rng) -> jax.Array:
    return jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)


def _initial_states(kind, rng) -> list[jax.Array]:
    return [jnp.asarray(rng.normal(size=(B, U)), jnp.float32) for _ in range(NUM_STATES[kind])]


def _random_params(variables, rng, scale=0.7):
    return jax.tree.map(
        lambda p: jnp.asarray(rng.normal(scale=scale, size=p.shape), jnp.float32), variables
    )


def _numpy_keras(kind, cell_params, x, **kw):
    """``(outputs, final states)`` of the numpy transcription of Keras."""
    p = {k: np.asarray(v, np.float64) for k, v in cell_params.items()}
    width = {"lstm": 4 * U, "gru": (2, 3 * U), "gru_reset_before": 3 * U, "simple_rnn": U}[kind]
    args = (np.asarray(x), p["kernel"], p["recurrent_kernel"], p.get("bias", np.zeros(width)))
    if kind == "lstm":
        outputs, h, c = ref.lstm(*args, **kw)
        return outputs, (h, c)
    if kind.startswith("gru"):
        outputs, h = ref.gru(*args, reset_after=kind == "gru", **kw)
        return outputs, (h,)
    outputs, h = ref.simple_rnn(*args, **kw)
    return outputs, (h,)


def _kernel_calls(fn, *args) -> list[str]:
    """The fused kernels a function's program calls, one entry per call: which path ran."""
    return re.findall(r"custom_call @(rnnjax_\w+)\(", jax.jit(fn).lower(*args).as_text())


def _custom_calls(fn, *args) -> set[str]:
    return set(_kernel_calls(fn, *args))


# -- values -------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_fused_matches_numpy_keras(kind, use_bias, go_backwards, masked, rng):
    x = _inputs(rng)
    mask = _mask() if masked else None
    layer = RNN(
        CELLS[kind](use_bias=use_bias),
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        implementation="fused",
    )
    variables = _random_params(layer.init(jax.random.key(0), x), rng)
    initial = _initial_states(kind, rng)
    outputs, *states = layer.apply(
        variables, x, None if mask is None else jnp.asarray(mask), initial_state=initial
    )
    expected_outputs, expected_states = _numpy_keras(
        kind,
        variables["params"]["cell"],
        x,
        mask=mask,
        initial_state=[np.asarray(s, np.float64) for s in initial],
        go_backwards=go_backwards,
    )
    np.testing.assert_allclose(outputs, expected_outputs, atol=1e-5)
    chex.assert_trees_all_close(tuple(states), expected_states, atol=1e-5)
    chex.assert_shape(outputs, (B, T, U))
    chex.assert_type([outputs, *states], jnp.float32)
    if masked:  # the fully padded row keeps its initial states and outputs them at every step
        np.testing.assert_array_equal(outputs[4], np.broadcast_to(initial[0][4], (T, U)))


@pytest.mark.parametrize("kind", list(CELLS))
def test_dropout_equals_numpy_keras_and_the_scan_path(kind, rng):
    """Input and recurrent dropout with a padding mask: the fused path uses the masks it sows
    (the ones the scan path draws from the same rng), and its values equal numpy Keras applying
    those masks and the scan path."""
    x = _inputs(rng)
    mask = jnp.asarray(_mask())
    outputs, sown = {}, {}
    for implementation in ("fused", "scan"):
        layer = RNN(
            CELLS[kind](dropout=0.3, recurrent_dropout=0.4),
            return_sequences=True,
            implementation=implementation,
        )
        variables = _random_params(layer.init(jax.random.key(0), x), np.random.default_rng(1))
        outputs[implementation], state = layer.apply(
            variables,
            x,
            mask,
            training=True,
            rngs={"dropout": jax.random.key(7)},
            mutable=["intermediates"],
        )
        sown[implementation] = state["intermediates"]["dropout_masks"][0]
    chex.assert_trees_all_equal(sown["fused"], sown["scan"])
    input_masks, recurrent_masks = sown["fused"]
    # Keras: one recurrent mask per gate (SimpleRNN: one).
    count = 1 if kind == "simple_rnn" else CELLS[kind]().gates
    chex.assert_shape(recurrent_masks, (count, B, U))
    expected, _ = _numpy_keras(
        kind,
        variables["params"]["cell"],
        x,
        mask=np.asarray(mask),
        dp=np.asarray(input_masks, np.float64),
        rdp=np.asarray(recurrent_masks, np.float64),
    )
    np.testing.assert_allclose(outputs["fused"], expected, atol=1e-5)
    np.testing.assert_allclose(outputs["fused"], outputs["scan"], atol=1e-5)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_runs_both_directions_fused(merge_mode, rng):
    x = _inputs(rng)
    mask = _mask()
    layer = Bidirectional(
        RNN(LSTMCell(U), return_sequences=True, return_state=True, implementation="fused"),
        merge_mode=merge_mode,
    )
    variables = _random_params(layer.init(jax.random.key(0), x), rng)
    result = layer.apply(variables, x, jnp.asarray(mask))
    params = variables["params"]
    zero = {"mask": mask, "zero_output_for_mask": True}  # as Keras' Bidirectional sets it
    forward, forward_states = _numpy_keras("lstm", params["forward"]["cell"], x, **zero)
    backward, backward_states = _numpy_keras(
        "lstm", params["backward"]["cell"], x, go_backwards=True, **zero
    )
    backward = backward[:, ::-1]
    merged = {
        "concat": lambda: np.concatenate([forward, backward], -1),
        "sum": lambda: forward + backward,
        "mul": lambda: forward * backward,
        "ave": lambda: (forward + backward) / 2,
        None: lambda: (forward, backward),
    }[merge_mode]()
    merged = merged if merge_mode is None else (merged,)
    chex.assert_trees_all_close(
        tuple(result), (*merged, *forward_states, *backward_states), atol=1e-5
    )
    calls = _kernel_calls(lambda v: layer.apply(v, x, jnp.asarray(mask)), variables)
    assert calls == ["rnnjax_lstm_forward"] * 2  # one call per direction


def test_an_empty_sequence_returns_the_initial_states(rng):
    x = jnp.zeros((B, 0, D), jnp.float32)
    layer = RNN(LSTMCell(U), return_sequences=True, return_state=True, implementation="fused")
    variables = layer.init(jax.random.key(0), x)
    initial = _initial_states("lstm", rng)
    outputs, *states = layer.apply(variables, x, initial_state=initial)
    chex.assert_shape(outputs, (B, 0, U))
    chex.assert_trees_all_equal(tuple(states), tuple(initial))


@pytest.mark.parametrize("kind", list(CELLS))
def test_an_empty_batch_runs_and_differentiates_as_on_the_scan_path(kind):
    """Zero rows, masked and with recurrent dropout: outputs [0, T, U] and zero gradients for
    every parameter, as on the scan path (the gradient's per-gate reshape once failed here)."""
    x = jnp.zeros((0, T, D), jnp.float32)
    mask = jnp.ones((0, T), bool)
    grads = {}
    for implementation in ("fused", "scan"):
        layer = RNN(
            CELLS[kind](recurrent_dropout=0.3),
            return_sequences=True,
            implementation=implementation,
        )
        variables = layer.init(jax.random.key(0), jnp.zeros((2, T, D), jnp.float32))

        def loss(variables, layer=layer):
            outputs = layer.apply(
                variables, x, mask, training=True, rngs={"dropout": jax.random.key(1)}
            )
            chex.assert_shape(outputs, (0, T, U))
            return jnp.sum(outputs)

        grads[implementation] = jax.grad(loss)(variables)
    chex.assert_trees_all_equal(grads["fused"], grads["scan"])
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(grads["fused"]))


# -- gradients ----------------------------------------------------------------------------------

# (go_backwards, masked, recurrent dropout)
OPTIONS = {"plain": (False, False, False), "masked_backwards_dropout": (True, True, True)}


def _layer_loss(kind, implementation, options, rng):
    """``(layer, loss(params, x, initial))``: every output and final state in the loss, with
    fixed random weights so no gradient is a plain sum."""
    go_backwards, masked, recurrent_dropout = options
    layer = RNN(
        CELLS[kind](dropout=0.2, recurrent_dropout=0.4 if recurrent_dropout else 0.0),
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        implementation=implementation,
    )
    mask = jnp.asarray(_mask()) if masked else None
    weights = jnp.asarray(rng.normal(size=(B, T, U)), jnp.float32)

    def loss(params, x, initial):
        output, *states = layer.apply(
            {"params": params},
            x,
            mask,
            initial_state=initial,
            training=True,
            rngs={"dropout": jax.random.key(3)},
        )
        return jnp.sum(output * weights) + sum(jnp.sum(jnp.sin(s)) for s in states)

    return layer, loss


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("kind", list(CELLS))
def test_gradients_equal_the_scan_autodiff(kind, options, rng):
    """The kernels' backward pass against JAX's autodiff of the scanned cell, for the parameters,
    the inputs and the initial states; and the compiled gradient calls both kernels."""
    x = _inputs(rng)
    initial = _initial_states(kind, rng)
    layer, fused_loss = _layer_loss(kind, "fused", OPTIONS[options], np.random.default_rng(1))
    _, scan_loss = _layer_loss(kind, "scan", OPTIONS[options], np.random.default_rng(1))
    params = _random_params(layer.init(jax.random.key(0), x), rng)["params"]
    value, grad = jax.jit(jax.value_and_grad(fused_loss, argnums=(0, 1, 2)))(params, x, initial)
    expected_value, expected = jax.jit(jax.value_and_grad(scan_loss, argnums=(0, 1, 2)))(
        params, x, initial
    )
    np.testing.assert_allclose(value, expected_value, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(grad, expected, atol=1e-5, rtol=1e-5)
    assert _custom_calls(jax.grad(fused_loss), params, x, initial) == {
        f"rnnjax_{kind}_forward",
        f"rnnjax_{kind}_backward",
    }


@pytest.mark.parametrize("kind", list(CELLS))
def test_the_recurrence_and_its_gradients_equal_a_scan_of_the_cell(kind, rng):
    """``fused.recurrence`` on its own, masks included, against a ``lax.scan`` of the cell's
    step written here: outputs and the gradients of every operand, the recurrent dropout masks
    too."""
    units = U
    cell = fused.KINDS[kind](units, parent=None)
    gates = cell.gates
    xw = jnp.asarray(rng.normal(size=(B, T, gates * units)), jnp.float32)
    kernel = jnp.asarray(rng.normal(scale=0.7, size=(units, gates * units)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(gates * units,)), jnp.float32) if kind == "gru" else None
    states = tuple(_initial_states(kind, rng))
    masks = jnp.asarray(rng.uniform(0.5, 1.5, size=(gates, B, units)), jnp.float32)
    mask = jnp.asarray(_mask())

    def scanned(xw, kernel, bias, states, masks):
        params = {"recurrent_kernel": kernel}
        if bias is not None:
            params["bias"] = jnp.stack([jnp.zeros_like(bias), bias])

        def step(carry, inputs):
            xw_t, keep = inputs
            new, _ = cell.apply({"params": params}, carry, xw_t, masks, method="step")
            new = tuple(jnp.where(keep[:, None], n, o) for n, o in zip(new, carry))
            return new, new[0]

        carry, hs = jax.lax.scan(step, states, (jnp.swapaxes(xw, 0, 1), mask.T))
        return jnp.swapaxes(hs, 0, 1), carry[1:]

    def kernels(xw, kernel, bias, states, masks):
        return fused.recurrence(
            kind, xw, kernel, states, recurrent_bias=bias, mask=mask, recurrent_masks=masks
        )

    operands = (xw, kernel, bias, states, masks)
    chex.assert_trees_all_close(kernels(*operands), scanned(*operands), atol=1e-5)

    def loss(fn):
        return lambda *args: sum(jnp.sum(jnp.sin(o)) for o in jax.tree.leaves(fn(*args)))

    argnums = tuple(i for i, operand in enumerate(operands) if operand is not None)
    grads = jax.grad(loss(kernels), argnums=argnums)(*operands)
    expected = jax.grad(loss(scanned), argnums=argnums)(*operands)
    chex.assert_trees_all_close(grads, expected, atol=1e-5, rtol=1e-5)


def _both_paths(kind, derivatives, rng):
    """``{implementation: derivatives(outputs, loss, variables, x)}`` for the fused and the scan
    path of one masked layer with recurrent dropout, each jitted."""
    x = _inputs(rng)
    mask = jnp.asarray(_mask())
    results = {}
    for implementation in ("fused", "scan"):
        layer = RNN(
            CELLS[kind](recurrent_dropout=0.3), return_sequences=True, implementation=implementation
        )
        variables = _random_params(layer.init(jax.random.key(0), x), np.random.default_rng(1))

        def outputs(variables, x, layer=layer):
            return layer.apply(
                variables, x, mask, training=True, rngs={"dropout": jax.random.key(2)}
            )

        def loss(variables, x, outputs=outputs):
            return jnp.sum(jnp.sin(outputs(variables, x)))

        results[implementation] = jax.jit(functools.partial(derivatives, outputs, loss))(
            variables, x
        )
    return results


@pytest.mark.parametrize("kind", ["lstm", "gru_reset_before"])
def test_forward_mode_equals_the_scan_path(kind, rng):
    """``jax.jvp`` and ``jax.linearize`` through a fused layer (masked, recurrent dropout) equal
    the scan path's."""

    def derivatives(outputs, loss, variables, x):
        tangent = jax.tree.map(lambda p: jnp.ones_like(p) / 3, variables)
        _, linearized = jax.linearize(lambda v: outputs(v, x), variables)
        return jax.jvp(outputs, (variables, x), (tangent, x)), linearized(tangent)

    results = _both_paths(kind, derivatives, rng)
    chex.assert_trees_all_close(results["fused"], results["scan"], atol=1e-5, rtol=1e-5)


def test_second_derivatives_and_jacobians_equal_the_scan_path(rng):
    """``jacfwd``, ``grad`` of ``grad``, ``hessian`` and a Hessian-vector product (``jvp`` of
    ``grad``) through a fused layer equal the same on the scan path."""

    def derivatives(outputs, loss, variables, x):
        tangent = jax.tree.map(lambda p: jnp.ones_like(p) / 3, variables)
        cell = variables["params"]["cell"]

        def loss_of_kernel(kernel):
            return loss({"params": {"cell": cell | {"recurrent_kernel": kernel}}}, x)

        def input_kernel_gradient_norm(x):
            return jnp.sum(jax.grad(loss)(variables, x)["params"]["cell"]["kernel"] ** 2)

        return {
            "jacfwd": jax.jacfwd(outputs, argnums=1)(variables, x),
            "grad_of_grad": jax.grad(input_kernel_gradient_norm)(x),
            "hessian": jax.hessian(loss_of_kernel)(cell["recurrent_kernel"]),
            "hessian_vector": jax.jvp(lambda v: jax.grad(loss)(v, x), (variables,), (tangent,)),
        }

    results = _both_paths("lstm", derivatives, rng)
    chex.assert_trees_all_close(results["fused"], results["scan"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_vmap_over_parameter_sets(kind, rng):
    """K models at once (``--num-seeds``): one kernel call runs every model's rows with that
    model's weights (and the GRU's recurrent bias); values and gradients equal each model run
    alone on the scan path, also for two nested vmaps (a [2, 3] grid of models). The LSTM is
    masked and uses recurrent dropout, the others neither (the kernels' empty optional inputs
    under vmap)."""
    options = kind == "lstm"
    x = _inputs(rng)
    mask = jnp.asarray(_mask()) if options else None
    weights = jnp.asarray(rng.normal(size=(B, T, U)), jnp.float32)

    def make(implementation):
        cell = CELLS[kind](recurrent_dropout=0.3 if options else 0.0)
        return RNN(cell, return_sequences=True, implementation=implementation)

    fused_layer, scan_layer = make("fused"), make("scan")
    keys = jax.random.split(jax.random.key(0), 6).reshape(2, 3)
    grid = jax.vmap(jax.vmap(lambda key: fused_layer.init(key, x)))(keys)

    def loss(layer):
        def value(variables):
            outputs = layer.apply(
                variables, x, mask, training=True, rngs={"dropout": jax.random.key(4)}
            )
            return jnp.sum(outputs * weights)

        return value

    value_and_grad = jax.jit(jax.vmap(jax.vmap(jax.value_and_grad(loss(fused_layer)))))
    values, grads = value_and_grad(grid)
    # All six models in one call each way.
    assert sorted(_kernel_calls(jax.vmap(jax.vmap(jax.grad(loss(fused_layer)))), grid)) == [
        f"rnnjax_{kind}_backward",
        f"rnnjax_{kind}_forward",
    ]
    scan_value_and_grad = jax.jit(jax.value_and_grad(loss(scan_layer)))
    for i, j in itertools.product(range(2), range(3)):
        one = jax.tree.map(lambda a, i=i, j=j: a[i, j], grid)
        value, grad = scan_value_and_grad(one)
        np.testing.assert_allclose(values[i, j], value, rtol=1e-5, atol=1e-5)
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i, j=j: a[i, j], grads), grad, atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("kind", list(CELLS))
def test_row_blocks_and_column_tails_equal_the_scan_path(kind, rng):
    """The kernels run rows in blocks of 8 and columns in register tiles of 16 and 8. Three
    models of 11 rows (blocks cut where the model changes, and by the two-thread split), 12 units
    (tiles of 16 plus an overlapping tile of 8 for 12, 36 and 48 columns), padding and recurrent
    dropout: values and gradients equal each model run alone on the scan path."""
    models, rows, steps, units = 3, 11, 6, 12
    x = jnp.asarray(rng.normal(size=(models, rows, steps, D)), jnp.float32)
    mask = jnp.asarray(rng.random((models, rows, steps)) > 0.25)
    weights = jnp.asarray(rng.normal(size=(rows, steps, units)), jnp.float32)
    make_cell = {
        "lstm": LSTMCell,
        "gru": GRUCell,
        "gru_reset_before": functools.partial(GRUCell, reset_after=False),
        "simple_rnn": SimpleRNNCell,
    }[kind]

    def loss(implementation):
        layer = RNN(
            make_cell(units, recurrent_dropout=0.3),
            return_sequences=True,
            implementation=implementation,
        )

        def value(variables, x, mask):
            outputs = layer.apply(
                variables, x, mask, training=True, rngs={"dropout": jax.random.key(5)}
            )
            return jnp.sum(jnp.sin(outputs) * weights)

        return layer, value

    layer, fused_loss = loss("fused")
    _, scan_loss = loss("scan")
    stack = _random_params(
        jax.eval_shape(jax.vmap(lambda x: layer.init(jax.random.key(0), x)), x), rng, scale=0.4
    )
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(fused_loss, argnums=(0, 1))))(
        stack, x, mask
    )
    scan_value_and_grad = jax.jit(jax.value_and_grad(scan_loss, argnums=(0, 1)))
    for m in range(models):
        one = jax.tree.map(lambda a, m=m: a[m], (stack, x, mask))
        value, grad = scan_value_and_grad(*one)
        np.testing.assert_allclose(values[m], value, rtol=1e-5, atol=1e-5)
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, m=m: a[m], grads), grad, atol=1e-4, rtol=1e-5
        )


# -- which path runs ----------------------------------------------------------------------------


def test_auto_runs_the_kernels_for_every_standard_float32_layer(rng):
    x = _inputs(rng)
    mask = jnp.asarray(_mask())

    def calls(cell, training=False, use_mask=False, implementation="auto", **layer_kw):
        layer = RNN(cell, implementation=implementation, **layer_kw)
        variables = layer.init(jax.random.key(0), x)
        return _custom_calls(
            lambda v: layer.apply(
                v,
                x,
                mask if use_mask else None,
                training=training,
                rngs={"dropout": jax.random.key(1)},
            ),
            variables,
        )

    assert calls(LSTMCell(U)) == {"rnnjax_lstm_forward"}
    assert calls(LSTMCell(U), use_mask=True, go_backwards=True) == {"rnnjax_lstm_forward"}
    assert calls(LSTMCell(U, recurrent_dropout=0.5, dropout=0.5), training=True, use_mask=True) == {
        "rnnjax_lstm_forward"
    }
    assert calls(GRUCell(U), use_mask=True) == {"rnnjax_gru_forward"}
    assert calls(GRUCell(U, reset_after=False, recurrent_dropout=0.5), training=True) == {
        "rnnjax_gru_reset_before_forward"
    }
    assert calls(SimpleRNNCell(U), use_mask=True) == {"rnnjax_simple_rnn_forward"}
    assert calls(LSTMCell(U), implementation="scan") == set()
    # Other activations run the scan.
    assert calls(LSTMCell(U, activation="relu")) == set()
    assert calls(GRUCell(U, recurrent_activation="hard_sigmoid")) == set()
    assert calls(SimpleRNNCell(U, activation="relu")) == set()
    assert "float32 only" in fused.unsupported(LSTMCell(U, dtype=jnp.bfloat16), x)


def test_a_masked_stacked_classifier_runs_only_kernels(rng):
    """The tutorials' masked, stacked and bidirectional recipes: every recurrent layer fused."""
    config = ModelConfig(
        vocab_size=20,
        embed_dim=4,
        layers=(
            LayerSpec("gru", 3, bidirectional=True, recurrent_dropout=0.2),
            LayerSpec("simple_rnn", 3, dropout=0.2),
            LayerSpec("lstm", 3, recurrent_dropout=0.2),
        ),
        mask_zero=True,
    )
    model = Classifier(config, implementation="fused")
    ids = jnp.asarray(rng.integers(0, 20, size=(B, T)), jnp.int32)
    params = model.init(jax.random.key(0), ids)["params"]

    def loss(params):
        logits = model.apply(
            {"params": params}, ids, training=True, rngs={"dropout": jax.random.key(1)}
        )
        return jnp.sum(logits**2)

    assert _custom_calls(jax.grad(loss), params) == set(fused.TARGETS) - {
        "rnnjax_gru_reset_before_forward",
        "rnnjax_gru_reset_before_backward",
    }
    scan = Classifier(config, implementation="scan")

    def scan_loss(params):
        logits = scan.apply(
            {"params": params}, ids, training=True, rngs={"dropout": jax.random.key(1)}
        )
        return jnp.sum(logits**2)

    chex.assert_trees_all_close(
        jax.jit(jax.grad(loss))(params), jax.jit(jax.grad(scan_loss))(params), atol=1e-5, rtol=1e-5
    )


class _PeepholeLSTMCell(LSTMCell):
    """A subclass may change the equations: it is not one of the kernels' cells."""


@pytest.mark.parametrize(
    "cell, dtype, match",
    [
        (lambda: LSTMCell(U, activation="relu"), jnp.float32, "activation='tanh'"),
        (
            lambda: GRUCell(U, recurrent_activation="hard_sigmoid"),
            jnp.float32,
            "recurrent_activation='sigmoid'",
        ),
        (lambda: _PeepholeLSTMCell(U), jnp.float32, "no fused kernel for _PeepholeLSTMCell"),
        (lambda: SimpleRNNCell(U, dtype=jnp.bfloat16), jnp.bfloat16, "float32 only"),
    ],
)
def test_fused_where_it_cannot_run_is_one_clear_error(cell, dtype, match):
    x = jnp.zeros((B, T, D), dtype)
    with pytest.raises(ValueError, match=f"implementation='fused' cannot run.*{match}.*'auto'"):
        RNN(cell(), implementation="fused").init(jax.random.key(0), x)


def test_unknown_implementation_is_rejected():
    x = jnp.zeros((B, T, D), jnp.float32)
    with pytest.raises(ValueError, match="implementation must be one of"):
        RNN(LSTMCell(U), implementation="triton").init(jax.random.key(0), x)


def test_recurrence_rejects_a_bias_it_does_not_use():
    xw = jnp.zeros((B, T, 4 * U), jnp.float32)
    kernel = jnp.zeros((U, 4 * U), jnp.float32)
    states = (jnp.zeros((B, U), jnp.float32),) * 2
    with pytest.raises(ValueError, match="recurrent_bias is required for kind 'gru' and only"):
        fused.recurrence("lstm", xw, kernel, states, recurrent_bias=jnp.zeros(4 * U))
    with pytest.raises(ValueError, match="kind must be one of"):
        fused.recurrence("peephole", xw, kernel, states)


def test_without_a_compiler_auto_falls_back_to_the_scan(tmp_path):
    """No C++ compiler: ``available()`` is False with the reason, 'auto' still trains."""
    script = """
import jax, jax.numpy as jnp
from rnnjax import RNN, LSTMCell, fused
assert not fused.available()
print(fused.unavailable_reason())
layer = RNN(LSTMCell(3))
x = jnp.ones((2, 4, 5))
print(layer.apply(layer.init(jax.random.key(0), x), x).shape)
"""
    env = os.environ | {
        "CXX": str(tmp_path / "no-such-compiler"),
        "RNNJAX_CACHE_DIR": str(tmp_path / "cache"),
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    reason, shape = result.stdout.strip().splitlines()[-2:]
    assert "building the fused CPU kernels failed" in reason and "no-such-compiler" in reason
    assert shape == "(2, 3)"
    assert not any((tmp_path / "cache").glob("*.so"))


def _fake_compiler(tmp_path, body: str) -> Path:
    """A stand-in for ``c++``: ``body`` runs with ``$out`` the ``-o`` path (given last)."""
    compiler = tmp_path / "fake-c++"
    compiler.write_text(f"#!/bin/sh\nfor a; do out=$a; done\n{body}\n")
    compiler.chmod(0o755)
    return compiler


def test_a_read_only_kernel_cache_builds_for_the_process_and_says_so(tmp_path, monkeypatch):
    """The build goes to a private temporary directory (still fast, not cached), with one
    warning; the read-only cache is left as it was (mode bits honoured for root too)."""
    compiler = _fake_compiler(tmp_path, 'touch "$out"')
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o555)
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("RNNJAX_CACHE_DIR", str(cache))
    with pytest.warns(UserWarning, match="cannot write the kernel cache"):
        library = fused._build()
    assert library.exists() and cache not in library.parents and list(cache.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "emptied", "digest lost"])
def test_a_damaged_cached_library_is_built_again(tmp_path, monkeypatch, damage):
    """A truncated library would crash the process in ``dlopen`` and an empty one fail to load
    on every run; each build records the library's digest, and a library that differs from it
    (or has none) is built again."""
    builds = tmp_path / "builds"
    compiler = _fake_compiler(
        tmp_path, f'echo build >> {builds}; head -c 4096 /dev/urandom > "$out"'
    )
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("RNNJAX_CACHE_DIR", str(tmp_path / "cache"))
    library = fused._build()
    compiled = builds.read_text().count("build")  # the objects and the link
    assert fused._build() == library and builds.read_text().count("build") == compiled
    if damage == "truncated":
        library.write_bytes(library.read_bytes()[:1000])
    elif damage == "emptied":
        library.write_bytes(b"")
    else:
        library.with_suffix(".sha256").unlink()
    assert fused._build() == library and builds.read_text().count("build") == 2 * compiled
    assert len(library.read_bytes()) == 4096


def test_a_compiler_stopped_by_a_signal_caches_no_lesser_build(tmp_path, monkeypatch):
    """A Ctrl-C reaches the compiler too; its death is not the compiler refusing a flag, so no
    build without that flag is made and cached in place of the full one."""
    compiler = _fake_compiler(
        tmp_path,
        'case "$*" in *prefer-vector-width*) kill -INT $$;; esac\n: > "$out"',
    )
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("RNNJAX_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="stopped by signal 2"):
        fused._build()
    assert not list((tmp_path / "cache").glob("*.so"))


def test_the_build_depends_on_every_kernel_source():
    """The cache key hashes every source: the shared header and each cell's file."""
    names = {path.name for path in fused._sources()}
    assert {"recurrence.h", "lstm.cc", "gru.cc", "simple_rnn.cc"} <= names


SHARDED_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from rnnjax import RNN, GRUCell, LSTMCell, steps
from rnnjax.sharding import data_mesh

mesh = data_mesh(4)
batch = NamedSharding(mesh, PartitionSpec("data"))
x = jax.device_put(jax.random.normal(jax.random.key(3), (16, 6, 5)), batch)
mask = jax.device_put(jnp.arange(6)[None] < jnp.arange(16)[:, None] % 7, batch)
cells = (LSTMCell(3), GRUCell(3, reset_after=False, recurrent_dropout=0.3))
for cell in cells:
    grads = {}
    for implementation in ("fused", "scan"):
        layer = RNN(cell, return_sequences=True, implementation=implementation)
        variables = layer.init(jax.random.key(0), x)

        def loss(variables, x):
            with steps.mesh_context(batch):
                out = layer.apply(variables, x, mask, training=True,
                                  rngs={"dropout": jax.random.key(1)})
                return jnp.sum(out ** 2)

        step = jax.jit(jax.grad(loss, argnums=(0, 1)))
        program = step.lower(variables, x).compile().as_text()
        if implementation == "fused":
            assert "custom-call" in program and "all-gather" not in program, program
        grads[implementation] = step(variables, x)
    for a, b in zip(jax.tree.leaves(grads["fused"]), jax.tree.leaves(grads["scan"])):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
print("ok")
"""


@pytest.mark.slow
def test_data_parallel_runs_the_kernels_on_each_devices_rows():
    """Under a 4-device mesh the kernels get each device's rows (no gather of the batch onto
    every device), masks and recurrent dropout masks included, and the gradients, psummed over
    devices, equal the scan's."""
    env = os.environ | {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
