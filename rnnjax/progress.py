"""Keras' progress output for ``fit`` (``verbose=1``): ``Epoch e/E`` and a bar line per epoch.

``313/313 ━━━━━━━━━━━━━━━━━━━━ 1s 3ms/step - accuracy: 0.8616 - loss: 0.3201 - val_...``: keys
sorted as Keras 3 sorts its logs, values with 4 decimals (``.4e`` when ``|v| <= 1e-3``). On a TTY
the bar is redrawn in place while an epoch runs (per-step mode).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 20


def format_value(value: float) -> str:
    return f"{value:.4f}" if abs(value) > 1e-3 else f"{value:.4e}"


def format_time_per_step(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


def format_line(
    step: int, steps: int, elapsed: float, per_step: float, logs: dict[str, float], done: bool
) -> str:
    """One Keras progress line; ``elapsed`` is total seconds when ``done``, else the ETA."""
    filled = int(BAR_WIDTH * step / steps)
    # Keras draws the bar in two colours; without colour the unfilled part is a thin line.
    bar = "━" * BAR_WIDTH if done else "━" * filled + "─" * (BAR_WIDTH - filled)
    timing = f"{elapsed:.0f}s {format_time_per_step(per_step)}" if done else f"{elapsed:.0f}s"
    metrics = "".join(f" - {key}: {format_value(value)}" for key, value in sorted(logs.items()))
    return f"{step:{len(str(steps))}d}/{steps} {bar} {timing}{metrics}"


class Progress:
    """Prints ``fit``'s progress: nothing when ``quiet``, a live bar on a TTY, else a line an
    epoch."""

    def __init__(self, epochs: int, steps: int, quiet: bool = False, stream: TextIO | None = None):
        self.epochs = epochs
        self.steps = steps
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stdout
        self.live = not quiet and self.stream.isatty()
        self._start = 0.0
        self._after_first_step = 0.0
        self._last_draw = 0.0

    def print(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def epoch_begin(self, epoch: int) -> None:
        if self.epochs > 1:
            self.print(f"Epoch {epoch + 1}/{self.epochs}")
        self._start = self._last_draw = time.perf_counter()
        self._after_first_step = 0.0

    def step_end(self, step: int, logs: dict[str, float]) -> None:
        """After step ``step`` (1-based) of a per-step epoch, with the running epoch means."""
        now = time.perf_counter()
        if step == 1:
            self._after_first_step = now
        if not self.live or (now - self._last_draw < 0.05 and step < self.steps):
            return
        self._last_draw = now
        per_step = (now - self._after_first_step) / max(step - 1, 1)
        eta = per_step * (self.steps - step)
        line = format_line(step, self.steps, eta, per_step, logs, done=False)
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()

    def epoch_end(self, logs: dict[str, float]) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self._start
        # Keras excludes the first (compiling) step from the time per step when it can.
        if self._after_first_step and self.steps > 1:
            per_step = (time.perf_counter() - self._after_first_step) / (self.steps - 1)
        else:
            per_step = elapsed / self.steps
        line = format_line(self.steps, self.steps, elapsed, per_step, logs, done=True)
        self.stream.write(
            ("\r" if self.live else "") + line + ("\x1b[K" if self.live else "") + "\n"
        )
        self.stream.flush()
