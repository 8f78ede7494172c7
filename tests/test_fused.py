"""The fused CPU kernels (``rnnjax.fused``) against the numpy Keras equations and the scan path:
values, gradients, dropout, vmap, when 'auto' picks them, and the fallback without a compiler."""

import itertools
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_keras as ref
import pytest

from rnnjax import RNN, GRUCell, LSTMCell, SimpleRNNCell, fused

B, T, D, U = 4, 9, 5, 3
CELLS = {"lstm": lambda **kw: LSTMCell(U, **kw), "gru": lambda **kw: GRUCell(U, **kw)}

pytestmark = pytest.mark.skipif(
    not fused.available(), reason=f"fused kernels unavailable: {fused.unavailable_reason()}"
)


def _random_params(variables, rng, scale=0.7):
    return jax.tree.map(
        lambda p: jnp.asarray(rng.normal(scale=scale, size=p.shape), jnp.float32), variables
    )


def _layer_and_params(kind, rng, implementation, **layer_kw):
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    layer = RNN(CELLS[kind](), implementation=implementation, **layer_kw)
    variables = _random_params(layer.init(jax.random.key(0), x), rng)
    return layer, variables, x


def _custom_calls(fn, *args) -> set[str]:
    text = jax.jit(fn).lower(*args).as_text()
    return {name for name in fused.TARGETS if name in text}


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_fused_matches_numpy_keras(kind, use_bias, go_backwards, rng):
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    layer = RNN(
        CELLS[kind](use_bias=use_bias),
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        implementation="fused",
    )
    variables = _random_params(layer.init(jax.random.key(0), x), rng)
    initial = [jnp.asarray(rng.normal(size=(B, U)), jnp.float32) for _ in range(2)]
    initial = initial if kind == "lstm" else initial[:1]
    outputs, *states = layer.apply(variables, x, initial_state=initial)

    p = {k: np.asarray(v, np.float64) for k, v in variables["params"]["cell"].items()}
    bias = p.get("bias", np.zeros((2, 3 * U) if kind == "gru" else 4 * U))
    run = ref.lstm if kind == "lstm" else ref.gru
    expected_outputs, *expected_states = run(
        np.asarray(x),
        p["kernel"],
        p["recurrent_kernel"],
        bias,
        initial_state=[np.asarray(s, np.float64) for s in initial],
        go_backwards=go_backwards,
    )
    np.testing.assert_allclose(outputs, expected_outputs, atol=1e-5)
    chex.assert_trees_all_close(tuple(states), tuple(expected_states), atol=1e-5)
    chex.assert_shape(outputs, (B, T, U))
    chex.assert_type(outputs, jnp.float32)


@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_fused_gradients_equal_the_scan_autodiff(kind, return_sequences, rng):
    """The kernels' hand-written backward pass against JAX's autodiff of the scanned cell, for
    the parameters, the inputs and the initial states, with every output and state in the loss."""
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    initial = [jnp.asarray(rng.normal(size=(B, U)), jnp.float32) for _ in range(2)]
    initial = initial if kind == "lstm" else initial[:1]
    weights = jnp.asarray(rng.normal(size=(B, T, U) if return_sequences else (B, U)), jnp.float32)

    def loss(implementation):
        layer = RNN(
            CELLS[kind](),
            return_sequences=return_sequences,
            return_state=True,
            implementation=implementation,
        )

        def value(params, x, initial):
            output, *states = layer.apply({"params": params}, x, initial_state=initial)
            return jnp.sum(output * weights) + sum(jnp.sum(s**2) for s in states)

        return layer, value

    layer, fused_loss = loss("fused")
    params = _random_params(layer.init(jax.random.key(0), x), rng)["params"]
    _, scan_loss = loss("scan")
    grad = jax.grad(fused_loss, argnums=(0, 1, 2))(params, x, initial)
    expected = jax.grad(scan_loss, argnums=(0, 1, 2))(params, x, initial)
    chex.assert_trees_all_close(grad, expected, atol=1e-5, rtol=1e-5)
    assert _custom_calls(jax.grad(fused_loss), params, x, initial) == {
        f"rnnjax_{kind}_forward",
        f"rnnjax_{kind}_backward",
    }


@pytest.mark.parametrize("kind", list(CELLS))
def test_input_dropout_equals_the_scan_path(kind, rng):
    """Input dropout acts on the projection, outside the kernel: same masks, same values."""
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    outputs = {}
    for implementation in ("fused", "scan"):
        layer = RNN(CELLS[kind](dropout=0.4), return_sequences=True, implementation=implementation)
        variables = _random_params(layer.init(jax.random.key(0), x), np.random.default_rng(1))
        outputs[implementation] = layer.apply(
            variables, x, training=True, rngs={"dropout": jax.random.key(7)}
        )
    np.testing.assert_allclose(outputs["fused"], outputs["scan"], atol=1e-5)


