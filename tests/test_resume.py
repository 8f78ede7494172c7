"""Crash and resume of the library (``fit`` with ``BackupAndRestore``) inside an epoch, one step
a chunk: killed or interrupted mid-epoch, the resumed run ends exactly like an uninterrupted one
(partial epoch statistics included). Kills at every phase of a CLI run: ``test_faults.py``."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resume_worker.py")


def _run(workdir, *flags):
    return subprocess.run(
        [sys.executable, WORKER, str(workdir), *flags], capture_output=True, text=True, timeout=300
    )


def _result(workdir):
    with open(os.path.join(workdir, "result.json")) as f:
        result = json.load(f)
    with np.load(os.path.join(workdir, "params.npz")) as params:
        return result, {k: params[k] for k in params.files}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("whole")
    completed = _run(workdir, "--per-step")
    assert completed.returncode == 0, completed.stderr
    return _result(workdir)


def _assert_same(result, reference):
    (history, params), (ref_history, ref_params) = result, reference
    assert history == ref_history  # bitwise: every logged float equal
    assert params.keys() == ref_params.keys()
    for key in params:
        np.testing.assert_array_equal(params[key], ref_params[key], err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["2:2"])
def test_sigkill_mid_epoch_then_resume(kill, uninterrupted, tmp_path):
    killed = _run(tmp_path, "--per-step", "--kill-at-step", kill)
    assert killed.returncode == -signal.SIGKILL
    resumed = _run(tmp_path, "--per-step")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same(_result(tmp_path), uninterrupted)


@pytest.mark.slow
def test_interrupt_mid_epoch_saves_the_position_and_resumes_exactly(uninterrupted, tmp_path):
    stopped = _run(tmp_path, "--per-step", "--interrupt-at-step", "3:2")
    assert stopped.returncode == 130, stopped.stderr
    assert not (tmp_path / "result.json").exists()
    resumed = _run(tmp_path, "--per-step")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same(_result(tmp_path), uninterrupted)
