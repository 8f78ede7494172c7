"""Seeded inputs and the loss/metric cases shared by Keras and rnnjax (numpy only).

``keras_parity/make_loss_metric_reference.py`` runs every case through Keras 3.15.1 and prints
the values that ``test_losses.py`` and ``test_metrics.py`` hold as literals; the tests rebuild
the same inputs here and run the same cases through rnnjax.

A case is a dict: ``id``; ``kind`` (``"loss"``/``"metric"``: the class named ``name`` with
``kwargs``; ``"loss_get"``/``"metric_get"``: what ``compile`` makes of the identifier ``name``,
a string or a function from this module); the input keys ``y_true``, ``y_pred`` and
``sample_weight`` (or None); for metrics, ``splits``: row boundaries of the batches passed to
successive ``update_state`` calls (default: one batch).

Shape letters: N rows, T time, C classes, D features, A rows of the threshold-metric set.
"""

import numpy as np

N, T, C, D, A = 12, 5, 4, 3, 64
SEED = 20261123


def squared_error(y_true, y_pred):
    """A user function of per-element values, for numpy, Keras and JAX arrays alike."""
    return (y_true - y_pred) ** 2


def _f32(x):
    return np.asarray(x, np.float32)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def make_inputs() -> dict[str, np.ndarray]:
    """Every array a case may name, float32 (or int32 labels), from one seeded generator."""
    rng = np.random.default_rng(SEED)
    x = {}
    # Binary: labels [N] and [N, 1]; probabilities with 0, 1, exactly 0.5 and a denormal-ish
    # value; logits with saturating extremes.
    x["bin_y"] = rng.integers(0, 2, N).astype(np.int32)
    x["bin_y1"] = _f32(x["bin_y"][:, None])
    x["bin_yf"] = _f32(x["bin_y"])
    bin_p1 = rng.uniform(0, 1, (N, 1))
    bin_p1[:4, 0] = [0.0, 1.0, 0.5, 1e-9]
    x["bin_p1"] = _f32(bin_p1)
    x["bin_p"] = x["bin_p1"][:, 0]
    bin_z1 = rng.normal(0, 3, (N, 1))
    bin_z1[4:6, 0] = [40.0, -40.0]
    x["bin_z1"] = _f32(bin_z1)
    x["ml_y"] = _f32(rng.integers(0, 2, (N, D)))
    x["ml_p"] = _f32(rng.uniform(0, 1, (N, D)))
    # Multiclass: labels [N], [N, 1], one-hot; unnormalised probabilities with a tied row;
    # logits with a -0.0/0.0 tie (Keras' CPU argmax prefers 0.0).
    x["mc_y"] = rng.integers(0, C, N).astype(np.int32)
    x["mc_y1"] = x["mc_y"][:, None]
    x["mc_onehot"] = _f32(np.eye(C)[x["mc_y"]])
    mc_p = rng.uniform(0.05, 1, (N, C))
    mc_p[0] = [0.3, 0.3, 0.2, 0.2]
    x["mc_p"] = _f32(mc_p)
    mc_z = rng.normal(0, 2, (N, C))
    mc_z[1] = [-0.0, 0.0, -1.0, -2.0]
    x["mc_z"] = _f32(mc_z)
    x["mc_soft"] = _f32(_softmax(mc_z))
    mc_target = mc_p / mc_p.sum(-1, keepdims=True)
    mc_target[2] = [0.0, 1.0, 0.0, 0.0]
    x["mc_target"] = _f32(mc_target)
    mc_y_oor = x["mc_y"].copy()
    mc_y_oor[[3, 7]] = [C, -1]
    x["mc_y_oor"] = mc_y_oor
    # Per timestep: labels [N, T] (with -1 to ignore), probabilities/logits [N, T, C].
    x["ts_y"] = rng.integers(0, C, (N, T)).astype(np.int32)
    ts_y_ign = x["ts_y"].copy()
    ts_y_ign[rng.uniform(size=(N, T)) < 0.25] = -1
    x["ts_y_ign"] = ts_y_ign
    x["ts_onehot"] = _f32(np.eye(C)[x["ts_y"]])
    x["ts_p"] = _f32(rng.uniform(0.05, 1, (N, T, C)))
    x["ts_z"] = _f32(rng.normal(0, 2, (N, T, C)))
    x["tsb_y"] = _f32(rng.integers(0, 2, (N, T)))
    x["tsb_p"] = _f32(rng.uniform(0, 1, (N, T)))
    x["tsb_y1"] = x["tsb_y"][..., None]
    x["tsb_p1"] = x["tsb_p"][..., None]
    # Regression: [N, D], [N] against [N, 1], [N, T, D]; positive values (with zero targets
    # for MAPE's epsilon); hinge targets 0/1 and -1/1; a zero vector for cosine similarity.
    x["reg_y"] = _f32(rng.normal(0, 1, (N, D)))
    x["reg_p"] = _f32(rng.normal(0, 1.5, (N, D)))
    x["reg_y1"] = x["reg_y"][:, 0]
    x["reg_p1"] = x["reg_p"][:, :1]
    x["reg3_y"] = _f32(rng.normal(0, 1, (N, T, D)))
    x["reg3_p"] = _f32(rng.normal(0, 1, (N, T, D)))
    pos_y = rng.uniform(0, 3, (N, D))
    pos_y[[1, 5], [0, 2]] = 0.0
    x["pos_y"] = _f32(pos_y)
    x["pos_p"] = _f32(rng.uniform(0.1, 3, (N, D)))
    x["hinge_y01"] = _f32(rng.integers(0, 2, (N, D)))
    x["hinge_ypm"] = 2 * x["hinge_y01"] - 1
    x["hinge_p"] = _f32(rng.normal(0, 1.5, (N, D)))
    cos_p = rng.normal(0, 1, (N, D))
    cos_p[3] = 0.0
    x["cos_p"] = _f32(cos_p)
    # Weights: [N] (one zero), [N, 1], [N, D], per step [N, T].
    w = rng.uniform(0, 2, N)
    w[2] = 0.0
    x["w"] = _f32(w)
    x["w1"] = x["w"][:, None]
    x["w_nd"] = _f32(rng.uniform(0, 2, (N, D)))
    ts_w = rng.uniform(0, 2, (N, T))
    ts_w[0, :2] = 0.0
    x["ts_w"] = _f32(ts_w)
    # Threshold metrics: A scores with ties (a 0.05 grid), values on AUC's default thresholds
    # (k / 199), 0, 1 and values outside [0, 1]; logits; weights.
    x["auc_y"] = rng.integers(0, 2, A).astype(np.int32)
    x["auc_y1"] = x["auc_y"][:, None]
    auc_p = rng.uniform(0, 1, A)
    auc_p[:20] = np.round(auc_p[:20] * 20) / 20
    auc_p[20:26] = np.array([1, 50, 99, 100, 150, 198]) / 199
    auc_p[26:30] = [0.0, 1.0, -0.2, 1.3]
    x["auc_p"] = _f32(auc_p)
    x["auc_p1"] = x["auc_p"][:, None]
    x["auc_z1"] = _f32(rng.normal(0, 2, (A, 1)))
    x["auc_w"] = _f32(rng.uniform(0, 2, A))
    x["auc_y0"] = np.zeros(A, np.int32)
    return x


