"""Data-parallel training over a device mesh equals single-device training, in one process and in
two (each streaming only its share of the data)."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sharded_worker.py")


def _env(devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.mark.slow
def test_four_devices_equal_one(tmp_path):
    out = tmp_path / "result.npz"
    completed = subprocess.run(
        [sys.executable, WORKER, str(out)], env=_env(4), capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr
    with np.load(out) as result:
        assert int(result["devices"]) == 4
        np.testing.assert_allclose(result["sharded_loss"], result["single_loss"], atol=1e-5)
        np.testing.assert_allclose(result["sharded_val_loss"], result["single_val_loss"], atol=1e-5)
        params = [k for k in result.files if k.startswith("single[")]
        assert params
        for key in params:
            np.testing.assert_allclose(
                result["sharded" + key[len("single") :]], result[key], atol=1e-5, err_msg=key
            )


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_device(tmp_path):
    """Multi-host on one machine: two processes with two CPU devices each, over loopback."""
    single = tmp_path / "single.npz"
    completed = subprocess.run(
        [sys.executable, WORKER, str(single)],
        env=_env(1),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    port = _free_port()
    out = tmp_path / "multi.npz"
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                WORKER,
                str(out),
                "--process",
                str(i),
                "--processes",
                "2",
                "--port",
                str(port),
            ],
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr
    with np.load(out) as multi, np.load(single) as one:
        assert int(multi["devices"]) == 4
        np.testing.assert_allclose(multi["sharded_loss"], one["single_loss"], atol=1e-5)
        # Each process streamed only its share of every batch; metrics are the global ones.
        np.testing.assert_allclose(multi["stream_loss"], one["stream_loss"], atol=1e-5)
        np.testing.assert_allclose(multi["stream_auc"], one["stream_auc"], atol=1e-5)
        for key in one.files:
            if key.startswith("single["):
                np.testing.assert_allclose(
                    multi["sharded" + key[len("single") :]], one[key], atol=1e-5, err_msg=key
                )
