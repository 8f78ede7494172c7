"""Metrics: the additive-statistics protocol against literal Keras 3.15.1 values.

The literals below are what ``keras_parity/make_loss_metric_reference.py`` printed for the cases
of ``loss_metric_cases.py``: Keras' ``result()`` after one ``update_state`` per batch of the
case's ``splits``. The tests rebuild the same seeded inputs, sum rnnjax's per-batch statistics
and take ``result`` of the sum.
"""

import chex
import jax
import jax.numpy as jnp
import loss_metric_cases as cases
import numpy as np
import pytest

from rnnjax import losses, metrics

# Keras 3.15.1 (JAX backend, CPU) on cases.METRIC_CASES, as printed by
# keras_parity/make_loss_metric_reference.py.
KERAS_METRICS = {
    "binacc_labels_B": 0.33333334,
    "binacc_threshold_w": 0.31121466,
    "binacc_multilabel_w": 0.38789487,
    "binacc_steps_wt": 0.5062955,
    "catacc_ties": 0.41666666,
    "catacc_negative_zero": 0.25,
    "catacc_steps_wt": 0.22936867,
    "catacc_steps_w": 0.20134814,
    "spcatacc": 0.41666666,
    "spcatacc_labels_B1_w": 0.25553787,
    "spcatacc_steps": 0.2166667,
    "spcatacc_steps_wt": 0.13814554,
    "spcatacc_steps_w1": 0.14550474,
    "topk2_ties": 0.41666666,
    "topk_default": 1.0,
    "topk2_steps_wt": 0.39201903,
    "sptopk2_ties": 0.41666666,
    "sptopk2_labels_B1_w": 0.5388398,
    "sptopk1_steps": 0.16666667,
    "auc_roc": 0.48859122,
    "auc_roc_w": 0.5215616,
    "auc_roc_minoring": 0.48214284,
    "auc_roc_majoring": 0.49503967,
    "auc_pr": 0.6012122,
    "auc_pr_w": 0.59571326,
    "auc_pr_minoring": 0.5071922,
    "auc_pr_majoring": 0.6119002,
    "auc_n7": 0.48958334,
    "auc_even_thresholds": 0.48263893,
    "auc_uneven_thresholds_w": 0.48855844,
    "auc_logits": 0.610615,
    "auc_ranks_B1_B": 0.48859122,
    "auc_one_class": 0.0,
    "auc_roc_merged_w": 0.5215617,
    "auc_pr_merged": 0.6012122,
    "precision": 0.516129,
    "precision_03_w": 0.55412394,
    "precision_list": [0.6666667, 0.5625, 0.516129],
    "precision_even_merged": [0.5375962, 0.53554595, 0.0],
    "recall": 0.44444445,
    "recall_03_w": 0.6215865,
    "recall_list_merged": [0.75, 0.44444445, 0.2777778],
    "recall_even": [0.9722222, 0.44444445, 0.0],
    "mse_w": 5.1881557,
    "mae_w1": 1.9118066,
    "mape": 1.8922354e08,
    "msle": 0.28865674,
    "rmse_w": 2.2777524,
    "rmse_element_weights": 2.3061635,
    "rmse_merged": 2.2630997,
    "cosine_w": 0.09098805,
    "logcosh": 1.33541,
    "kld": 1.1691118,
    "poisson_w": 1.0514697,
    "hinge": 1.1914073,
    "squared_hinge_w": 2.933221,
    "categorical_hinge": 2.4794824,
    "bce": 3.4666364,
    "bce_logits_smooth_w": 0.9298349,
    "bce_steps_wt": 0.9528303,
    "cce_steps_wt": 1.5705153,
    "cce_logits_smooth": 2.1739905,
    "scce_logits_w": 2.0612128,
    "scce_ignore": 1.0455579,
    "scce_ignore_wt": 2.7667463,
    "scce_ignore_w1": 3.1255717,
    "get_accuracy_binary": 0.33333334,
    "get_acc_sparse": 0.41666666,
    "get_Accuracy_sparse_B1": 0.25,
    "get_accuracy_categorical": 0.41666666,
    "get_accuracy_steps_sparse": 0.2166667,
    "get_accuracy_steps_categorical": 0.33333334,
    "get_auc": 0.48859122,
    "get_AUC": 0.48859122,
    "get_mse": 5.1216197,
    "get_root_mean_squared_error": 2.2630997,
    "get_log_cosh_error": 1.33541,
    "get_bce": 3.4666364,
    "get_binary_accuracy": 0.33333334,
    "get_function": 5.188156,
}
KERAS_METRIC_NAMES = {
    "get_accuracy_binary": "accuracy",
    "get_acc_sparse": "acc",
    "get_Accuracy_sparse_B1": "Accuracy",
    "get_accuracy_categorical": "accuracy",
    "get_accuracy_steps_sparse": "accuracy",
    "get_accuracy_steps_categorical": "accuracy",
    "get_auc": "auc",
    "get_AUC": "AUC",
    "get_mse": "mse",
    "get_root_mean_squared_error": "root_mean_squared_error",
    "get_log_cosh_error": "log_cosh_error",
    "get_bce": "bce",
    "get_binary_accuracy": "binary_accuracy",
    "get_function": "squared_error",
}

