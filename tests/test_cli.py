"""The experiments' command line: listing, --summary, and one-line errors with exit status 2."""

import dataclasses
import os
import subprocess
import sys

import pytest

from experiments.__main__ import recipes
from rnnjax import LayerSpec
from rnnjax.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED = [
    "imdb_gru",
    "imdb_gru32",
    "imdb_lstm",
    "imdb_lstm32_adam",
    "imdb_lstm32_dropout",
    "imdb_lstm32_stacked",
    "imdb_lstm_dropout",
    "imdb_lstm_post",
    "imdb_lstm_stacked",
    "reuters_lstm",
]


def _experiment(name):
    return dict(recipes())[name]


def test_every_tutorial_recipe_is_listed():
    assert [name for name, _ in recipes()] == EXPECTED
    listing = subprocess.run(
        [sys.executable, "-m", "experiments"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    for name in EXPECTED:
        assert name in listing


@pytest.mark.parametrize(
    "name, total",
    [
        ("imdb_lstm", "8,809"),
        ("imdb_lstm_stacked", "9,353"),
        ("imdb_gru", "8,633"),
        ("imdb_lstm32_adam", "24,353"),
        ("imdb_gru32", "22,369"),
        ("reuters_lstm", "185,046"),
    ],
)
def test_summary_flag_prints_the_keras_table(name, total, capsys):
    assert main(_experiment(name), ["--summary"]) == 0
    assert f"Total params: {total} " in capsys.readouterr().out


def test_recipes_differ_in_a_few_fields():
    base = _experiment("imdb_lstm")
    post = _experiment("imdb_lstm_post")
    assert (post.data.padding, post.data.truncating) == ("post", "post")
    assert post.model == base.model and post.train == base.train
    assert base.train.optimizer == "rmsprop" and base.train.learning_rate == 1e-4
    assert (base.train.batch_size, base.train.epochs, base.train.patience) == (64, 100, 3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "epochs must be >= 1, got 0"),
        (["--batch-size", "-3"], "batch size must be >= 1, got -3"),
        (["--patience", "-1"], "patience must be >= 0"),
        (["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--resume"], "--resume needs the --workdir"),
        (["--implementation", "cudnn"], "argument --implementation: invalid choice: 'cudnn'"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(_experiment("imdb_lstm"), argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # nothing written


def test_fused_where_it_cannot_run_exits_2_before_writing(tmp_path, capsys):
    """A relu LSTM cannot run the fused kernels: the CLI says so before touching the data."""
    experiment = _experiment("imdb_lstm")
    relu = dataclasses.replace(
        experiment,
        model=dataclasses.replace(
            experiment.model, layers=(LayerSpec("lstm", 8, activation="relu"),)
        ),
    )
    workdir = tmp_path / "run"
    argv = ["--implementation", "fused", "--workdir", str(workdir), "--data-dir", str(tmp_path)]
    assert main(relu, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "implementation='fused' cannot run" in err
    assert "activation='tanh'" in err
    assert not workdir.exists() or not any(workdir.iterdir())


def test_non_empty_workdir_is_refused(tmp_path, capsys):
    (tmp_path / "history.json").write_text("{}")
    assert main(_experiment("imdb_lstm"), ["--workdir", str(tmp_path)]) == 2
    assert "is not empty; pass --resume" in capsys.readouterr().err


def test_unwritable_workdir_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(_experiment("imdb_lstm"), ["--workdir", str(blocker / "run")]) == 2
    assert "is not a writable directory" in capsys.readouterr().err


def test_cli_process_exit_status():
    result = subprocess.run(
        [sys.executable, "-m", "experiments.imdb_gru", "--epochs", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: epochs must be >= 1, got 0"
