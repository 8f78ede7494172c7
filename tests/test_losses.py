"""Losses: the Keras 3 loss API against literal Keras 3.15.1 values.

The literals below are what ``keras_parity/make_loss_metric_reference.py`` printed for the cases
of ``loss_metric_cases.py``; the tests rebuild the same seeded inputs and run the same cases
through rnnjax.
"""

import chex
import jax
import jax.numpy as jnp
import loss_metric_cases as cases
import numpy as np
import pytest

from rnnjax import losses

# Keras 3.15.1 (JAX backend, CPU) on cases.LOSS_CASES, as printed by
# keras_parity/make_loss_metric_reference.py.
KERAS_LOSSES = {
    "bce_prob_labels_B": 3.4666364,
    "bce_prob_w": 4.009113,
    "bce_logits_w1": 0.43920466,
    "bce_smooth_prob": 3.34319,
    "bce_smooth_logits_w": 1.1961282,
    "bce_multilabel_w": 0.90584993,
    "bce_rank1_w": 3.0484476,
    "bce_steps_as_features": 1.0342306,
    "bce_steps_wt": 0.8872151,
    "cce_prob_unnormalised": 1.590717,
    "cce_logits_w": 1.8125635,
    "cce_smooth_prob_w1": 1.4699736,
    "cce_smooth_logits": 2.1739905,
    "cce_steps_logits_wt": 2.495793,
    "scce_prob": 1.590717,
    "scce_prob_labels_B1_w": 1.4869765,
    "scce_logits_w1": 1.8125635,
    "scce_out_of_range": 1.9028023,
    "scce_steps_logits": 2.8186584,
    "scce_steps_prob_wt": 1.462364,
    "scce_steps_logits_w1": 2.5341637,
    "scce_ignore": 1.7091116,
    "scce_ignore_logits_w": 1.9912767,
    "scce_ignore_steps": 2.9639733,
    "scce_ignore_steps_wt": 1.3416207,
    "scce_ignore_steps_sum_wt": 52.323196,
    "scce_ignore_steps_mwsw_wt": 1.5068346,
    "scce_ignore_steps_none": [
        [0.724063, 0.10738358, 1.4423606, 5.5991063, 6.0541162],
        [2.9623742, 3.453073, 0.0, 0.0, 0.0],
        [0.42173594, 2.0015872, 0.0, 0.0, 0.0],
        [0.0, 2.2774458, 0.0, 0.0034307926, 0.0],
        [0.84456354, 5.704282, 8.477145, 0.0, 4.7917],
        [0.46102396, 0.0, 6.6981783, 2.2452476, 5.796166],
        [5.805055, 8.49754, 3.684527, 0.09004204, 1.4301058],
        [2.973644, 0.0, 1.2930393, 1.3056021, 0.02262237],
        [0.0, 0.5269495, 0.0, 0.0, 2.1849241],
        [4.5444684, 7.2234826, 2.816089, 0.0, 1.6206663],
        [0.5688752, 0.0, 0.0, 0.0, 3.0718832],
        [1.45894, 0.0, 4.6026917, 0.0, 1.8088212],
    ],
    "mse_w": 4.562296,
    "mse_labels_B": 5.3291645,
    "mae_w1": 1.6811806,
    "mape": 1.8922354e08,
    "msle_w": 0.22954677,
    "huber": 1.4609145,
    "huber_delta_w": 0.7346823,
    "log_cosh": 1.33541,
    "kld_w": 0.9452402,
    "poisson": 1.0966822,
    "hinge_01": 1.1914073,
    "hinge_pm1_w": 1.0675143,
    "squared_hinge": 2.7917747,
    "categorical_hinge": 2.4794824,
    "cosine_w": -0.080011934,
    "mse_steps": 1.6476738,
    "mse_steps_wt": 1.5809768,
    "mse_steps_w1": 1.3942162,
    "mse_steps_mean_w1": 1.3942162,
    "mse_steps_sum_wt": 94.85861,
    "mse_steps_mwsw_wt": 1.6979005,
    "mse_steps_mwsw_w1": 7.9273806,
    "mse_steps_mwsw": 1.6476738,
    "mse_steps_none_wt": [
        [0.0, 0.0, 0.33349958, 0.70155376, 0.33276755],
        [3.1664462, 0.08755001, 0.25643802, 0.7810119, 4.355087],
        [2.2398884, 0.14057024, 1.4456536, 0.24799927, 4.779846],
        [1.3832015, 0.4636567, 0.12421279, 1.6330769, 0.4746385],
        [3.3377159, 0.9158231, 0.11065324, 0.016440896, 0.020014783],
        [0.77696806, 0.9236771, 2.4386437, 3.7871678, 1.2687283],
        [0.7216004, 1.776376, 1.8088511, 0.80189544, 1.0736847],
        [13.571666, 0.50890476, 1.0341768, 0.65723985, 2.187804],
        [1.4478333, 3.1949255, 0.5969172, 3.1401954, 0.573868],
        [0.66754633, 2.9525673, 0.69288945, 8.260459, 0.5237828],
        [0.95007575, 0.98130393, 0.31821457, 0.24155536, 5.5466757],
        [0.94316185, 0.6854398, 0.70470554, 0.01926515, 1.7321182],
    ],
    "get_crossentropy_binary": 3.4666364,
    "get_ce_sparse": 1.590717,
    "get_crossentropy_categorical": 1.590717,
    "get_binary_crossentropy": 3.4666364,
    "get_BCE": 3.4666364,
    "get_BinaryCrossentropy": 3.4666364,
    "get_mse": 5.1216197,
    "get_huber": 1.4609145,
    "get_kld": 1.1691118,
    "get_function": 4.5622954,
}
KERAS_LOSS_NAMES = {
    "get_crossentropy_binary": "crossentropy",
    "get_ce_sparse": "ce",
    "get_crossentropy_categorical": "Crossentropy",
    "get_binary_crossentropy": "binary_crossentropy",
    "get_BCE": "BCE",
    "get_BinaryCrossentropy": "binary_crossentropy",
    "get_mse": "mse",
    "get_huber": "huber",
    "get_kld": "kld",
    "get_function": "squared_error",
}

