"""Fault injection for the reliability tests: kill a run at a chosen phase, damage files.

As a script, runs an experiment's command line in this process and SIGKILLs it at a phase:

    python tests/faults.py [hang:]PHASE N RECIPE [flags of python -m experiments.RECIPE ...]

``PHASE`` (the N-th time it happens, 1-based) is one of ``PHASES``; ``none`` runs without a fault.
With ``hang:`` the process stops there and waits to be killed (a run that holds its workdir).
As a module, ``run_cli`` starts such a process, ``damage`` spoils a file the way disks and users do
and ``outputs`` reads back what a run left (history, metrics without timings, best checkpoint).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PHASES = {
    "none": "no fault",
    "after_config": "right after config.json is written, before any checkpoint exists",
    "compile": "while the training epoch is being traced and compiled",
    "mid_epoch": "while a compiled epoch runs (dispatched, not finished)",
    "save_best": "while a best checkpoint is being written (Orbax's async save in flight)",
    "save_latest": "while a latest checkpoint is being written",
    "seal": "after a checkpoint is committed, before its manifest is written",
    "final_evaluation": "during the final train/validation/test evaluation",
    "metrics_json": "while metrics.json is written (before its rename)",
}


def _die() -> None:
    if _HANG:
        while True:
            time.sleep(60)
    os.kill(os.getpid(), signal.SIGKILL)


_HANG = []


def _kill_on_call(owner, name: str, nth: int, before: bool = False, when=lambda *a, **k: True):
    """Replaces ``owner.name`` with a wrapper that dies on its ``nth`` matching call, before or
    after running the original."""
    original = getattr(owner, name)
    calls = []

    def wrapper(*args, **kwargs):
        matched = when(*args, **kwargs)
        if matched:
            calls.append(1)
        if matched and before and len(calls) == nth:
            _die()
        result = original(*args, **kwargs)
        if matched and not before and len(calls) == nth:
            _die()
        return result

    setattr(owner, name, wrapper)


def install(phase: str, nth: int) -> None:
    """Arms the fault ``phase`` to fire the ``nth`` time it is reached."""
    from rnnjax import checkpoint, experiment, steps, train

    if phase.startswith("hang:"):
        _HANG.append(True)
        phase = phase.removeprefix("hang:")

    def named(suffix):
        return lambda path, *a, **k: str(path).endswith(suffix)

    if phase == "after_config":
        _kill_on_call(experiment, "write_atomic", nth, when=named("config.json"))
    elif phase == "compile":  # train_step is called while the chunk of steps is traced
        _kill_on_call(steps, "train_step", nth, before=True)
    elif phase == "mid_epoch":  # a compiled chunk dispatched, not finished
        _kill_on_call(train, "_train_steps", nth)
    elif phase == "save_best":
        _kill_on_call(checkpoint.ModelCheckpoint, "_save", nth)
    elif phase == "save_latest":
        _kill_on_call(checkpoint.BackupAndRestore, "_save", nth)
    elif phase == "seal":
        _kill_on_call(checkpoint, "write_manifest", nth, before=True)
    elif phase == "final_evaluation":
        _kill_on_call(experiment, "evaluate", nth, before=True)
    elif phase == "metrics_json":
        _kill_on_call(
            os, "replace", nth, before=True, when=lambda src, dst: str(dst).endswith("metrics.json")
        )
    elif phase != "none":
        raise ValueError(f"unknown phase {phase!r}; one of {sorted(PHASES)}")


def cli_command(recipe: str, argv: list[str], phase: str = "none", nth: int = 1) -> list[str]:
    """The command line of ``python -m experiments.<recipe> <argv>`` killed at ``phase``."""
    return [sys.executable, __file__, phase, str(nth), recipe, *argv]


def cli_env(env: dict | None = None) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}


def run_cli(
    recipe: str, argv: list[str], phase: str = "none", nth: int = 1, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Runs ``cli_command`` to its end (or its fault)."""
    return subprocess.run(
        cli_command(recipe, argv, phase, nth),
        cwd=REPO,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def damage(path: Path, how: str) -> None:
    """``xor``: flips 64 bytes in the middle; ``truncate``: cuts the file in half; ``delete``:
    removes it (or the whole directory)."""
    path = Path(path)
    if how == "delete":
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()
        return
    content = bytearray(path.read_bytes())
    middle = len(content) // 2
    if how == "xor":
        content[middle : middle + 64] = bytes(b ^ 0xA5 for b in content[middle : middle + 64])
    elif how == "truncate":
        content = content[:middle]
    else:
        raise ValueError(f"unknown damage {how!r}")
    path.write_bytes(bytes(content))


def largest_file(directory: Path) -> Path:
    return max(
        (p for p in Path(directory).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )


def outputs(workdir: Path) -> tuple[list[dict], dict, int, dict]:
    """``(history, metrics, best epoch, best params)`` of a finished run, timings left out."""
    import numpy as np

    from rnnjax.checkpoint import load_model

    workdir = Path(workdir)
    history = json.loads((workdir / "history.json").read_text())["epochs"]
    metrics = json.loads((workdir / "metrics.json").read_text())
    params = load_model(str(workdir / "checkpoints")).params
    best = workdir / "checkpoints" / "best"
    (best_epoch,) = [int(p.name) for p in best.iterdir() if p.name.isdigit()]
    flat = {
        "/".join(str(k) for k in path): np.asarray(leaf) for path, leaf in _leaves_with_path(params)
    }
    return (
        [{k: v for k, v in e.items() if k != "seconds"} for e in history],
        {k: v for k, v in metrics.items() if k != "seconds"},
        best_epoch,
        flat,
    )


def _leaves_with_path(tree):
    import jax

    return [
        (tuple(getattr(k, "key", k) for k in path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    ]


if __name__ == "__main__":
    phase, nth, recipe, *flags = sys.argv[1:]
    install(phase, int(nth))
    from rnnjax.cli import command

    command(importlib.import_module(f"experiments.{recipe}").EXPERIMENT, flags)