@pytest.mark.parametrize("kind", list(CELLS))
def test_vmap_over_parameter_sets(kind, rng):
    """K models at once (``--num-seeds``): one kernel call runs every model's rows with that
    model's weights; values and gradients equal each model run alone on the scan path, also for
    two nested vmaps (a [2, 3] grid of models)."""
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(B, T, U)), jnp.float32)
    fused_layer = RNN(CELLS[kind](), return_sequences=True, implementation="fused")
    scan_layer = RNN(CELLS[kind](), return_sequences=True, implementation="scan")
    keys = jax.random.split(jax.random.key(0), 6).reshape(2, 3)
    grid = jax.vmap(jax.vmap(lambda key: fused_layer.init(key, x)))(keys)

    def loss(layer):
        return lambda variables: jnp.sum(layer.apply(variables, x) * weights)

    value_and_grad = jax.jit(jax.vmap(jax.vmap(jax.value_and_grad(loss(fused_layer)))))
    values, grads = value_and_grad(grid)
    assert _custom_calls(jax.vmap(jax.vmap(jax.grad(loss(fused_layer)))), grid) == {
        f"rnnjax_{kind}_forward",
        f"rnnjax_{kind}_backward",
    }
    for i, j in itertools.product(range(2), range(3)):
        one = jax.tree.map(lambda a, i=i, j=j: a[i, j], grid)
        value, grad = jax.value_and_grad(loss(scan_layer))(one)
        np.testing.assert_allclose(values[i, j], value, rtol=1e-5, atol=1e-5)
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i, j=j: a[i, j], grads), grad, atol=1e-5, rtol=1e-5
        )


def test_auto_picks_the_kernels_only_where_they_apply(rng):
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    mask = jnp.asarray(np.arange(T)[None] < np.array([[T], [5], [2], [1]]))

    def calls(cell, training=False, use_mask=False, implementation="auto"):
        layer = RNN(cell, implementation=implementation)
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
    assert calls(GRUCell(U)) == {"rnnjax_gru_forward"}
    assert calls(LSTMCell(U, dropout=0.5), training=True) == {"rnnjax_lstm_forward"}
    assert calls(LSTMCell(U), implementation="scan") == set()
    assert calls(LSTMCell(U), use_mask=True) == set()
    assert calls(LSTMCell(U, recurrent_dropout=0.5), training=True) == set()
    assert calls(LSTMCell(U, recurrent_dropout=0.5), training=False) == {"rnnjax_lstm_forward"}
    assert calls(GRUCell(U, reset_after=False)) == set()
    assert calls(LSTMCell(U, activation="relu")) == set()
    assert calls(SimpleRNNCell(U)) == set()
    # Other dtypes go to the scan (which then needs params of that dtype too).
    assert "float32 only" in fused.unsupported(LSTMCell(U), x.astype(jnp.bfloat16), None, False)


@pytest.mark.parametrize(
    "cell, use_mask, match",
    [
        (lambda: LSTMCell(U), True, "padding mask"),
        (lambda: SimpleRNNCell(U), False, "no fused kernel for SimpleRNNCell"),
        (lambda: GRUCell(U, reset_after=False), False, "reset_after=True only"),
    ],
)
def test_fused_where_it_cannot_run_is_one_clear_error(cell, use_mask, match, rng):
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    mask = jnp.ones((B, T), bool) if use_mask else None
    with pytest.raises(ValueError, match=f"implementation='fused' cannot run.*{match}.*'auto'"):
        RNN(cell(), implementation="fused").init(jax.random.key(0), x, mask)


def test_unknown_implementation_is_rejected(rng):
    x = jnp.zeros((B, T, D), jnp.float32)
    with pytest.raises(ValueError, match="implementation must be one of"):
        RNN(LSTMCell(U), implementation="cudnn").init(jax.random.key(0), x)


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


SHARDED_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from rnnjax import RNN, GRUCell, LSTMCell, steps
from rnnjax.sharding import data_mesh

mesh = data_mesh(4)
batch = NamedSharding(mesh, PartitionSpec("data"))
x = jax.device_put(jax.random.normal(jax.random.key(3), (16, 6, 5)), batch)
for cell in (LSTMCell(3), GRUCell(3)):
    grads = {}
    for implementation in ("fused", "scan"):
        layer = RNN(cell, return_sequences=True, implementation=implementation)
        variables = layer.init(jax.random.key(0), x)

        def loss(variables, x):
            with steps.mesh_context(batch):
                return jnp.sum(layer.apply(variables, x) ** 2)

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
    every device) and the gradients, psummed over devices, equal the scan's."""
    env = os.environ | {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
