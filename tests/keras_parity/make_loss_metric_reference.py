"""Keras 3 values of the loss and metric cases in ``tests/loss_metric_cases.py``.

Run it with a Python that has Keras 3.15.1 on the JAX backend, never rnnjax's environment::

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu path/to/keras-venv/bin/python \\
        tests/keras_parity/make_loss_metric_reference.py

It prints Python literals: ``KERAS_LOSSES``/``KERAS_LOSS_NAMES`` (for ``tests/test_losses.py``)
and ``KERAS_METRICS``/``KERAS_METRIC_NAMES`` (for ``tests/test_metrics.py``), which hold them as
pasted. Per case:

* ``"loss"``: ``keras.losses.<name>(**kwargs)(y_true, y_pred, sample_weight)``;
* ``"metric"``: ``keras.metrics.<name>(**kwargs)``, one ``update_state`` per batch of ``splits``,
  then ``result()``;
* ``"loss_get"``/``"metric_get"``: the object ``compile`` builds for the identifier
  (``trainers/compile_utils.py: get_loss, get_metric``, which resolve ``"crossentropy"`` and
  ``"accuracy"`` by shapes), used as above, and its name.

Values are float32, printed in their shortest round-trip form.
"""

import os
import sys
from pathlib import Path

import keras
import numpy as np
from keras.src.trainers import compile_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import loss_metric_cases as cases  # noqa: E402


def _literal(value) -> str:
    value = np.asarray(value, np.float32)
    if value.ndim == 0:
        return str(value)
    return "[" + ", ".join(_literal(item) for item in value) + "]"


def _arrays(case, inputs):
    y_true, y_pred = inputs[case["y_true"]], inputs[case["y_pred"]]
    weight = case["sample_weight"]
    return y_true, y_pred, None if weight is None else inputs[weight]


def _loss(case, inputs):
    y_true, y_pred, weight = _arrays(case, inputs)
    if case["kind"] == "loss":
        loss = getattr(keras.losses, case["name"])(**case["kwargs"])
    else:
        loss = compile_utils.get_loss(case["name"], y_true, y_pred)
    return loss(y_true, y_pred, sample_weight=weight), loss.name


def _metric(case, inputs):
    y_true, y_pred, weight = _arrays(case, inputs)
    if case["kind"] == "metric":
        metric = getattr(keras.metrics, case["name"])(**case["kwargs"])
    else:
        metric = compile_utils.get_metric(case["name"], y_true, y_pred)
    bounds = case.get("splits") or (0, len(y_true))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        rows = slice(start, stop)
        metric.update_state(y_true[rows], y_pred[rows], None if weight is None else weight[rows])
    return metric.result(), metric.name


def _print(title: str, names_title: str, case_list, run, inputs) -> None:
    names = {}
    print(f"{title} = {{")
    for case in case_list:
        value, name = run(case, inputs)
        print(f'    "{case["id"]}": {_literal(value)},')
        if case["kind"].endswith("_get"):
            names[case["id"]] = name
    print("}")
    print(f"{names_title} = {{")
    for case_id, name in names.items():
        print(f'    "{case_id}": "{name}",')
    print("}")


def main() -> None:
    if keras.__version__ != "3.15.1" or keras.backend.backend() != "jax":
        sys.exit(f"need Keras 3.15.1 on JAX, got {keras.__version__} on {keras.backend.backend()}")
    if os.environ.get("JAX_PLATFORMS") != "cpu":
        print("# warning: JAX_PLATFORMS is not 'cpu'", file=sys.stderr)
    inputs = cases.make_inputs()
    print(f"# Keras {keras.__version__}, JAX backend; seed {cases.SEED}")
    _print("KERAS_LOSSES", "KERAS_LOSS_NAMES", cases.LOSS_CASES, _loss, inputs)
    _print("KERAS_METRICS", "KERAS_METRIC_NAMES", cases.METRIC_CASES, _metric, inputs)


if __name__ == "__main__":
    main()
