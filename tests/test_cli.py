"""The experiments' command line: listing, --summary, and one-line errors with exit status 2."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from caches import fresh_cache

from experiments.__main__ import recipes
from rnnjax import LayerSpec, fused
from rnnjax.cli import main

pytest_plugins = ["data_fixtures"]  # imdb_data_dir

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
        (["--workdir", ""], "--workdir is empty"),
        (["--devices", "0"], "--devices must be >= 1, got 0"),
        (["--learning-rates", "1e-3,inf"], "learning rates must be finite and > 0"),
        (["--learning-rates", "1e-320"], "learning rates must be finite and > 0 in float32"),
        (["--learning-rates", "1e-3,0.001"], "learning rates repeat"),
        (["--num-seeds", "100000"], "is 100000 models; at most 4096"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(_experiment("imdb_lstm"), argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # nothing written


def test_fused_where_it_cannot_run_exits_2_before_writing(imdb_data_dir, tmp_path, capsys):
    """A relu LSTM cannot run the fused kernels: the CLI says so before writing anything."""
    experiment = _experiment("imdb_lstm")
    relu = dataclasses.replace(
        experiment,
        model=dataclasses.replace(
            experiment.model, layers=(LayerSpec("lstm", 8, activation="relu"),)
        ),
    )
    workdir = tmp_path / "run"
    argv = ["--implementation", "fused", "--workdir", str(workdir)]
    assert main(relu, [*argv, "--data-dir", str(imdb_data_dir)]) == 2
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
    assert "(Not a directory); choose another --workdir" in capsys.readouterr().err


def test_cli_process_exit_status():
    result = subprocess.run(
        [sys.executable, "-m", "experiments.imdb_gru", "--epochs", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: epochs must be >= 1, got 0"


def test_a_recipe_process_runs_its_exit_handlers_and_flushes_its_output(tmp_path):
    # The command ends the process without tearing the interpreter down; what Python's own exit
    # would still do (exit handlers, buffered output) must happen.
    marker = tmp_path / "exit-handler-ran"
    script = (
        "import atexit, pathlib, sys\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'ran')\n"
        "from experiments.imdb_lstm import EXPERIMENT\n"
        "from rnnjax.cli import command\n"
        "sys.stdout.write('unflushed ')\n"
        "command(EXPERIMENT, sys.argv[1:])\n"
        "raise AssertionError('command returned')\n"
    )
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    results = {}
    for argv, status in [(["--summary"], 0), (["--epochs", "-1"], 2)]:
        marker.unlink(missing_ok=True)
        result = subprocess.run(
            [sys.executable, "-c", script, *argv],
            cwd=REPO,
            env=buffered,
            capture_output=True,
            text=True,
        )
        assert result.returncode == status, result.stderr
        assert marker.read_text() == "ran"
        assert result.stdout.startswith("unflushed ")
        results[argv[0]] = result
    assert "Total params: 8,809 " in results["--summary"].stdout
    assert results["--epochs"].stderr.strip() == "error: epochs must be >= 1, got -1"


@pytest.mark.slow
def test_a_run_whose_output_reader_goes_away_trains_to_its_end(imdb_data_dir, tmp_path):
    """``python -m experiments.imdb_lstm | head -1``: the run ends as it would have, the rest
    of its output discarded (it died of the broken pipe after its first epoch)."""
    workdir = tmp_path / "run"
    argv = ["--epochs", "3", "--batch-size", "8", "--workdir", str(workdir)]
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.imdb_lstm", *argv, "--data-dir", str(imdb_data_dir)],
        cwd=REPO,
        env=os.environ | {"RNNJAX_CACHE_DIR": fresh_cache(tmp_path / "cache")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout.readline().startswith(b"Epoch 1/3")
    process.stdout.close()
    _, errors = process.communicate(timeout=300)
    assert process.returncode == 0, errors.decode()[-2000:]
    assert json.loads((workdir / "metrics.json").read_text())["epochs_run"] == 3


def test_sigterm_saves_the_run_as_ctrl_c_does(imdb_data_dir, tmp_path, capsys):
    """A batch scheduler's SIGTERM: the step finishes, the run is saved (exit 130) and
    ``--resume`` finishes it."""
    workdir = tmp_path / "run"
    argv = ["--workdir", str(workdir), "--data-dir", str(imdb_data_dir), "--epochs", "30"]
    argv += ["--quiet", "--per-step", "--patience", "30"]

    def terminate_after_the_first_epoch():
        while not (workdir / "history.json").exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_after_the_first_epoch, daemon=True).start()
    assert main(_experiment("imdb_gru"), argv) == 130
    assert "Saved. Resume with:" in capsys.readouterr().err
    assert not (workdir / "metrics.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # given back
    assert main(_experiment("imdb_gru"), [*argv, "--resume"]) == 0
    assert json.loads((workdir / "metrics.json").read_text())["epochs_run"] == 30


def test_an_output_path_that_cannot_be_written_is_one_line(imdb_data_dir, tmp_path, capsys):
    """A directory where the run writes a file: one line naming it, exit 2, the run resumable
    once it is gone."""
    workdir = tmp_path / "run"
    argv = ["--workdir", str(workdir), "--data-dir", str(imdb_data_dir), "--quiet"]
    assert main(_experiment("imdb_gru"), [*argv, "--epochs", "1"]) == 0
    (workdir / "loss.png").unlink()
    (workdir / "loss.png").mkdir()
    capsys.readouterr()
    assert main(_experiment("imdb_gru"), [*argv, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write {workdir / 'loss.png'}" in err
    (workdir / "loss.png").rmdir()
    assert main(_experiment("imdb_gru"), [*argv, "--epochs", "2", "--resume"]) == 0
    assert json.loads((workdir / "metrics.json").read_text())["epochs_run"] == 2


@pytest.mark.parametrize("kind", ["file", "dangling symlink", "special file", "under a file"])
def test_a_workdir_that_cannot_be_one_exits_2_and_writes_nothing(kind, tmp_path, capsys):
    target = {
        "file": tmp_path / "file",
        "dangling symlink": tmp_path / "link",
        "special file": "/dev/null",
        "under a file": tmp_path / "file" / "run",
    }[kind]
    (tmp_path / "file").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    before = sorted(os.listdir(tmp_path))
    assert main(_experiment("imdb_lstm"), ["--workdir", str(target), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workdir" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == before and (tmp_path / "file").read_text() == ""


@pytest.mark.slow
def test_absurd_but_valid_values_run(imdb_data_dir, tmp_path, capsys, monkeypatch):
    """Any Python int is a seed; a batch larger than the data is all of it (Keras); a read-only
    cache is skipped with one warning."""
    # The kernels this session built, loaded before the cache turns read-only: otherwise the first
    # test of a worker to train builds them again for itself (test_fused checks that path).
    fused.available()
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o555)
    monkeypatch.setenv("RNNJAX_CACHE_DIR", str(cache))
    argv = ["--seed", str(2**70), "--batch-size", str(10**9), "--epochs", "2", "--quiet"]
    argv += ["--workdir", str(tmp_path / "run"), "--data-dir", str(imdb_data_dir)]
    assert main(_experiment("imdb_gru"), argv) == 0
    err = capsys.readouterr().err
    assert err.count("warning: cannot write the data cache") == 1, err
    history = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    assert len(history) == 2 and list(cache.iterdir()) == []


def test_a_damaged_dataset_exits_2_naming_the_file(imdb_data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RNNJAX_CACHE_DIR", str(tmp_path / "cache"))
    data_dir = tmp_path / "tfds"
    shutil.copytree(imdb_data_dir, data_dir)
    shard = next(data_dir.glob("imdb_reviews/plain_text/1.0.0/*-test.array_record*"))
    shard.write_bytes(shard.read_bytes()[:-500])
    (tmp_path / "runs" / "kept").mkdir(parents=True)  # another run's: stays
    workdir = tmp_path / "runs" / "new" / "deeper" / "run"  # its parents made for it: removed
    argv = ["--workdir", str(workdir), "--data-dir", str(data_dir), "--epochs", "1"]
    assert main(_experiment("imdb_gru"), argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(shard) in err and "--prepare" in err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["kept"]


@pytest.mark.slow
def test_a_diverged_run_exits_3_and_says_so_when_quiet(imdb_data_dir, tmp_path, capsys):
    experiment = _experiment("imdb_gru")
    diverging = experiment.replace(learning_rate=1e30)
    argv = ["--workdir", str(tmp_path / "run"), "--data-dir", str(imdb_data_dir), "--quiet"]
    assert main(diverging, [*argv, "--epochs", "3"]) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    # One step an epoch; the first step's loss is computed before its (exploding) update.
    assert "the loss is not finite" in captured.err and "epoch 2, step 1" in captured.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # Keras ends the epoch whose loss went NaN (it validates and is recorded), then stops.
    assert metrics["terminated_on_nan_at"] == [2, 1] and metrics["epochs_run"] == 2


def test_a_grid_whose_every_model_diverged_exits_3_and_says_so(imdb_data_dir, tmp_path, capsys):
    argv = ["--workdir", str(tmp_path / "grid"), "--data-dir", str(imdb_data_dir), "--quiet"]
    argv += ["--epochs", "2", "--num-seeds", "2", "--learning-rates", "1e30"]
    assert main(_experiment("imdb_gru"), argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: every model's loss became non-finite") and err.count("\n") == 1


@pytest.mark.slow
def test_num_seeds_leaves_diverged_models_out_of_the_mean(imdb_data_dir, tmp_path, capsys):
    argv = ["--workdir", str(tmp_path / "grid"), "--data-dir", str(imdb_data_dir), "--quiet"]
    argv += ["--epochs", "2", "--learning-rates", "1e-3,1e30"]
    assert main(_experiment("imdb_gru"), argv) == 0
    assert "2 models (1 diverged, left out): val_accuracy" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "grid" / "metrics.json").read_text())
    healthy, diverged = metrics["models"]
    assert diverged["terminated_on_nan_at"] == [2, 1] and healthy["terminated_on_nan_at"] is None
    assert metrics["diverged"] == 1
    assert metrics["test_accuracy_mean"] == pytest.approx(healthy["test_accuracy"])
    assert metrics["test_accuracy_std"] == 0.0
    # Such a run cannot be resumed: --resume without the grid flags is refused, not a new
    # single run written over the grid's outputs.
    files = {p.name: p.read_bytes() for p in (tmp_path / "grid").iterdir() if p.is_file()}
    resume = ["--workdir", str(tmp_path / "grid"), "--data-dir", str(imdb_data_dir), "--resume"]
    assert main(_experiment("imdb_gru"), [*resume, "--quiet", "--epochs", "2"]) == 2
    assert "holds a run of several models" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "grid").iterdir() if p.is_file()} == files
