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


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_four_devices_and_two_processes_equal_one_device(tmp_path):
    """Data parallel on four CPU devices in one process, and multi-host on one machine (two
    processes with two devices each, over loopback), against one device: the three run at once."""
    one_process, two_processes = tmp_path / "one_process.npz", tmp_path / "two_processes.npz"
    port = str(_free_port())
    commands = [([str(one_process)], _env(4))] + [
        ([str(two_processes), "--process", str(i), "--processes", "2", "--port", port], _env(2))
        for i in range(2)
    ]
    workers = [
        subprocess.Popen(
            [sys.executable, WORKER, *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv, env in commands
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr
    with np.load(one_process) as one, np.load(two_processes) as two:
        assert int(one["devices"]) == int(two["devices"]) == 4
        np.testing.assert_allclose(one["sharded_val_loss"], one["single_val_loss"], atol=1e-5)
        params = [k for k in one.files if k.startswith("single[")]
        assert params
        for run in (one, two):
            np.testing.assert_allclose(run["sharded_loss"], one["single_loss"], atol=1e-5)
            for key in params:
                np.testing.assert_allclose(
                    run["sharded" + key[len("single") :]], one[key], atol=1e-5, err_msg=key
                )
            # Streamed: each process read only its share of every batch; the metrics are the
            # global ones, as on one device.
            for name in ("stream_loss", "stream_auc"):
                np.testing.assert_allclose(run[name], one[f"one_device_{name}"], atol=1e-5)