def _case(kind, id_, name, y_true, y_pred, sample_weight=None, **options):
    kwargs = options.pop("kwargs", {})
    return {
        "id": id_,
        "kind": kind,
        "name": name,
        "kwargs": kwargs,
        "y_true": y_true,
        "y_pred": y_pred,
        "sample_weight": sample_weight,
        **options,
    }


def _loss(id_, name, y_true, y_pred, sample_weight=None, **kwargs):
    return _case("loss", id_, name, y_true, y_pred, sample_weight, kwargs=kwargs)


def _metric(id_, name, y_true, y_pred, sample_weight=None, splits=None, **kwargs):
    return _case("metric", id_, name, y_true, y_pred, sample_weight, kwargs=kwargs, splits=splits)


SPLITS_N = (0, 4, 8, N)  # equal batches compile once
SPLITS_A = (0, 16, 32, 48, A)
LOGITS = {"from_logits": True}

LOSS_CASES = [
    _loss("bce_prob_labels_B", "BinaryCrossentropy", "bin_y", "bin_p1"),
    _loss("bce_prob_w", "BinaryCrossentropy", "bin_y1", "bin_p1", "w"),
    _loss("bce_logits_w1", "BinaryCrossentropy", "bin_y", "bin_z1", "w1", **LOGITS),
    _loss("bce_smooth_prob", "BinaryCrossentropy", "bin_y1", "bin_p1", label_smoothing=0.2),
    _loss(
        "bce_smooth_logits_w",
        "BinaryCrossentropy",
        "bin_y1",
        "bin_z1",
        "w",
        label_smoothing=0.2,
        **LOGITS,
    ),
    _loss("bce_multilabel_w", "BinaryCrossentropy", "ml_y", "ml_p", "w"),
    # A rank-1 y_pred: Keras' mean over the last axis spans the batch, a scalar loss.
    _loss("bce_rank1_w", "BinaryCrossentropy", "bin_yf", "bin_p", "w"),
    _loss("bce_steps_as_features", "BinaryCrossentropy", "tsb_y", "tsb_p"),
    _loss("bce_steps_wt", "BinaryCrossentropy", "tsb_y1", "tsb_p1", "ts_w"),
    _loss("cce_prob_unnormalised", "CategoricalCrossentropy", "mc_onehot", "mc_p"),
    _loss("cce_logits_w", "CategoricalCrossentropy", "mc_onehot", "mc_z", "w", **LOGITS),
    _loss(
        "cce_smooth_prob_w1",
        "CategoricalCrossentropy",
        "mc_onehot",
        "mc_p",
        "w1",
        label_smoothing=0.1,
    ),
    _loss(
        "cce_smooth_logits",
        "CategoricalCrossentropy",
        "mc_onehot",
        "mc_z",
        label_smoothing=0.1,
        **LOGITS,
    ),
    _loss("cce_steps_logits_wt", "CategoricalCrossentropy", "ts_onehot", "ts_z", "ts_w", **LOGITS),
    _loss("scce_prob", "SparseCategoricalCrossentropy", "mc_y", "mc_p"),
    _loss("scce_prob_labels_B1_w", "SparseCategoricalCrossentropy", "mc_y1", "mc_p", "w"),
    _loss("scce_logits_w1", "SparseCategoricalCrossentropy", "mc_y", "mc_z", "w1", **LOGITS),
    _loss("scce_out_of_range", "SparseCategoricalCrossentropy", "mc_y_oor", "mc_z", **LOGITS),
    _loss("scce_steps_logits", "SparseCategoricalCrossentropy", "ts_y", "ts_z", **LOGITS),
    _loss("scce_steps_prob_wt", "SparseCategoricalCrossentropy", "ts_y", "ts_p", "ts_w"),
    _loss("scce_steps_logits_w1", "SparseCategoricalCrossentropy", "ts_y", "ts_z", "w1", **LOGITS),
    _loss("scce_ignore", "SparseCategoricalCrossentropy", "mc_y", "mc_p", ignore_class=1),
    _loss(
        "scce_ignore_logits_w",
        "SparseCategoricalCrossentropy",
        "mc_y",
        "mc_z",
        "w",
        ignore_class=1,
        **LOGITS,
    ),
    _loss(
        "scce_ignore_steps",
        "SparseCategoricalCrossentropy",
        "ts_y_ign",
        "ts_z",
        ignore_class=-1,
        **LOGITS,
    ),
    _loss(
        "scce_ignore_steps_wt",
        "SparseCategoricalCrossentropy",
        "ts_y_ign",
        "ts_p",
        "ts_w",
        ignore_class=-1,
    ),
    _loss(
        "scce_ignore_steps_sum_wt",
        "SparseCategoricalCrossentropy",
        "ts_y_ign",
        "ts_p",
        "ts_w",
        ignore_class=-1,
        reduction="sum",
    ),
    _loss(
        "scce_ignore_steps_mwsw_wt",
        "SparseCategoricalCrossentropy",
        "ts_y_ign",
        "ts_p",
        "ts_w",
        ignore_class=-1,
        reduction="mean_with_sample_weight",
    ),
    _loss(
        "scce_ignore_steps_none",
        "SparseCategoricalCrossentropy",
        "ts_y_ign",
        "ts_z",
        ignore_class=-1,
        reduction=None,
        **LOGITS,
    ),
    _loss("mse_w", "MeanSquaredError", "reg_y", "reg_p", "w"),
    _loss("mse_labels_B", "MeanSquaredError", "reg_y1", "reg_p1"),
    _loss("mae_w1", "MeanAbsoluteError", "reg_y", "reg_p", "w1"),
    _loss("mape", "MeanAbsolutePercentageError", "pos_y", "reg_p"),
    _loss("msle_w", "MeanSquaredLogarithmicError", "pos_y", "pos_p", "w"),
    _loss("huber", "Huber", "reg_y", "reg_p"),
    _loss("huber_delta_w", "Huber", "reg_y", "reg_p", "w", delta=0.5),
    _loss("log_cosh", "LogCosh", "reg_y", "reg_p"),
    _loss("kld_w", "KLDivergence", "mc_target", "mc_soft", "w"),
    _loss("poisson", "Poisson", "pos_y", "pos_p"),
    _loss("hinge_01", "Hinge", "hinge_y01", "hinge_p"),
    _loss("hinge_pm1_w", "Hinge", "hinge_ypm", "hinge_p", "w"),
    _loss("squared_hinge", "SquaredHinge", "hinge_y01", "hinge_p"),
    _loss("categorical_hinge", "CategoricalHinge", "mc_onehot", "mc_z"),
    _loss("cosine_w", "CosineSimilarity", "reg_y", "cos_p", "w"),
    # Losses [N, T] under every reduction and weight shape.
    _loss("mse_steps", "MeanSquaredError", "reg3_y", "reg3_p"),
    _loss("mse_steps_wt", "MeanSquaredError", "reg3_y", "reg3_p", "ts_w"),
    _loss("mse_steps_w1", "MeanSquaredError", "reg3_y", "reg3_p", "w1"),
    _loss("mse_steps_mean_w1", "MeanSquaredError", "reg3_y", "reg3_p", "w1", reduction="mean"),
    _loss("mse_steps_sum_wt", "MeanSquaredError", "reg3_y", "reg3_p", "ts_w", reduction="sum"),
    _loss(
        "mse_steps_mwsw_wt",
        "MeanSquaredError",
        "reg3_y",
        "reg3_p",
        "ts_w",
        reduction="mean_with_sample_weight",
    ),
    _loss(
        "mse_steps_mwsw_w1",
        "MeanSquaredError",
        "reg3_y",
        "reg3_p",
        "w1",
        reduction="mean_with_sample_weight",
    ),
    _loss(
        "mse_steps_mwsw",
        "MeanSquaredError",
        "reg3_y",
        "reg3_p",
        reduction="mean_with_sample_weight",
    ),
    _loss("mse_steps_none_wt", "MeanSquaredError", "reg3_y", "reg3_p", "ts_w", reduction=None),
    # What compile(loss=...) makes of strings and functions.
    _case("loss_get", "get_crossentropy_binary", "crossentropy", "bin_y", "bin_p1"),
    _case("loss_get", "get_ce_sparse", "ce", "mc_y", "mc_p"),
    _case("loss_get", "get_crossentropy_categorical", "Crossentropy", "mc_onehot", "mc_p"),
    _case("loss_get", "get_binary_crossentropy", "binary_crossentropy", "bin_y1", "bin_p1"),
    _case("loss_get", "get_BCE", "BCE", "bin_y1", "bin_p1"),
    _case("loss_get", "get_BinaryCrossentropy", "BinaryCrossentropy", "bin_y1", "bin_p1"),
    _case("loss_get", "get_mse", "mse", "reg_y", "reg_p"),
    _case("loss_get", "get_huber", "huber", "reg_y", "reg_p"),
    _case("loss_get", "get_kld", "kld", "mc_target", "mc_soft"),
    _case("loss_get", "get_function", squared_error, "reg_y", "reg_p", "w1"),
]