RTOL = 1e-6
INPUTS = cases.make_inputs()
CASE_IDS = [case["id"] for case in cases.LOSS_CASES]


def _loss(case) -> losses.Loss:
    if case["kind"] == "loss":
        return getattr(losses, case["name"])(**case["kwargs"])
    return losses.get(case["name"])


def _arrays(case):
    weight = case["sample_weight"]
    return (
        INPUTS[case["y_true"]],
        INPUTS[case["y_pred"]],
        None if weight is None else INPUTS[weight],
    )


def _case(case_id: str) -> dict:
    return next(case for case in cases.LOSS_CASES if case["id"] == case_id)


@pytest.mark.parametrize("case", cases.LOSS_CASES, ids=CASE_IDS)
def test_loss_equals_keras(case):
    loss = _loss(case)
    value = loss(*_arrays(case))
    expected = np.asarray(KERAS_LOSSES[case["id"]], np.float32)
    chex.assert_shape(value, expected.shape)
    chex.assert_type(value, jnp.float32)
    np.testing.assert_allclose(value, expected, rtol=RTOL)
    if case["kind"] == "loss_get":
        assert loss.name == KERAS_LOSS_NAMES[case["id"]]


# Every reduction, weight shape and mask, once (each new shape costs compilation time).
PADDED_CASES = [
    "bce_logits_w1",
    "bce_steps_wt",
    "cce_steps_logits_wt",
    "scce_prob_labels_B1_w",
    "scce_steps_logits",
    "scce_ignore",
    "scce_ignore_steps_wt",
    "scce_ignore_steps_sum_wt",
    "scce_ignore_steps_mwsw_wt",
    "scce_ignore_steps_none",
    "hinge_pm1_w",
    "mse_steps_w1",
    "mse_steps_sum_wt",
    "mse_steps_mwsw_w1",
    "mse_steps_mwsw",
    "mse_steps_none_wt",
    "get_crossentropy_binary",
]


@pytest.mark.parametrize("case_id", PADDED_CASES)
def test_padding_rows_count_nowhere(case_id):
    """``valid`` all ones changes nothing; padding rows (mismatched targets, weight 5,
    ``valid`` 0) leave every reduction at Keras' value."""
    case = _case(case_id)
    loss = _loss(case)
    y_true, y_pred, weight = _arrays(case)
    value = loss(y_true, y_pred, weight)
    np.testing.assert_array_equal(loss(y_true, y_pred, weight, valid=np.ones(cases.N)), value)
    padded = loss(
        cases.pad_rows(y_true),
        cases.pad_rows(y_pred, like="last"),
        None if weight is None else cases.pad_rows(weight, fill=5.0),
        valid=np.r_[np.ones(cases.N), np.zeros(cases.PAD)],
    )
    if padded.ndim:  # reduction=None: the padding rows' losses are zeroed
        np.testing.assert_array_equal(padded[cases.N :], 0.0)
        padded = padded[: cases.N]
    np.testing.assert_allclose(padded, KERAS_LOSSES[case_id], rtol=RTOL)


def test_padding_cannot_leave_a_scalar_loss():
    # binary_crossentropy of a rank-1 y_pred averages over the batch before any weighting.
    y_true, y_pred, _ = _arrays(_case("bce_rank1_w"))
    with pytest.raises(ValueError, match="keep the batch axis"):
        losses.BinaryCrossentropy()(y_true, y_pred, valid=np.ones(cases.N))


def test_elementwise_functions_reduce_the_last_axis_only():
    x = INPUTS
    n, t = cases.N, cases.T
    shapes = [
        (losses.binary_crossentropy(x["tsb_y1"], x["tsb_p1"]), (n, t)),
        (losses.categorical_crossentropy(x["ts_onehot"], x["ts_z"], True), (n, t)),
        (losses.sparse_categorical_crossentropy(x["ts_y"], x["ts_z"], True), (n, t)),
        (losses.sparse_categorical_crossentropy(x["mc_y1"], x["mc_p"]), (n,)),
        (losses.mean_squared_error(x["reg3_y"], x["reg3_p"]), (n, t)),
        (losses.huber(x["reg_y1"], x["reg_p1"]), (n,)),
        (losses.cosine_similarity(x["reg_y"], x["reg_p"]), (n,)),
    ]
    for values, shape in shapes:
        chex.assert_shape(values, shape)
        chex.assert_type(values, jnp.float32)


