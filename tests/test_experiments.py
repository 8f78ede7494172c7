"""Every tutorial recipe end to end on the tiny fixture datasets, and the CLI's Ctrl-C path."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from caches import fresh_cache

from experiments.__main__ import recipes
from rnnjax.checkpoint import load_model
from rnnjax.experiment import load_splits, run, targets
from rnnjax.train import evaluate

pytest_plugins = ["data_fixtures"]  # imdb_data_dir, reuters_data_dir
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUTS = {
    "config.json",
    "history.json",
    "metrics.json",
    "summary.txt",
    "loss.png",
    "accuracy.png",
    "model.png",
    "checkpoints",
}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RNNJAX_CACHE_DIR", fresh_cache(tmp_path_factory.getbasetemp() / "cache"))


def _data_dir(experiment, request):
    return request.getfixturevalue(f"{experiment.data.dataset}_data_dir")


@pytest.mark.slow
@pytest.mark.parametrize("name, experiment", recipes(), ids=[name for name, _ in recipes()])
def test_recipe_runs_end_to_end(name, experiment, tmp_path, request):
    workdir = tmp_path / name
    metrics = run(
        experiment.replace(epochs=2),
        str(workdir),
        data_dir=str(_data_dir(experiment, request)),
        quiet=True,
    )
    assert OUTPUTS <= set(os.listdir(workdir))
    history = json.loads((workdir / "history.json").read_text())["epochs"]
    assert len(history) == metrics["epochs_run"] == 2
    assert set(history[0]) == {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    for split in ("train", "val", "test"):
        assert np.isfinite(metrics[f"{split}_loss"]) and 0 <= metrics[f"{split}_accuracy"] <= 1
    assert metrics["params"] == int(
        (workdir / "summary.txt").read_text().split("Total params: ")[1].split()[0].replace(",", "")
    )
    # The best checkpoint alone rebuilds the model.
    restored = load_model(str(workdir / "checkpoints"))
    assert restored.model.config == experiment.model
    val_ids, val_labels = load_splits(
        experiment.data, str(_data_dir(experiment, request))
    ).validation
    logs = evaluate(restored, val_ids, targets(experiment, val_labels), batch_size=64)
    assert logs == pytest.approx({"loss": metrics["val_loss"], "accuracy": metrics["val_accuracy"]})


def test_load_splits_pads_and_splits(imdb_data_dir):
    experiment = dict(recipes())["imdb_lstm_post"]
    splits = load_splits(experiment.data, str(imdb_data_dir))
    (x_train, y_train), (x_val, _), (x_test, y_test) = splits.train, splits.validation, splits.test
    assert x_train.shape == (19, 100) and x_val.shape == (5, 100) and x_test.shape == (16, 100)
    assert len(y_train) == 19 and len(y_test) == 16
    assert np.all(x_train[:, 0] == 1)  # 'post' padding keeps the start token first
    assert x_train.max() < experiment.model.vocab_size


@pytest.mark.slow
def test_ctrl_c_saves_and_the_resumed_run_ends_like_an_uninterrupted_one(imdb_data_dir, tmp_path):
    env = dict(os.environ, RNNJAX_CACHE_DIR=fresh_cache(tmp_path / "cache"), PYTHONPATH=REPO)
    flags = [
        "--epochs",
        "12",
        "--patience",
        "12",
        "--data-dir",
        str(imdb_data_dir),
        "--quiet",
        "--per-step",
    ]

    def cli(workdir, *extra):
        return [
            sys.executable,
            "-m",
            "experiments.imdb_gru",
            "--workdir",
            str(workdir),
            *flags,
            *extra,
        ]

    reference = subprocess.run(
        cli(tmp_path / "whole"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert reference.returncode == 0, reference.stderr

    workdir = tmp_path / "interrupted run"  # a space: the printed command must quote it
    process = subprocess.Popen(cli(workdir), cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (workdir / "history.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "Resume with: python -m experiments.imdb_gru" in stderr and "--resume" in stderr
    command = shlex.split(stderr.split("Resume with: ")[1].splitlines()[0])
    assert command[command.index("--workdir") + 1] == str(workdir)
    assert not (workdir / "metrics.json").exists()

    resumed = subprocess.run(
        cli(workdir, "--resume"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr

    def result(path):
        history = json.loads((path / "history.json").read_text())["epochs"]
        metrics = json.loads((path / "metrics.json").read_text())
        drop = {"seconds"}
        return (
            [{k: v for k, v in e.items() if k not in drop} for e in history],
            {k: v for k, v in metrics.items() if k not in drop},
        )

    assert result(workdir) == result(tmp_path / "whole")


@pytest.mark.slow
def test_num_seeds_and_learning_rates_train_a_grid(imdb_data_dir, tmp_path, capsys):
    from rnnjax.cli import main

    experiment = dict(recipes())["imdb_gru"]
    status = main(
        experiment,
        [
            "--workdir",
            str(tmp_path / "grid"),
            "--epochs",
            "2",
            "--num-seeds",
            "2",
            "--learning-rates",
            "1e-3,1e-2",
            "--data-dir",
            str(imdb_data_dir),
            "--quiet",
        ],
    )
    assert status == 0
    assert "4 models: val_accuracy" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "grid" / "metrics.json").read_text())
    assert [(m["seed"], m["learning_rate"]) for m in metrics["models"]] == [
        (0, 1e-3),
        (1, 1e-3),
        (0, 1e-2),
        (1, 1e-2),
    ]
    accuracies = [m["test_accuracy"] for m in metrics["models"]]
    assert metrics["test_accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert metrics["test_accuracy_std"] == pytest.approx(np.std(accuracies))
    for k in range(4):
        history = json.loads((tmp_path / "grid" / f"history_{k}.json").read_text())["epochs"]
        assert len(history) == metrics["models"][k]["epochs_run"]


@pytest.mark.slow
def test_two_epochs_through_the_cli(imdb_data_dir, tmp_path):
    env = dict(os.environ, RNNJAX_CACHE_DIR=fresh_cache(tmp_path / "cache"), PYTHONPATH=REPO)
    workdir = tmp_path / "run"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.imdb_lstm",
            "--epochs",
            "2",
            "--workdir",
            str(workdir),
            "--data-dir",
            str(imdb_data_dir),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "Epoch 1/2" and "Epoch 2/2" in lines
    # Keras' progress line: 19 examples in batches of 64 is one step.
    progress = [line for line in lines if line.startswith("1/1 ━━━━━━━━━━━━━━━━━━━━ ")]
    assert len(progress) == 2
    assert " - accuracy: " in progress[0] and progress[0].index("accuracy") < progress[0].index(
        " loss"
    ) < progress[0].index("val_accuracy") < progress[0].index("val_loss")
    assert lines[-1].startswith("test_loss: ") and str(workdir) in lines[-1]
    assert OUTPUTS <= set(os.listdir(workdir))
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["params"] == 8809