RTOL = 1e-6
INPUTS = cases.make_inputs()


def _metric(case) -> metrics.Metric:
    if case["kind"] == "metric":
        return getattr(metrics, case["name"])(**case["kwargs"])
    return metrics.get(case["name"])


def _batches(case, pad: bool = False):
    """The case's batches ``(y_true, y_pred, sample_weight)``; with ``pad``, the last one gets
    padding rows of weight 0 (mismatched targets and predictions), as a loop pads it."""
    y_true, y_pred = INPUTS[case["y_true"]], INPUTS[case["y_pred"]]
    weight = None if case["sample_weight"] is None else INPUTS[case["sample_weight"]]
    bounds = case.get("splits") or (0, len(y_true))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        rows = slice(start, stop)
        batch = y_true[rows], y_pred[rows], None if weight is None else weight[rows]
        if pad and stop == bounds[-1]:
            real = np.ones(stop - start, np.float32) if batch[2] is None else batch[2]
            batch = (
                cases.pad_rows(batch[0]),
                cases.pad_rows(batch[1], like="last"),
                cases.pad_rows(real, fill=0.0),
            )
        yield batch


def _summed_stats(metric, case, pad: bool = False):
    stats = [metric.stats(*batch) for batch in _batches(case, pad)]
    total = metrics.zeros(metric, *next(_batches(case)))
    for batch_stats in stats:
        total = metrics.merge(total, batch_stats)
    return total


def _case(case_id: str) -> dict:
    return next(case for case in cases.METRIC_CASES if case["id"] == case_id)


@pytest.mark.parametrize(
    "case", cases.METRIC_CASES, ids=[case["id"] for case in cases.METRIC_CASES]
)
def test_metric_equals_keras(case):
    metric = _metric(case)
    value = metric.result(_summed_stats(metric, case))
    expected = np.asarray(KERAS_METRICS[case["id"]], np.float32)
    chex.assert_shape(value, expected.shape)
    chex.assert_type(value, jnp.float32)
    np.testing.assert_allclose(value, expected, rtol=RTOL)
    if case["kind"] == "metric_get":
        assert metric.name == KERAS_METRIC_NAMES[case["id"]]


# One case per family and weight shape (each new shape costs compilation time).
PADDED_CASES = [
    "binacc_multilabel_w",
    "catacc_steps_w",
    "spcatacc_steps_wt",
    "sptopk2_labels_B1_w",
    "auc_roc_merged_w",
    "auc_pr",
    "auc_uneven_thresholds_w",
    "precision_even_merged",
    "recall_list_merged",
    "rmse_element_weights",
    "cce_steps_wt",
    "scce_ignore_wt",
    "get_accuracy_steps_sparse",
    "get_function",
]


@pytest.mark.parametrize("case_id", PADDED_CASES)
def test_padding_rows_count_nowhere(case_id):
    """Padding rows of weight 0 (mismatched targets and predictions) in the last batch leave the
    metric at Keras' value; unweighted cases get weights 1 for their real rows."""
    case = _case(case_id)
    metric = _metric(case)
    padded = metric.result(_summed_stats(metric, case, pad=True))
    np.testing.assert_allclose(padded, KERAS_METRICS[case_id], rtol=RTOL)


def test_unweighted_ignore_class_counts_ignored_elements_as_keras_does():
    """Keras' unweighted SparseCategoricalCrossentropy metric averages ignored elements in as
    zeros; any sample weight (the loop's padding weights too) drops them from the count."""
    metric = metrics.SparseCategoricalCrossentropy(ignore_class=-1)
    y_true, y_pred = INPUTS["ts_y_ign"], INPUTS["ts_p"]
    unweighted = metric.result(metric.stats(y_true, y_pred))
    weighted = metric.result(metric.stats(y_true, y_pred, np.ones((cases.N, 1))))
    kept = float(np.mean(y_true != -1))
    np.testing.assert_allclose(weighted * kept, unweighted, rtol=RTOL)


