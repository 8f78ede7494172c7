"""The scripts in examples/ run end to end on tiny sizes and learn what they claim to."""

import importlib.util
import os
import sys

import pytest

pytestmark = pytest.mark.slow
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses (Flax modules) look their module up there
    spec.loader.exec_module(module)
    return module


def test_sequence_labelling(capsys):
    logs = _example("sequence_labelling").main(["--examples", "600", "--epochs", "12"])
    assert logs["val_accuracy"] > 0.8
    assert "predicted:" in capsys.readouterr().out


def test_adding_problem():
    logs = _example("adding_problem").main(
        ["--examples", "1500", "--time", "12", "--epochs", "25", "--verbose", "0"]
    )
    assert logs["val_loss"] < 0.5 / 6  # half of the mean predictor's error, at least


def test_custom_metric_and_callback(capsys):
    module = _example("custom_metric_and_callback")
    logs = module.main(["--examples", "1200", "--epochs", "4", "--verbose", "0"])
    assert {"f1", "val_f1", "auc", "val_auc"} <= set(logs)
    assert 0 <= logs["val_f1"] <= 1
    assert "best val_f1" in capsys.readouterr().out


@pytest.mark.parametrize("trues, preds", [((1, 1, 0, 0), (2.0, -1.0, 3.0, -2.0))])
def test_the_example_f1_is_the_f1_of_all_examples(trues, preds):
    import jax.numpy as jnp

    f1 = _example("custom_metric_and_callback").F1Score()
    halves = [
        f1.stats(jnp.asarray(trues[i : i + 2]), jnp.asarray(preds[i : i + 2])) for i in (0, 2)
    ]
    total = {k: halves[0][k] + halves[1][k] for k in halves[0]}
    assert float(f1.result(total)) == pytest.approx(0.5)  # tp 1, fp 1, fn 1
