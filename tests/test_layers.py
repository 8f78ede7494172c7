"""Sequence layers against the numpy Keras equations: masking, direction, states, dropout."""

import functools
import itertools

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import numpy_keras as ref
import pytest

from rnnjax import RNN, Bidirectional, EmbeddedIds, GRUCell, LSTMCell, SimpleRNNCell, fused

B, T, D, U = 3, 7, 5, 4
CELLS = {
    "lstm": lambda **kw: LSTMCell(U, **kw),
    "gru": lambda **kw: GRUCell(U, **kw),
    "gru_reset_before": lambda **kw: GRUCell(U, reset_after=False, **kw),
    "simple_rnn": lambda **kw: SimpleRNNCell(U, **kw),
}


def _inputs(rng):
    return jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)


def _mask(padding):
    """Rows of 7, 4 and 1 real tokens, padded on the given side."""
    lengths = [T, 4, 1]
    steps = np.arange(T)
    if padding == "post":
        return np.stack([steps < n for n in lengths])
    return np.stack([steps >= T - n for n in lengths])


def _random_params(variables, rng):
    return jax.tree.map(
        lambda p: jnp.asarray(rng.normal(scale=0.7, size=p.shape), jnp.float32), variables
    )


def _reference(kind, params, x, **kw):
    """Numpy outputs and final states for a cell kind."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    args = (np.asarray(x), p["kernel"], p["recurrent_kernel"], p["bias"])
    if kind == "lstm":
        outputs, h, c = ref.lstm(*args, **kw)
        return outputs, (h, c)
    if kind.startswith("gru"):
        outputs, h = ref.gru(*args, reset_after=kind == "gru", **kw)
        return outputs, (h,)
    outputs, h = ref.simple_rnn(*args, **kw)
    return outputs, (h,)


# The fused CPU kernels (every cell here; skipped without a compiler) and the scan path.
FUSED = pytest.param(
    "fused",
    marks=pytest.mark.skipif(not fused.available(), reason=f"{fused.unavailable_reason()}"),
)
IMPLEMENTATIONS = [FUSED, "scan"]
PATHS = {"fused": ("fused", True), "scan_hoisted": ("scan", True), "scan_per_step": ("scan", False)}


@pytest.mark.parametrize(
    "path", [FUSED if path == "fused" else path for path in PATHS], ids=list(PATHS)
)
@pytest.mark.parametrize("padding", [None, "pre", "post"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_sequence_matches_numpy_keras(kind, go_backwards, padding, path, rng):
    implementation, hoist = PATHS[path]
    x = _inputs(rng)
    mask = None if padding is None else jnp.asarray(_mask(padding))
    layer = RNN(
        CELLS[kind](),
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        hoist_input_projection=hoist,
        implementation=implementation,
    )
    variables = _random_params(layer.init(jax.random.key(0), x, mask), rng)
    outputs, *states = layer.apply(variables, x, mask)
    expected_outputs, expected_states = _reference(
        kind,
        variables["params"]["cell"],
        x,
        mask=None if mask is None else np.asarray(mask),
        go_backwards=go_backwards,
    )
    np.testing.assert_allclose(outputs, expected_outputs, atol=1e-5)
    chex.assert_trees_all_close(tuple(states), expected_states, atol=1e-5)
    last = RNN(
        CELLS[kind](),
        go_backwards=go_backwards,
        hoist_input_projection=hoist,
        implementation=implementation,
    )
    np.testing.assert_allclose(last.apply(variables, x, mask), expected_outputs[:, -1], atol=1e-5)


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_padding_does_not_change_the_last_output(kind, padding, rng):
    """Keras mask_zero: a padded sequence ends in the same output as the unpadded one."""
    layer = RNN(CELLS[kind]())
    short = _inputs(rng)[:1, :4]
    variables = _random_params(layer.init(jax.random.key(0), short), rng)
    pad = jnp.zeros((1, 3, D), jnp.float32)
    padded = jnp.concatenate([pad, short] if padding == "pre" else [short, pad], axis=1)
    steps = np.arange(T)
    mask = jnp.asarray((steps >= 3) if padding == "pre" else (steps < 4))[None]
    np.testing.assert_allclose(
        layer.apply(variables, padded, mask), layer.apply(variables, short), atol=1e-6
    )


def test_masked_outputs_are_what_keras_returns(rng):
    """'pre' padding outputs zeros (the initial h) before the first token; 'post' repeats h."""
    x = _inputs(rng)
    layer = RNN(LSTMCell(U), return_sequences=True)
    variables = layer.init(jax.random.key(0), x)
    pre = layer.apply(variables, x, jnp.asarray(_mask("pre")))
    np.testing.assert_array_equal(pre[1, : T - 4], 0.0)
    post = layer.apply(variables, x, jnp.asarray(_mask("post")))
    np.testing.assert_array_equal(post[1, 4:], jnp.broadcast_to(post[1, 3], (T - 4, U)))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_initial_state(kind, rng):
    x = _inputs(rng)
    cell = CELLS[kind]()
    states = [jnp.asarray(rng.normal(size=(B, U)), jnp.float32) for _ in range(cell.num_states)]
    layer = RNN(cell, return_sequences=True)
    variables = _random_params(layer.init(jax.random.key(0), x), rng)
    outputs = layer.apply(variables, x, initial_state=states)
    expected, _ = _reference(
        kind, variables["params"]["cell"], x, initial_state=[np.asarray(s) for s in states]
    )
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
    with pytest.raises(ValueError, match="2 state"):
        RNN(LSTMCell(U)).apply(
            variables if kind == "lstm" else RNN(LSTMCell(U)).init(jax.random.key(0), x),
            x,
            initial_state=[states[0]],
        )


@pytest.mark.parametrize("implementation", ["scan", "auto"])
@pytest.mark.parametrize(
    "shape", [(1, U), (B, U - 1), (B - 1, U), (U,), (B, U, 1)], ids=lambda s: str(list(s))
)
def test_initial_states_of_another_shape_are_refused(implementation, shape, rng):
    """A state that is not ``[batch, units]`` is an error on every path (the fused kernels would
    otherwise read ``batch * units`` floats from a smaller buffer), also inside Bidirectional."""
    x = _inputs(rng)
    layer = RNN(LSTMCell(U), implementation=implementation)
    variables = layer.init(jax.random.key(0), x)
    wrong = [jnp.ones(shape, jnp.float32), jnp.ones((B, U), jnp.float32)]
    with pytest.raises(ValueError, match=r"must have shapes \[\(3, 4\), \(3, 4\)\]"):
        layer.apply(variables, x, initial_state=wrong)
    both = Bidirectional(RNN(LSTMCell(U), implementation=implementation))
    variables = both.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="must have shapes"):
        both.apply(variables, x, initial_state=[*wrong, *wrong])


def test_go_backwards_twice_is_identity_on_reversed_input(rng):
    x = _inputs(rng)
    layer = RNN(GRUCell(U), return_sequences=True, go_backwards=True)
    variables = layer.init(jax.random.key(0), x)
    forward = RNN(GRUCell(U), return_sequences=True)
    np.testing.assert_allclose(
        layer.apply(variables, x), forward.apply(variables, jnp.flip(x, 1)), atol=1e-6
    )


@pytest.mark.parametrize("unroll", [2, True])
def test_unroll_gives_the_same_values(unroll, rng):
    x = _inputs(rng)
    layer = RNN(LSTMCell(U), return_sequences=True)
    variables = layer.init(jax.random.key(0), x)
    unrolled = RNN(LSTMCell(U), return_sequences=True, unroll=unroll)
    np.testing.assert_allclose(unrolled.apply(variables, x), layer.apply(variables, x), atol=1e-6)


GRID = list(
    itertools.product([False, True], [False, True], [False, True], [False, True], [False, True])
)


@pytest.mark.parametrize(
    "return_sequences, return_state, go_backwards, masked, bidirectional", GRID
)
def test_output_shapes_and_dtypes(
    return_sequences, return_state, go_backwards, masked, bidirectional, rng
):
    x = _inputs(rng)
    mask = jnp.asarray(_mask("post")) if masked else None
    layer = RNN(
        LSTMCell(U),
        return_sequences=return_sequences,
        return_state=return_state,
        go_backwards=go_backwards,
    )
    if bidirectional:
        layer = Bidirectional(layer)
    variables = layer.init(jax.random.key(0), x, mask)
    result = layer.apply(variables, x, mask)
    width = 2 * U if bidirectional else U
    output_shape = (B, T, width) if return_sequences else (B, width)
    if return_state:
        num_states = 4 if bidirectional else 2
        chex.assert_equal(len(result), 1 + num_states)
        chex.assert_shape(result[0], output_shape)
        chex.assert_shape(result[1:], (B, U))
        leaves = result
    else:
        chex.assert_shape(result, output_shape)
        leaves = (result,)
    chex.assert_type(leaves, jnp.float32)
    chex.assert_tree_all_finite(leaves)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("padding", [None, "post"])
def test_bidirectional_matches_numpy_keras(merge_mode, padding, implementation, rng):
    x = _inputs(rng)
    mask = None if padding is None else np.asarray(_mask(padding))
    layer = Bidirectional(
        RNN(GRUCell(U), return_sequences=True, return_state=True, implementation=implementation),
        merge_mode=merge_mode,
    )
    variables = _random_params(layer.init(jax.random.key(0), x, mask), rng)
    result = layer.apply(variables, x, None if mask is None else jnp.asarray(mask))
    params = variables["params"]
    # Keras' Bidirectional zeroes the sequences' masked steps (zero_output_for_mask).
    forward, (h_forward,) = _reference(
        "gru", params["forward"]["cell"], x, mask=mask, zero_output_for_mask=True
    )
    backward, (h_backward,) = _reference(
        "gru",
        params["backward"]["cell"],
        x,
        mask=mask,
        go_backwards=True,
        zero_output_for_mask=True,
    )
    backward = backward[:, ::-1]  # Keras flips the backward sequence back to input order
    merged = {
        "concat": lambda: np.concatenate([forward, backward], -1),
        "sum": lambda: forward + backward,
        "mul": lambda: forward * backward,
        "ave": lambda: (forward + backward) / 2,
        None: lambda: (forward, backward),
    }[merge_mode]()
    expected = (
        (*merged, h_forward, h_backward) if merge_mode is None else (merged, h_forward, h_backward)
    )
    chex.assert_trees_all_close(tuple(result), expected, atol=1e-5)


def test_bidirectional_rejects_backward_layer_in_the_same_direction():
    layer = Bidirectional(RNN(LSTMCell(U)), backward_layer=RNN(LSTMCell(U)))
    with pytest.raises(ValueError, match="opposite go_backwards"):
        layer.init(jax.random.key(0), jnp.zeros((B, T, D)))


# -- dropout -------------------------------------------------------------------------------------


def _masks_used(layer, variables, x, key):
    _, state = layer.apply(
        variables, x, training=True, rngs={"dropout": key}, mutable=["intermediates"]
    )
    return state["intermediates"]["dropout_masks"][0]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("dropout, recurrent_dropout", [(0.3, 0.0), (0.0, 0.4), (0.3, 0.4)])
def test_dropout_masks_are_reused_at_every_step(
    kind, dropout, recurrent_dropout, implementation, rng
):
    x = _inputs(rng)
    cell = CELLS[kind](dropout=dropout, recurrent_dropout=recurrent_dropout)
    layer = RNN(cell, return_sequences=True, implementation=implementation)
    variables = _random_params(layer.init(jax.random.key(0), x), rng)
    key = jax.random.key(7)
    input_masks, recurrent_masks = _masks_used(layer, variables, x, key)
    # Keras: one mask per gate when recurrent_dropout > 0 (SimpleRNN: always one).
    count = cell.gates if (recurrent_dropout > 0 and kind != "simple_rnn") else 1
    for masks, rate, width in ((input_masks, dropout, D), (recurrent_masks, recurrent_dropout, U)):
        if rate == 0:
            assert masks is None
            continue
        chex.assert_shape(masks, (count, B, width))
        values = np.asarray(masks)
        assert np.all(np.isclose(values, 0.0) | np.isclose(values, 1 / (1 - rate)))
    outputs = layer.apply(variables, x, training=True, rngs={"dropout": key})
    expected, _ = _reference(
        kind,
        variables["params"]["cell"],
        x,
        dp=None if input_masks is None else np.asarray(input_masks, np.float64),
        rdp=None if recurrent_masks is None else np.asarray(recurrent_masks, np.float64),
    )
    # The reference applies the same masks at every timestep; equality shows rnnjax does too.
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
    # Absent at inference.
    inference, _ = _reference(kind, variables["params"]["cell"], x)
    np.testing.assert_allclose(layer.apply(variables, x), inference, atol=1e-5)


def test_dropout_mask_is_constant_in_time_literally():
    """SimpleRNN, identity kernel, no recurrence, ones in: every step outputs the input mask."""
    layer = RNN(SimpleRNNCell(D, activation="linear", dropout=0.5), return_sequences=True)
    x = jnp.ones((64, T, D), jnp.float32)
    variables = layer.init(jax.random.key(0), x)
    variables = jax.tree.map(jnp.zeros_like, variables)
    variables["params"]["cell"]["kernel"] = jnp.eye(D)
    outputs = np.asarray(
        layer.apply(variables, x, training=True, rngs={"dropout": jax.random.key(1)})
    )
    np.testing.assert_array_equal(outputs, np.broadcast_to(outputs[:, :1], outputs.shape))
    assert set(np.unique(outputs)) == {0.0, 2.0}
    assert 0.3 < (outputs[:, 0] == 0).mean() < 0.7
    other = layer.apply(variables, x, training=True, rngs={"dropout": jax.random.key(2)})
    assert not np.array_equal(outputs, other)  # a fresh draw per call (per batch)


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_dropout_rate_outside_unit_interval_is_rejected(rate):
    with pytest.raises(ValueError, match=r"^dropout must be in \[0, 1\)"):
        LSTMCell(U, dropout=rate)
    with pytest.raises(ValueError, match=r"^recurrent_dropout must be in \[0, 1\)"):
        GRUCell(U, recurrent_dropout=rate)


def test_auto_runs_the_scan_on_accelerators_until_a_measurement_says_otherwise(monkeypatch):
    """No GPU or TPU measurement has shown a fused path faster than the scan yet, so 'auto'
    traces the scan there, for every cell (BUILD_NOTES.md, "Accelerators")."""
    x = jax.ShapeDtypeStruct((B, T, D), jnp.float32)
    for backend in ("gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        for make in CELLS.values():
            layer = RNN(make(), return_sequences=True)
            variables = jax.eval_shape(layer.init, jax.random.key(0), x)
            program = str(jax.make_jaxpr(layer.apply)(variables, x))
            assert "scan[" in program
            assert not any(
                path in program for path in ("pallas_call", "custom_vmap_call", "call_hi_primitive")
            )


V = 6  # table rows <= B * T: the layer projects the table


def _embedded(rng, vocab=V):
    table = jnp.asarray(rng.normal(size=(vocab, D)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, vocab, (B, T)), jnp.int32)
    return EmbeddedIds(table, ids)


def _dot_operand_shapes(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    shapes = set()

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                shapes.update(tuple(var.aval.shape) for var in eqn.invars)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    return shapes


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_embedded_ids_match_numpy_keras_on_the_gathered_sequence(
    kind, go_backwards, implementation, rng
):
    inputs = _embedded(rng)
    mask = jnp.asarray(_mask("pre"))
    layer = RNN(
        CELLS[kind](),
        return_sequences=True,
        go_backwards=go_backwards,
        implementation=implementation,
    )
    variables = _random_params(layer.init(jax.random.key(0), inputs, mask), rng)
    x = np.asarray(inputs.table)[np.asarray(inputs.ids)]
    expected, _ = _reference(
        kind, variables["params"]["cell"], x, mask=np.asarray(mask), go_backwards=go_backwards
    )
    chex.assert_trees_all_close(layer.apply(variables, inputs, mask), expected, atol=1e-5)
    # The projection ran over the table's V rows, not over the B * T steps.
    assert (V, D) in _dot_operand_shapes(lambda v: layer.apply(v, inputs, mask), variables)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("vocab", [V, B * T + 1], ids=["table_projected", "steps_projected"])
def test_embedded_ids_gradients_equal_the_gathered_sequences(vocab, implementation, rng):
    inputs = _embedded(rng, vocab)
    layer = Bidirectional(RNN(LSTMCell(U), implementation=implementation))
    variables = _random_params(layer.init(jax.random.key(0), inputs), rng)
    weights = jnp.asarray(rng.normal(size=(2 * U,)), jnp.float32)

    def loss(variables, table, gather):
        embedded = EmbeddedIds(table, inputs.ids)
        return jnp.sum(layer.apply(variables, embedded.gather() if gather else embedded) * weights)

    grad = jax.grad(loss, argnums=(0, 1))
    chex.assert_trees_all_close(
        grad(variables, inputs.table, False), grad(variables, inputs.table, True), atol=1e-5
    )
    # A table with more rows than the batch has steps is gathered first, then projected.
    unfolded = functools.partial(loss, gather=False)
    projected_rows = {shape[0] for shape in _dot_operand_shapes(unfolded, variables, inputs.table)}
    assert (vocab in projected_rows) == (vocab <= B * T)


def test_embedded_ids_with_input_dropout_gather_first(rng):
    inputs = _embedded(rng)
    layer = RNN(LSTMCell(U, dropout=0.5))
    variables = layer.init(jax.random.key(0), inputs)
    rngs = {"dropout": jax.random.key(3)}
    chex.assert_trees_all_close(
        layer.apply(variables, inputs, training=True, rngs=rngs),
        layer.apply(variables, inputs.gather(), training=True, rngs=rngs),
        atol=1e-6,
    )
