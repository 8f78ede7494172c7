"""The device check's one JSON and one markdown page, from what its phases left in a directory.

    python benchmarks/device_report.py OUT_DIR [TOTAL_SECONDS]

Reads ``OUT_DIR/phases.tsv`` (one line per phase: name, status, seconds, detail; written by
``device_check.sh``), ``OUT_DIR/tests.xml`` (pytest's JUnit XML) and ``OUT_DIR/speed.json`` and
``speed.md`` (``device_speed.py``), any of which may be missing after a failed phase, and writes
``OUT_DIR/device_check.json`` and ``OUT_DIR/device_check.md``. Standard library only, so it runs
even when the installation failed.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

IMPLEMENTATIONS = ("auto", "fused", "cudnn", "pallas", "scan")


def read_phases(path: Path) -> list[dict]:
    """The phases in the order they ran."""
    if not path.exists():
        return []
    phases = []
    for line in path.read_text().splitlines():
        name, status, seconds, detail = (line.split("\t") + ["", "", ""])[:4]
        phases.append(
            {"name": name, "status": status, "seconds": float(seconds or 0), "detail": detail}
        )
    return phases


def read_tests(path: Path) -> dict | None:
    """Outcome counts, the failed tests, and per implementation the Keras parity cases run and
    their largest difference (``max_abs_diff`` properties)."""
    if not path.exists():
        return None
    root = ElementTree.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failed, parity = [], {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
            failed.append(name)
            continue
        if case.find("skipped") is not None:
            counts["skipped"] += 1
            continue
        counts["passed"] += 1
        diffs = [
            float(p.get("value")) for p in case.iter("property") if p.get("name") == "max_abs_diff"
        ]
        ids = re.search(r"\[(.*)\]", case.get("name") or "")
        implementation = next(
            (part for part in (ids.group(1).split("-") if ids else ()) if part in IMPLEMENTATIONS),
            None,
        )
        if diffs and implementation:
            entry = parity.setdefault(implementation, {"cases": 0, "max_abs_diff": 0.0})
            entry["cases"] += 1
            entry["max_abs_diff"] = max(entry["max_abs_diff"], *diffs)
    return {**counts, "failed_tests": failed, "keras_parity": parity}


def markdown(report: dict, speed_table: str | None) -> str:
    lines = ["# Device check", ""]
    lines.append(f"Device: {report['device'] or 'unknown'}. Mode: {report['mode']}. ")
    lines.append(f"Total: {report['seconds']:.0f} s.")
    lines += ["", "| phase | status | seconds | detail |", "|---|---|---|---|"]
    for phase in report["phases"]:
        detail = phase["detail"].replace("|", "/")
        lines.append(f"| {phase['name']} | {phase['status']} | {phase['seconds']:.0f} | {detail} |")
    lines += ["", "## Tests", ""]
    tests = report["tests"]
    if tests is None:
        lines.append("No test results (the phase did not run or wrote no XML).")
    else:
        lines.append(
            f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped"
        )
        lines += [f"- failed: `{name}`" for name in tests["failed_tests"]]
        if tests["keras_parity"]:
            lines += ["", "| implementation | Keras parity cases | max abs diff |", "|---|---|---|"]
            for name, entry in tests["keras_parity"].items():
                lines.append(f"| {name} | {entry['cases']} | {entry['max_abs_diff']:.2e} |")
    lines += ["", "## Speed", ""]
    lines.append(speed_table or "No speed results (the phase did not run or failed).")
    return "\n".join(lines) + "\n"


def main(out_dir: str, total_seconds: float | None = None) -> None:
    out = Path(out_dir)
    phases = read_phases(out / "phases.tsv")
    speed = json.loads((out / "speed.json").read_text()) if (out / "speed.json").exists() else None
    speed_table = (out / "speed.md").read_text().strip() if (out / "speed.md").exists() else None
    device = next((p["detail"] for p in phases if p["name"] == "device"), "")
    report = {
        "device": device,
        "mode": next((p["detail"] for p in phases if p["name"] == "mode"), ""),
        # Phases may overlap (an installation in the background): the script's own clock.
        "seconds": total_seconds
        if total_seconds is not None
        else sum(p["seconds"] for p in phases),
        "phases": phases,
        "tests": read_tests(out / "tests.xml"),
        "speed": speed,
    }
    (out / "device_check.json").write_text(json.dumps(report, indent=1))
    (out / "device_check.md").write_text(markdown(report, speed_table))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else None)