METRIC_CASES = [
    _metric("binacc_labels_B", "BinaryAccuracy", "bin_y", "bin_p1"),
    _metric("binacc_threshold_w", "BinaryAccuracy", "bin_y1", "bin_p1", "w", threshold=0.7),
    _metric("binacc_multilabel_w", "BinaryAccuracy", "ml_y", "ml_p", "w", splits=SPLITS_N),
    _metric("binacc_steps_wt", "BinaryAccuracy", "tsb_y", "tsb_p", "ts_w"),
    _metric("catacc_ties", "CategoricalAccuracy", "mc_onehot", "mc_p"),
    _metric("catacc_negative_zero", "CategoricalAccuracy", "mc_onehot", "mc_z"),
    _metric("catacc_steps_wt", "CategoricalAccuracy", "ts_onehot", "ts_z", "ts_w"),
    _metric("catacc_steps_w", "CategoricalAccuracy", "ts_onehot", "ts_z", "w", splits=SPLITS_N),
    _metric("spcatacc", "SparseCategoricalAccuracy", "mc_y", "mc_p"),
    _metric("spcatacc_labels_B1_w", "SparseCategoricalAccuracy", "mc_y1", "mc_z", "w"),
    _metric("spcatacc_steps", "SparseCategoricalAccuracy", "ts_y", "ts_z"),
    _metric("spcatacc_steps_wt", "SparseCategoricalAccuracy", "ts_y", "ts_p", "ts_w", SPLITS_N),
    _metric("spcatacc_steps_w1", "SparseCategoricalAccuracy", "ts_y", "ts_p", "w1"),
    _metric("topk2_ties", "TopKCategoricalAccuracy", "mc_onehot", "mc_p", k=2),
    _metric("topk_default", "TopKCategoricalAccuracy", "mc_onehot", "mc_z"),
    _metric("topk2_steps_wt", "TopKCategoricalAccuracy", "ts_onehot", "ts_z", "ts_w", k=2),
    _metric("sptopk2_ties", "SparseTopKCategoricalAccuracy", "mc_y", "mc_p", k=2),
    _metric("sptopk2_labels_B1_w", "SparseTopKCategoricalAccuracy", "mc_y1", "mc_z", "w", k=2),
    _metric("sptopk1_steps", "SparseTopKCategoricalAccuracy", "ts_y", "ts_p", k=1),
    _metric("auc_roc", "AUC", "auc_y", "auc_p1"),
    _metric("auc_roc_w", "AUC", "auc_y", "auc_p1", "auc_w"),
    _metric("auc_roc_minoring", "AUC", "auc_y", "auc_p1", summation_method="minoring"),
    _metric("auc_roc_majoring", "AUC", "auc_y", "auc_p1", summation_method="majoring"),
    _metric("auc_pr", "AUC", "auc_y", "auc_p1", curve="PR"),
    _metric("auc_pr_w", "AUC", "auc_y", "auc_p1", "auc_w", curve="PR"),
    _metric("auc_pr_minoring", "AUC", "auc_y", "auc_p1", curve="PR", summation_method="minoring"),
    _metric("auc_pr_majoring", "AUC", "auc_y", "auc_p1", curve="PR", summation_method="majoring"),
    _metric("auc_n7", "AUC", "auc_y", "auc_p1", num_thresholds=7),
    _metric("auc_even_thresholds", "AUC", "auc_y", "auc_p1", thresholds=[0.25, 0.5, 0.75]),
    _metric(
        "auc_uneven_thresholds_w",
        "AUC",
        "auc_y",
        "auc_p1",
        "auc_w",
        thresholds=[0.9, 0.1, 0.3, 0.35],
    ),
    _metric("auc_logits", "AUC", "auc_y", "auc_z1", from_logits=True),
    _metric("auc_ranks_B1_B", "AUC", "auc_y1", "auc_p"),
    _metric("auc_one_class", "AUC", "auc_y0", "auc_p1"),
    _metric("auc_roc_merged_w", "AUC", "auc_y", "auc_p1", "auc_w", SPLITS_A),
    _metric("auc_pr_merged", "AUC", "auc_y", "auc_p1", splits=SPLITS_A, curve="PR"),
    _metric("precision", "Precision", "auc_y", "auc_p1"),
    _metric("precision_03_w", "Precision", "auc_y", "auc_p1", "auc_w", thresholds=0.3),
    _metric("precision_list", "Precision", "auc_y", "auc_p1", thresholds=[0.8, 0.2, 0.5]),
    _metric(
        "precision_even_merged",
        "Precision",
        "auc_y",
        "auc_p1",
        "auc_w",
        SPLITS_A,
        thresholds=[0.0, 0.5, 1.0],
    ),
    _metric("recall", "Recall", "auc_y", "auc_p1"),
    _metric("recall_03_w", "Recall", "auc_y", "auc_p1", "auc_w", thresholds=0.3),
    _metric(
        "recall_list_merged",
        "Recall",
        "auc_y",
        "auc_p1",
        None,
        SPLITS_A,
        thresholds=[0.2, 0.5, 0.8],
    ),
    _metric("recall_even", "Recall", "auc_y", "auc_p1", thresholds=[0.0, 0.5, 1.0]),
    _metric("mse_w", "MeanSquaredError", "reg_y", "reg_p", "w", SPLITS_N),
    _metric("mae_w1", "MeanAbsoluteError", "reg_y", "reg_p", "w1"),
    _metric("mape", "MeanAbsolutePercentageError", "pos_y", "reg_p"),
    _metric("msle", "MeanSquaredLogarithmicError", "pos_y", "pos_p"),
    _metric("rmse_w", "RootMeanSquaredError", "reg_y", "reg_p", "w"),
    _metric("rmse_element_weights", "RootMeanSquaredError", "reg_y", "reg_p", "w_nd"),
    _metric("rmse_merged", "RootMeanSquaredError", "reg_y", "reg_p", None, SPLITS_N),
    _metric("cosine_w", "CosineSimilarity", "reg_y", "cos_p", "w"),
    _metric("logcosh", "LogCoshError", "reg_y", "reg_p"),
    _metric("kld", "KLDivergence", "mc_target", "mc_soft"),
    _metric("poisson_w", "Poisson", "pos_y", "pos_p", "w"),
    _metric("hinge", "Hinge", "hinge_y01", "hinge_p"),
    _metric("squared_hinge_w", "SquaredHinge", "hinge_ypm", "hinge_p", "w"),
    _metric("categorical_hinge", "CategoricalHinge", "mc_onehot", "mc_z"),
    _metric("bce", "BinaryCrossentropy", "bin_y1", "bin_p1"),
    _metric(
        "bce_logits_smooth_w",
        "BinaryCrossentropy",
        "bin_y1",
        "bin_z1",
        "w",
        from_logits=True,
        label_smoothing=0.1,
    ),
    _metric("bce_steps_wt", "BinaryCrossentropy", "tsb_y1", "tsb_p1", "ts_w"),
    _metric("cce_steps_wt", "CategoricalCrossentropy", "ts_onehot", "ts_p", "ts_w", SPLITS_N),
    _metric(
        "cce_logits_smooth",
        "CategoricalCrossentropy",
        "mc_onehot",
        "mc_z",
        from_logits=True,
        label_smoothing=0.1,
    ),
    _metric("scce_logits_w", "SparseCategoricalCrossentropy", "mc_y", "mc_z", "w", **LOGITS),
    # Unweighted, Keras averages ignored elements in as zeros; weighted, it drops them.
    _metric("scce_ignore", "SparseCategoricalCrossentropy", "ts_y_ign", "ts_p", ignore_class=-1),
    _metric(
        "scce_ignore_wt",
        "SparseCategoricalCrossentropy",
        "ts_y_ign",
        "ts_z",
        "ts_w",
        ignore_class=-1,
        from_logits=True,
    ),
    _metric(
        "scce_ignore_w1",
        "SparseCategoricalCrossentropy",
        "ts_y_ign",
        "ts_z",
        "w1",
        ignore_class=-1,
        from_logits=True,
    ),
    # What compile(metrics=[...]) makes of strings and functions.
    _case("metric_get", "get_accuracy_binary", "accuracy", "bin_y", "bin_p1"),
    _case("metric_get", "get_acc_sparse", "acc", "mc_y", "mc_p"),
    _case("metric_get", "get_Accuracy_sparse_B1", "Accuracy", "mc_y1", "mc_z"),
    _case("metric_get", "get_accuracy_categorical", "accuracy", "mc_onehot", "mc_p"),
    _case("metric_get", "get_accuracy_steps_sparse", "accuracy", "ts_y", "ts_z"),
    _case("metric_get", "get_accuracy_steps_categorical", "accuracy", "tsb_y", "tsb_p"),
    _case("metric_get", "get_auc", "auc", "auc_y", "auc_p1"),
    _case("metric_get", "get_AUC", "AUC", "auc_y", "auc_p1"),
    _case("metric_get", "get_mse", "mse", "reg_y", "reg_p"),
    _case("metric_get", "get_root_mean_squared_error", "root_mean_squared_error", "reg_y", "reg_p"),
    _case("metric_get", "get_log_cosh_error", "log_cosh_error", "reg_y", "reg_p"),
    _case("metric_get", "get_bce", "bce", "bin_y1", "bin_p1"),
    _case("metric_get", "get_binary_accuracy", "binary_accuracy", "bin_y", "bin_p1"),
    _case("metric_get", "get_function", squared_error, "reg_y", "reg_p", "w"),
]


PAD = 3


def pad_rows(x: np.ndarray, like: str = "first", fill: float | None = None) -> np.ndarray:
    """``x`` with ``PAD`` padding rows appended: copies of its first rows (``like="first"``) or
    of its last rows reversed (``"last"``), so padded targets and predictions are mismatched and
    would change any value they leaked into; or rows of ``fill`` (for weights)."""
    if fill is not None:
        rows = np.full((PAD, *x.shape[1:]), fill, x.dtype)
    else:
        rows = x[:PAD] if like == "first" else x[::-1][:PAD]
    return np.concatenate([x, rows])