def test_row_weights_on_per_step_losses_need_a_trailing_axis():
    # As in Keras: [N] weights broadcast against the last axis of an [N, T] loss (N != T).
    with pytest.raises(ValueError, match="Incompatible shapes"):
        losses.MeanSquaredError()(INPUTS["reg3_y"], INPUTS["reg3_p"], INPUTS["w"])


def test_crossentropy_refuses_mismatched_shapes():
    # jnp would broadcast [N] against [N, 1] to [N, N]; Keras raises.
    with pytest.raises(ValueError, match="same shape"):
        losses.binary_crossentropy(INPUTS["bin_y"], INPUTS["bin_p1"])


def test_probability_forms_saturate_and_logit_forms_do_not():
    one = jnp.ones([1, 1])
    assert float(losses.binary_crossentropy(one, jnp.zeros([1, 1]))[0]) == pytest.approx(
        16.118095, rel=1e-6
    )
    assert float(
        losses.binary_crossentropy(one, jnp.full([1, 1], -30.0), from_logits=True)[0]
    ) == pytest.approx(30.0, rel=1e-6)


def test_ignore_class_gradients_are_finite_and_padding_gets_none():
    """Ignored elements and padding rows get zero gradient (Keras' zero rows would give NaN in
    the probability form)."""
    y_true, y_pred = INPUTS["ts_y_ign"], jnp.asarray(INPUTS["ts_p"])
    loss = losses.SparseCategoricalCrossentropy(ignore_class=-1)
    valid = np.r_[np.ones(cases.N - 2), np.zeros(2)]
    grads = jax.jit(jax.grad(lambda p: loss(y_true, p, valid=valid)))(y_pred)
    assert bool(jnp.all(jnp.isfinite(grads)))
    np.testing.assert_array_equal(grads[y_true == -1], 0.0)
    np.testing.assert_array_equal(grads[-2:], 0.0)


JIT_CASES = [
    "bce_logits_w1",
    "cce_steps_logits_wt",
    "scce_ignore_steps_wt",
    "mse_steps_mwsw_w1",
    "huber_delta_w",
    "get_crossentropy_binary",
]


@pytest.mark.parametrize("case_id", JIT_CASES)
def test_loss_under_jit_and_vmap(case_id):
    """A loss is a static argument of jit; vmap over a leading axis of K predictions gives each
    one's loss."""
    case = _case(case_id)
    loss = _loss(case)
    y_true, y_pred, weight = _arrays(case)
    valid = np.ones(cases.N)

    @jax.jit
    def apply(y_pred):
        return loss(y_true, y_pred, weight, valid)

    jitted = jax.jit(lambda loss, *args: loss(*args), static_argnums=0)
    np.testing.assert_allclose(
        jitted(loss, y_true, y_pred, weight, valid), KERAS_LOSSES[case_id], rtol=RTOL
    )
    stacked = np.stack([y_pred, y_pred[::-1]])
    np.testing.assert_allclose(
        jax.vmap(apply)(stacked), [apply(y_pred), apply(y_pred[::-1])], rtol=RTOL
    )


def test_losses_are_hashable_values():
    first = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    second = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    assert first == second and hash(first) == hash(second)
    assert len({first, second, losses.SparseCategoricalCrossentropy()}) == 2
    for cls in losses.LOSS_CLASSES:
        hash(cls())
    assert hash(losses.get(cases.squared_error)) == hash(
        losses.LossFunctionWrapper(cases.squared_error)
    )


def test_get_resolves_keras_identifiers():
    mse = losses.get("mse")
    assert isinstance(mse, losses.MeanSquaredError) and mse.name == "mse"
    assert losses.get("Huber") == losses.Huber() and losses.Huber().name == "huber_loss"
    assert losses.get("huber").name == "huber"
    assert losses.get("bce") == losses.BinaryCrossentropy(name="bce")  # from_logits=False
    assert losses.get(losses.Poisson) == losses.Poisson()
    custom = losses.CategoricalCrossentropy(from_logits=True)
    assert losses.get(custom) is custom
    assert losses.get(lambda y_true, y_pred: y_pred).name == "lambda"
    assert isinstance(losses.get("CE"), losses.AutoCrossentropy)


@pytest.mark.parametrize("identifier", ["logcosh", "rmse", "focal", 3])
def test_get_rejects_unknown_identifiers_listing_names(identifier):
    with pytest.raises(ValueError, match="one of BCE, .*, huber, .*, mse, "):
        losses.get(identifier)


def test_reduction_is_validated():
    with pytest.raises(ValueError, match="reduction must be one of"):
        losses.MeanSquaredError(reduction="average")