def test_merged_batches_equal_one_batch():
    """Statistics are additive: summing per-batch statistics is computing them on all rows."""
    for case_id, metric in [
        ("auc_pr_w", metrics.AUC(curve="PR")),
        ("precision_list", metrics.Precision([0.2, 0.5])),
        ("spcatacc_steps_wt", metrics.SparseCategoricalAccuracy()),
        ("rmse_element_weights", metrics.RootMeanSquaredError()),
    ]:
        case = _case(case_id)
        whole = metric.stats(*next(_batches({**case, "splits": None})))
        splits = cases.SPLITS_A if case["y_true"].startswith("auc") else cases.SPLITS_N
        merged = _summed_stats(metric, {**case, "splits": splits})
        chex.assert_trees_all_equal_shapes_and_dtypes(merged, whole)
        # tn and fn are differences of sums: with fractional weights, zero comes out as ~1e-6.
        chex.assert_trees_all_close(merged, whole, rtol=RTOL, atol=1e-5)


@pytest.mark.parametrize(
    "metric, y_true, y_pred",
    [
        (metrics.AUC(), "auc_y", "auc_p1"),
        (metrics.Recall([0.1, 0.6]), "auc_y", "auc_p1"),
        (metrics.get("accuracy"), "ts_y", "ts_z"),
        (metrics.BinaryCrossentropy(from_logits=True), "bin_y1", "bin_z1"),
    ],
)
def test_stats_under_jit_and_vmap(metric, y_true, y_pred):
    """A metric is a static argument of jit; vmap over K predictions gives each one's
    statistics; ``zeros`` has the statistics' structure and its result is 0."""
    y_true, y_pred = INPUTS[y_true], INPUTS[y_pred]
    stats = jax.jit(lambda m, *args: m.stats(*args), static_argnums=0)(metric, y_true, y_pred)
    chex.assert_trees_all_close(stats, metric.stats(y_true, y_pred), rtol=RTOL)
    stacked = np.stack([y_pred, y_pred[::-1]])
    per_model = jax.vmap(lambda p: metric.stats(y_true, p))(stacked)
    reversed_stats = jax.tree.map(lambda leaf: leaf[1], per_model)
    chex.assert_trees_all_close(reversed_stats, metric.stats(y_true, y_pred[::-1]), rtol=RTOL)
    empty = metrics.zeros(metric, y_true, y_pred)
    chex.assert_trees_all_equal_shapes_and_dtypes(empty, stats)
    np.testing.assert_array_equal(metric.result(empty), 0.0)


def test_metrics_are_hashable_values_with_directions():
    for cls in metrics.METRIC_CLASSES:
        metric = cls()
        assert hash(metric) == hash(cls()) and metric == cls()
        assert metric.direction in ("min", "max")
    assert metrics.AUC(curve="pr") == metrics.AUC(curve="PR")
    assert metrics.Precision(0.5) == metrics.Precision()
    assert metrics.AUC(thresholds=[0.5, 0.2]).num_thresholds == 4
    assert metrics.get("acc").direction == "max"
    assert metrics.get(losses.mean_squared_error).direction == "min"
    assert metrics.get(losses.Huber()).direction == "min"
    assert metrics.get(cases.squared_error).direction is None  # Keras cannot tell either


def test_get_resolves_keras_identifiers():
    assert metrics.get("mse") == metrics.MeanSquaredError(name="mse")
    assert metrics.get("AUC") == metrics.AUC(name="AUC")
    assert metrics.get("log_cosh_error").name == "log_cosh_error"
    assert metrics.LogCoshError().name == "logcosh"
    assert metrics.get("ACC") == metrics.AutoAccuracy(name="ACC")
    assert metrics.get(metrics.Recall) == metrics.Recall()
    auc = metrics.AUC(curve="PR")
    assert metrics.get(auc) is auc
    assert metrics.get(lambda y_true, y_pred: y_pred).name == "lambda"
    assert isinstance(metrics.get(metrics.Precision()), metrics.Metric)


@pytest.mark.parametrize("identifier", ["rmse", "huber", "kld", "f1_score", 7])
def test_get_rejects_unknown_identifiers_listing_names(identifier):
    with pytest.raises(ValueError, match="one of .*, auc, .*, mse, "):
        metrics.get(identifier)


def test_invalid_configurations_are_refused():
    with pytest.raises(ValueError, match="thresholds must lie in"):
        metrics.Precision(thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match="curve must be"):
        metrics.AUC(curve="PRGAIN")
    with pytest.raises(ValueError, match="summation_method"):
        metrics.AUC(summation_method="trapezoid")
    with pytest.raises(ValueError, match="num_thresholds"):
        metrics.AUC(num_thresholds=1)


def test_binary_crossentropy_metric_wants_equal_shapes_like_keras():
    with pytest.raises(ValueError, match="same shape"):
        metrics.BinaryCrossentropy().stats(INPUTS["bin_y"], INPUTS["bin_p1"])
