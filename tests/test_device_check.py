"""``benchmarks/device_check.sh`` in its CPU-only quick mode: it runs to its end in seconds and
writes the JSON and the markdown page it promises, the GPU parts skipped with their reasons."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "device_check.sh"
FRAMEWORKS = ("rnnjax-scan", "rnnjax-cudnn", "rnnjax-pallas")


@pytest.mark.slow
def test_quick_device_check_on_cpu_writes_its_json_and_markdown(tmp_path):
    env = os.environ | {"PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        ["bash", str(SCRIPT), "--quick", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["mode"] == "quick" and report["device"].split()[0] == "cpu"
    phases = {phase["name"]: phase["status"] for phase in report["phases"]}
    assert phases == {"mode": "info", "device": "ok", "tests": "ok", "speed": "ok"}
    assert report["tests"]["failed"] == 0 and report["tests"]["passed"] == 0
    assert report["tests"]["skipped"] > 0  # the gpu-marked tests, without a GPU

    results = {(r["framework"], r["k"]): r for r in report["speed"]["results"]}
    assert set(results) == {(name, k) for name in FRAMEWORKS for k in (1, 2)}
    for k in (1, 2):
        scan = results["rnnjax-scan", k]
        assert len(scan["epoch_seconds"]) == 2 and scan["median"] > 0
        assert scan["per_model"] == pytest.approx(scan["median"] / k)
        assert results["rnnjax-cudnn", k]["skipped"] == "cuDNN needs a GPU"
        assert "interprets" in results["rnnjax-pallas", k]["skipped"]

    markdown = (tmp_path / "device_check.md").read_text()
    assert "| lstm8 | rnnjax-scan | 2 |" in markdown
    assert "| lstm8 | rnnjax-cudnn | 1 | skipped: cuDNN needs a GPU |" in markdown
    assert "0 passed, 0 failed" in markdown and "| speed | ok |" in markdown
