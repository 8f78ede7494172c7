"""A recipe's command line with a clock on its phases: where ``python -m experiments.<recipe>``
spends its seconds, measured inside the process without changing what it does.

    RNNJAX_BENCH_START=<time.time()> python benchmarks/workers/rnnjax_phases.py OUT.json RECIPE \
        [--without CLASS,...] [flags of python -m experiments.RECIPE]

Like ``tests/faults.py`` it replaces functions and callback methods with wrappers, then runs the
recipe's ``rnnjax.cli.command`` in this process. Each wrapper adds its call's wall seconds to a
phase. Phases nest: ``run`` and ``fit`` hold the others and keep only the time no inner phase
took; every other phase keeps the calls inside it (the final evaluations run ``_validate`` too,
and count as final evaluations). Compilation is JAX's own account (``jax.monitoring`` durations
of tracing, lowering to MLIR and XLA compilation), given to the phase that compiled.
``$RNNJAX_BENCH_START`` is the ``time.time()`` of whoever started this process, just before it
did; the interpreter's start and the imports are measured from it.

``--without ModelCheckpoint,BackupAndRestore`` leaves those callbacks out of the recipe's list (a
measurement of what they cost; they do not change the training). OUT.json gets ``seconds`` (per
phase), ``compile_seconds``, ``calls``, the CLI's exit status and the clock readings.
"""

from __future__ import annotations

import time

TOP = time.time()  # before any import: the interpreter has started

import collections  # noqa: E402
import dataclasses  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402

# JAX's compile-time events; their sum is the compilation of one jitted call.
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
CHECKPOINTS = ("ModelCheckpoint", "BackupAndRestore")
OTHER_CALLBACKS = ("EarlyStopping", "HistoryFile", "TerminateOnNaN", "Interrupt", "History")


@dataclasses.dataclass
class _Frame:
    phase: str
    holds: bool  # inner phases are timed apart (else they count as this one)
    start: float
    inner: float = 0.0


class Clock:
    """Wall seconds per phase, each call counted once: in the innermost phase that holds others."""

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.compile_seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self._stack: list[_Frame] = []

    def wrap(self, owner, name: str, phase: str | Callable[[], str], holds: bool = False) -> None:
        """Replaces ``owner.name`` with a wrapper that times its calls as ``phase`` (a name, or a
        function giving one per call)."""
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            if self._stack and not self._stack[-1].holds:
                return original(*args, **kwargs)  # part of the phase around it
            frame = _Frame(phase() if callable(phase) else phase, holds, time.perf_counter())
            self._stack.append(frame)
            try:
                return original(*args, **kwargs)
            finally:
                self._stack.pop()
                elapsed = time.perf_counter() - frame.start
                self.seconds[frame.phase] += elapsed - frame.inner
                self.calls[frame.phase] += 1
                if self._stack:
                    self._stack[-1].inner += elapsed

        setattr(owner, name, timed)

    def compiled(self, event: str, seconds: float, **_) -> None:
        """A ``jax.monitoring`` duration listener: compile time, given to the current phase."""
        if event in COMPILE_EVENTS:
            self.compile_seconds[self._stack[-1].phase if self._stack else "outside"] += seconds


def install(clock: Clock, without: set[str]) -> None:
    """Wraps what a recipe run calls, by phase."""
    import jax

    from rnnjax import callbacks, checkpoint, cli, early_stopping, experiment, train

    jax.monitoring.register_event_duration_secs_listener(clock.compiled)
    clock.wrap(cli, "main", "command line, messages", holds=True)
    # Each function is wrapped where its caller looks it up: cli and experiment import run and
    # fit by name.
    clock.wrap(cli, "run", "run: claim, callbacks built, metrics.json", holds=True)
    clock.wrap(experiment, "load_splits", "data: cached load, pad, split")
    clock.wrap(experiment, "_checked", "data: cached load, pad, split")
    clock.wrap(experiment, "create_state", "state: model, init_params, optimizer")
    clock.wrap(experiment, "_write_run_files", "run files: config, summary, model.png")
    clock.wrap(
        experiment, "fit", "fit: setup (data to device, checks, zero stats), loop", holds=True
    )
    epochs = iter(["first epoch (compile + train)"])
    clock.wrap(train, "_train_epoch", lambda: next(epochs, "epochs 2..n: train"))
    clock.wrap(train, "_validate", "validation after each epoch")
    clock.wrap(experiment, "history_png", "plots: loss.png, accuracy.png")
    clock.wrap(experiment, "evaluate", "final evaluations: train, val, test")
    classes = {
        "ModelCheckpoint": checkpoint.ModelCheckpoint,
        "BackupAndRestore": checkpoint.BackupAndRestore,
        "EarlyStopping": early_stopping.EarlyStopping,
        "HistoryFile": callbacks.HistoryFile,
        "TerminateOnNaN": callbacks.TerminateOnNaN,
        "Interrupt": callbacks.Interrupt,
        "History": callbacks.History,
    }
    for name, cls in classes.items():
        phase = "checkpoints: save, seal, close" if name in CHECKPOINTS else "other callbacks"
        for hook in (*callbacks.CallbackList.HOOKS, "release"):
            if hook in vars(cls):
                clock.wrap(cls, hook, phase)
    if without:
        built = experiment._callbacks
        experiment._callbacks = lambda *args: [
            c for c in built(*args) if type(c).__name__ not in without
        ]


def main(argv: list[str]) -> None:
    out, recipe, *flags = argv
    without = set()
    if flags[:1] == ["--without"]:
        without, flags = set(flags[1].split(",")), flags[2:]
    clock = Clock()
    install(clock, without)
    module = importlib.import_module(f"experiments.{recipe}")
    from rnnjax import cli

    timed_main = cli.main

    def main_then_record(*args):
        started = time.time()
        status = timed_main(*args)
        ended = time.time()
        with open(out, "w") as f:
            json.dump(
                {
                    "status": status,
                    "process_start": float(os.environ.get("RNNJAX_BENCH_START", TOP)),
                    "interpreter_ready": TOP,
                    "main_started": started,
                    "main_ended": ended,
                    "seconds": clock.seconds,
                    "compile_seconds": clock.compile_seconds,
                    "calls": clock.calls,
                    "without": sorted(without),
                },
                f,
                indent=1,
            )
        return status

    cli.main = main_then_record
    cli.command(module.EXPERIMENT, flags)  # ends the process as the recipe's command does


if __name__ == "__main__":
    main(sys.argv[1:])
