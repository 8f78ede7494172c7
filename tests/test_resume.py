"""Crash and resume: a run SIGKILLed anywhere and resumed ends exactly like an uninterrupted one."""

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
    results = {}
    for mode in ("fused", "per_step"):
        workdir = tmp_path_factory.mktemp(mode)
        flags = ["--per-step"] if mode == "per_step" else []
        completed = _run(workdir, *flags)
        assert completed.returncode == 0, completed.stderr
        results[mode] = _result(workdir)
    return results


def _assert_same(result, reference):
    (history, params), (ref_history, ref_params) = result, reference
    assert history == ref_history  # bitwise: every logged float equal
    assert params.keys() == ref_params.keys()
    for key in params:
        np.testing.assert_array_equal(params[key], ref_params[key], err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["2:2", "4:1"])
def test_sigkill_mid_epoch_then_resume(kill, uninterrupted, tmp_path):
    killed = _run(tmp_path, "--per-step", "--kill-at-step", kill)
    assert killed.returncode == -signal.SIGKILL
    resumed = _run(tmp_path, "--per-step", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same(_result(tmp_path), uninterrupted["per_step"])


@pytest.mark.slow
@pytest.mark.parametrize("save", [1, 3])
def test_sigkill_mid_save_then_resume(save, uninterrupted, tmp_path):
    killed = _run(tmp_path, "--kill-in-save", str(save))
    assert killed.returncode == -signal.SIGKILL
    resumed = _run(tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same(_result(tmp_path), uninterrupted["fused"])
    leftovers = [
        name
        for root, dirs, _ in os.walk(tmp_path / "checkpoints")
        for name in dirs
        if "tmp" in name
    ]
    assert leftovers == []  # Orbax cleaned the half-written save


@pytest.mark.slow
def test_interrupt_mid_epoch_saves_the_position_and_resumes_exactly(uninterrupted, tmp_path):
    stopped = _run(tmp_path, "--per-step", "--interrupt-at-step", "3:2")
    assert stopped.returncode == 130, stopped.stderr
    assert not (tmp_path / "result.json").exists()
    resumed = _run(tmp_path, "--per-step", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same(_result(tmp_path), uninterrupted["per_step"])
