"""Epoch batches: Keras' step count and partial last batch, seeded per-epoch order, and the host
iterator and device-resident form giving the same batches."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnjax.batches import (
    ArrayData,
    batch_indices,
    epoch_permutation,
    iterate_batches,
    num_examples,
    seed_key,
    steps_per_epoch,
    to_device,
)

jit_batch_indices = jax.jit(batch_indices, static_argnames=("n", "batch_size", "shuffle"))


def dataset(n, t=3):
    x = np.arange(n * t, dtype=np.int32).reshape(n, t)
    return x, x[:, 0] // t  # y is the row number, so pairs can be checked


def test_keras_step_counts():
    assert steps_per_epoch(20_000, 128) == 157  # last batch: 20000 - 156 * 128 = 32
    assert steps_per_epoch(25_000, 32) == 782
    assert steps_per_epoch(64, 32) == 2 and steps_per_epoch(1, 32) == 1
    sizes = [len(yb) for _, yb in iterate_batches(*dataset(20_000, 1), 128)]
    assert len(sizes) == 157 and set(sizes[:-1]) == {128} and sizes[-1] == 32


def test_epoch_permutation_is_the_documented_definition():
    key = jax.random.fold_in(jax.random.key(7, impl="threefry2x32"), 3)
    expected = np.asarray(jax.random.permutation(key, 50))
    order = epoch_permutation(7, 3, 50)
    chex.assert_type(order, np.int32)
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(np.sort(order), np.arange(50))


def test_order_depends_on_seed_and_epoch_only():
    same = epoch_permutation(1, 2, 100)
    np.testing.assert_array_equal(same, epoch_permutation(1, 2, 100))
    orders = {tuple(epoch_permutation(seed, epoch, 100)) for seed in (1, 2) for epoch in range(4)}
    assert len(orders) == 8


def assert_same_batches(n, batch_size, seed, epoch, shuffle):
    x, y = dataset(n)
    host = list(iterate_batches(x, y, batch_size, seed=seed, epoch=epoch, shuffle=shuffle))
    indices, weights = jit_batch_indices(seed, epoch, n=n, batch_size=batch_size, shuffle=shuffle)
    steps = steps_per_epoch(n, batch_size)
    batch_size = min(batch_size, n)  # a batch larger than the data is all of it
    chex.assert_shape([indices, weights], (steps, batch_size))
    chex.assert_type([indices, weights], [jnp.int32, jnp.float32])
    indices, weights = np.asarray(indices), np.asarray(weights)
    assert len(host) == steps
    assert [len(yb) for _, yb in host] == [batch_size] * (steps - 1) + [
        n - (steps - 1) * batch_size
    ]
    order = epoch_permutation(seed, epoch, n) if shuffle else np.arange(n)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in host]), order)
    for (xb, yb), rows, w in zip(host, indices, weights, strict=True):
        np.testing.assert_array_equal(x[rows[w > 0]], xb)
        np.testing.assert_array_equal(y[rows[w > 0]], yb)
    assert (
        weights.sum() == n and (weights.ravel()[n:] == 0).all() and (weights.ravel()[:n] == 1).all()
    )
    assert ((indices >= 0) & (indices < n)).all()  # padding slots point at valid rows


@pytest.mark.parametrize("n, batch_size", [(1, 1), (1, 32), (5, 2), (33, 33), (64, 32), (70, 16)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_host_and_device_give_the_same_batches(n, batch_size, shuffle):
    assert_same_batches(n, batch_size, seed=0, epoch=1, shuffle=shuffle)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), epoch=st.integers(0, 10_000))
def test_host_and_device_agree_for_any_seed_and_epoch(seed, epoch):
    assert_same_batches(70, 16, seed, epoch, shuffle=True)


def test_traced_seed_and_epoch_give_the_python_int_result():
    expected = batch_indices(11, 4, n=37, batch_size=8)
    traced = jax.jit(lambda s, e: batch_indices(s, e, n=37, batch_size=8))(
        jnp.int32(11), jnp.int32(4)
    )
    chex.assert_trees_all_equal(expected, traced)


def test_weighted_means_over_a_padded_epoch_equal_keras_means():
    rng = np.random.default_rng(0)
    losses = rng.random(1000).astype(np.float32)
    indices, weights = batch_indices(3, 0, n=1000, batch_size=128)
    per_step = [losses[i] for i in np.asarray(indices)]
    weighted = (
        sum((p * w).sum() for p, w in zip(per_step, np.asarray(weights), strict=True))
        / weights.sum()
    )
    keras = sum(
        b.mean() * len(b)
        for b in (losses[yb] for _, yb in iterate_batches(losses, np.arange(1000), 128, seed=3))
    )
    np.testing.assert_allclose(weighted, losses.mean(), rtol=1e-6)
    np.testing.assert_allclose(keras / 1000, losses.mean(), rtol=1e-6)


def test_an_epoch_is_gathered_on_device_from_a_pytree():
    x, y = dataset(45, t=4)
    data = to_device({"x": {"ids": x.astype(np.int64)}, "y": y.astype(np.int64)})
    chex.assert_type([data["x"]["ids"], data["y"]], [jnp.int32, jnp.int32])
    epoch = ArrayData(data, 16, seed_key(5), shuffle=True).epoch(2)
    assert epoch.num_steps == 3

    @jax.jit
    def total(batches):
        def step(carry, s):
            batch = batches.at(s)
            chex.assert_shape(
                [batch["x"]["ids"], batch["y"], batch["valid"]], [(16, 4), (16,), (16,)]
            )
            return carry + (batch["valid"] * batch["y"].astype(jnp.float32)).sum(), batch["y"]

        return jax.lax.scan(step, jnp.float32(0), jnp.arange(batches.num_steps))

    summed, seen = total(epoch)
    assert float(summed) == y.sum()
    host = [yb for _, yb in iterate_batches(x, y, 16, seed=5, epoch=2)]
    np.testing.assert_array_equal(np.asarray(seen)[-1][: len(host[-1])], host[-1])
    np.testing.assert_array_equal(np.asarray(seen)[0], host[0])


def test_num_examples_names_the_leaves_that_disagree():
    x, _ = dataset(4)
    assert num_examples({"x": x, "y": np.zeros(4)}) == 4
    with pytest.raises(ValueError, match=r"data\['y'\] has 3 examples but data\['x'\] has 4"):
        num_examples({"x": x, "y": np.zeros(3)})
    with pytest.raises(ValueError, match="is a scalar"):
        num_examples({"x": x, "y": np.float32(1)})


def test_empty_split_and_bad_batch_size_are_errors():
    with pytest.raises(ValueError, match="empty split"):
        list(iterate_batches(np.zeros((0, 3)), np.zeros(0)))
    with pytest.raises(ValueError, match="empty split"):
        batch_indices(0, 0, n=0, batch_size=4)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        batch_indices(0, 0, n=5, batch_size=0)
    with pytest.raises(ValueError, match=r"data\['y'\] has 2"):
        list(iterate_batches(np.zeros((3, 1)), np.zeros(2)))


def test_every_python_int_is_a_seed_and_small_ones_keep_their_keys():
    for seed in (0, 7, 2**31 - 1, 2**31, 2**32 - 1, -1, -(2**31)):
        chex.assert_trees_all_equal(
            jax.random.key_data(seed_key(seed)), jax.random.key_data(jax.random.key(seed))
        )
    big = [2**32, 2**32 + 7, 2**64, 2**70, -(2**31) - 1, -(2**40), 10**30]
    keys = {tuple(np.asarray(jax.random.key_data(seed_key(s))).tolist()) for s in (0, 7, *big)}
    assert len(keys) == 2 + len(big)  # no two seeds share a key (2**32 would wrap to 0)
    order = epoch_permutation(2**70, 0, 20)
    np.testing.assert_array_equal(np.sort(order), np.arange(20))


def test_a_batch_larger_than_the_data_is_all_of_it():
    indices, weights = batch_indices(0, 0, n=5, batch_size=10**9)
    chex.assert_shape([indices, weights], (1, 5))
    assert weights.sum() == 5
