"""The CLI run as a hostile user treats it: killed at every phase, two runs in one workdir,
damaged and lost checkpoints. Whatever happens, ``--resume`` ends as the uninterrupted run:
the same history.json, metrics.json (timings aside) and best checkpoint — or one line, exit 2."""

import json
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from caches import fresh_cache
from faults import REPO, cli_command, cli_env, damage, largest_file, outputs, run_cli

pytest_plugins = ["data_fixtures"]  # imdb_data_dir
pytestmark = pytest.mark.slow

RECIPE = "imdb_lstm"
# 19 training examples in batches of 8: 3 steps an epoch; early stopping after epoch 4 restores 2.
FLAGS = ["--epochs", "10", "--patience", "2", "--batch-size", "8", "--quiet"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The child processes' caches: data and compiled programs of this module's own, the data
    cache holding the fused kernels' build."""
    root = tmp_path_factory.mktemp("caches")
    return {
        "RNNJAX_CACHE_DIR": fresh_cache(root / "rnnjax"),
        "JAX_COMPILATION_CACHE_DIR": str(root / "jax"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "MPLBACKEND": "Agg",
    }


@pytest.fixture(scope="module")
def cli(imdb_data_dir, env):
    def run(workdir, *extra, phase="none", nth=1):
        argv = [*FLAGS, "--data-dir", str(imdb_data_dir), "--workdir", str(workdir), *extra]
        return run_cli(RECIPE, argv, phase, nth, env)

    return run


@pytest.fixture(scope="module")
def reference(cli, tmp_path_factory):
    """An uninterrupted run: its workdir and outputs."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    completed = cli(workdir)
    assert completed.returncode == 0, completed.stderr
    result = outputs(workdir)
    history, metrics, best_epoch, _ = result
    assert len(history) == metrics["epochs_run"] == 4 and metrics["stopped_epoch"] == 4
    assert best_epoch + 1 == metrics["best_epoch"] == 2
    return workdir, result


def assert_same_run(workdir, reference):
    history, metrics, best_epoch, params = outputs(workdir)
    ref_history, ref_metrics, ref_best_epoch, ref_params = reference[1]
    assert history == ref_history  # bitwise: every logged float
    assert metrics == ref_metrics
    assert best_epoch == ref_best_epoch and params.keys() == ref_params.keys()
    for key in params:
        np.testing.assert_array_equal(params[key], ref_params[key], err_msg=key)


def latest_steps(workdir):
    latest = workdir / "checkpoints" / "latest"
    return sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit())


@pytest.mark.parametrize(
    "phase, nth",
    [
        ("after_config", 1),
        ("compile", 1),
        ("mid_epoch", 3),
        ("save_best", 2),
        ("save_latest", 3),
        ("seal", 4),
        ("final_evaluation", 2),
        ("metrics_json", 1),
    ],
)
def test_killed_at_any_phase_resumes_to_the_uninterrupted_run(cli, reference, tmp_path, phase, nth):
    workdir = tmp_path / "run"
    killed = cli(workdir, phase=phase, nth=nth)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if phase == "after_config":  # no dead end: without --resume, refused and pointed at it
        again = cli(workdir)
        assert again.returncode == 2 and "pass --resume" in again.stderr
    resumed = cli(workdir, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(workdir, reference)


def test_resuming_a_stopped_run_trains_nothing_more(cli, reference, tmp_path):
    """Early stopping had fired: a resume only finishes (the same outputs, no new checkpoint)."""
    workdir = tmp_path / "run"
    shutil.copytree(reference[0], workdir)
    (workdir / "metrics.json").unlink()  # as if killed during the final evaluation
    before = latest_steps(workdir)
    resumed = cli(workdir, "--resume", "--epochs", "5")  # fewer than the run's 10: it stopped
    assert resumed.returncode == 0, resumed.stderr
    assert latest_steps(workdir) == before
    assert_same_run(workdir, reference)
    assert json.loads((workdir / "config.json").read_text())["train"]["epochs"] == 10


def test_a_finished_run_can_be_extended(cli, tmp_path):
    """A run that used its whole epoch budget continues with ``--resume --epochs <more>``."""
    workdir = tmp_path / "run"
    first = cli(workdir, "--epochs", "1", "--patience", "5")
    assert first.returncode == 0, first.stderr
    extended = cli(workdir, "--epochs", "3", "--patience", "5", "--resume")
    assert extended.returncode == 0, extended.stderr
    whole = cli(tmp_path / "whole", "--epochs", "3", "--patience", "5")
    assert whole.returncode == 0, whole.stderr
    assert_same_run(workdir, (None, outputs(tmp_path / "whole")))
    config = (workdir / "config.json").read_text()
    assert json.loads(config)["train"]["epochs"] == 3
    # A smaller budget than the run has done is refused, and the run's files stay as they were.
    refused = cli(workdir, "--epochs", "2", "--patience", "5", "--resume")
    assert refused.returncode == 2 and "resume it with epochs >= 3" in refused.stderr
    assert (workdir / "config.json").read_text() == config


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(cli, reference, tmp_path):
    """Bytes flipped in the newest checkpoint's largest file (more cases: test_checkpoint.py)."""
    workdir = tmp_path / "run"
    shutil.copytree(reference[0], workdir)
    (workdir / "metrics.json").unlink()
    newest = workdir / "checkpoints" / "latest" / str(latest_steps(workdir)[-1])
    damage(largest_file(newest / "arrays"), "xor")
    resumed = cli(workdir, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from latest/" in resumed.stderr and str(newest.name) in resumed.stderr
    assert_same_run(workdir, reference)


def test_no_intact_checkpoint_is_one_line_naming_the_damage(cli, reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference[0], workdir)
    for step in latest_steps(workdir):
        damage(largest_file(workdir / "checkpoints" / "latest" / str(step) / "arrays"), "xor")
    resumed = cli(workdir, "--resume")
    assert resumed.returncode == 2
    assert resumed.stderr.count("\n") == 1 and "differs from its checksum" in resumed.stderr


def test_a_lost_best_checkpoint_is_rewritten_on_resume(cli, reference, tmp_path):
    """best/ deleted (more cases: test_checkpoint.py): the resumed run writes it again."""
    workdir = tmp_path / "run"
    shutil.copytree(reference[0], workdir)
    (workdir / "metrics.json").unlink()
    damage(workdir / "checkpoints" / "best", "delete")
    resumed = cli(workdir, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(workdir, reference)


def test_two_runs_at_once_one_wins_the_workdir(imdb_data_dir, env, tmp_path):
    workdir = tmp_path / "run"
    argv = [*FLAGS, "--data-dir", str(imdb_data_dir), "--workdir", str(workdir)]
    processes = [
        subprocess.Popen(
            cli_command(RECIPE, [*argv, "--seed", str(seed)]),
            cwd=REPO,
            env=cli_env(env),
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (7, 8)
    ]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in processes]
    assert sorted(code for code, _ in results) == [0, 2], results
    (winner,) = [seed for seed, (code, _) in zip((7, 8), results) if code == 0]
    (loser,) = [err for code, err in results if code == 2]
    assert loser.count("\n") == 1
    assert "in use by another run" in loser or "not empty" in loser
    assert json.loads((workdir / "config.json").read_text())["train"]["seed"] == winner
    best = workdir / "checkpoints" / "best"
    assert len([p for p in best.iterdir() if p.name.isdigit()]) == 1


def test_a_live_run_is_named_and_a_killed_one_is_stale(
    cli, reference, imdb_data_dir, env, tmp_path
):
    workdir = tmp_path / "run"
    argv = [*FLAGS, "--data-dir", str(imdb_data_dir), "--workdir", str(workdir)]
    holder = subprocess.Popen(
        cli_command(RECIPE, argv, "hang:mid_epoch", 2), cwd=REPO, env=cli_env(env)
    )
    deadline = time.time() + 300
    while not (workdir / "history.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    for extra in ((), ("--resume",)):
        second = cli(workdir, *extra)
        assert (
            second.returncode == 2 and f"in use by another run (pid {holder.pid}" in second.stderr
        )
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (workdir / ".rnnjax-claim").exists()  # left behind, but nobody holds it
    resumed = cli(workdir, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(workdir, reference)


@pytest.mark.parametrize("target", ["a file", "nothing", "a directory"])
def test_a_claim_file_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, target):
    """As root, opening a linked claim file would write the run's description into any file on
    the machine (or create one); a link in its place is refused, whatever it points to."""
    from rnnjax.workdir import CLAIM_FILE, Claim, WorkdirError

    victim = tmp_path / "victim"
    if target == "a file":
        victim.write_text("precious")
    workdir = tmp_path / "run"
    workdir.mkdir()
    if target == "a directory":  # not a link, but not a claim file either
        (workdir / CLAIM_FILE).mkdir()
    else:
        (workdir / CLAIM_FILE).symlink_to(victim)
    with pytest.raises(WorkdirError, match="is not a regular file.*remove it"):
        Claim.hold(str(workdir))
    assert (victim.read_text() == "precious") if target == "a file" else not victim.exists()
