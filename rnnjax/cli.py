"""The command line of every experiment: ``python -m experiments.<name> [flags]``.

The only module that reads ``argv``. Exit status: 0 done; 2 a user's mistake (a bad flag value,
missing or damaged data, a workdir in use, a damaged checkpoint, too little memory for the batch),
one line on stderr and nothing left written; 3 training stopped on a non-finite loss (one line on
stderr, even with ``--quiet``; the outputs are written); 130 interrupted by Ctrl-C (saved; the
line printed resumes it).
"""

from __future__ import annotations

import argparse
import atexit
import math
import os
import shlex
import signal
import sys
import warnings
from typing import NoReturn, TextIO

import absl.logging
import jax
import numpy as np
import tensorflow_datasets as tfds

from rnnjax.experiment import Experiment, run, run_ensemble
from rnnjax.summary import summary
from rnnjax.workdir import default_workdir

USAGE_ERROR = 2
DIVERGED = 3
INTERRUPTED = 130
MAX_MODELS = 4096  # --num-seeds x --learning-rates: K models in memory at once


class UsageError(Exception):
    """A mistake in how the command was called; its message names the fix."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def build_parser(experiment: Experiment) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"python -m experiments.{experiment.name}", description=experiment.description
    )
    train = experiment.train
    parser.add_argument("--epochs", type=int, help=f"maximum epochs (default {train.epochs})")
    parser.add_argument("--batch-size", type=int, help=f"default {train.batch_size}")
    parser.add_argument(
        "--seed",
        type=int,
        help=f"initialisation, dropout and shuffling seed (default {train.seed})",
    )
    parser.add_argument(
        "--patience", type=int, help=f"early-stopping patience (default {train.patience})"
    )
    parser.add_argument("--workdir", help="output directory (default runs/<experiment>/<time>)")
    parser.add_argument(
        "--data-dir",
        help="TFDS data dir (default $TFDS_DATA_DIR, else "
        "~/tensorflow_datasets); prepared there on first use",
    )
    parser.add_argument(
        "--manual-dir",
        help="folder holding the dataset's archive "
        "(aclImdb_v1.tar.gz, reuters21578.tar.gz) to prepare offline",
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="allow preparing (writing) the dataset in --data-dir or $TFDS_DATA_DIR when it is "
        "not there; without it only ~/tensorflow_datasets (used when neither is set) is written",
    )
    parser.add_argument(
        "--per-step",
        action="store_true",
        help="dispatch step by step (a live progress bar) instead of one call per epoch",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --workdir from its latest checkpoint",
    )
    parser.add_argument(
        "--devices",
        type=int,
        help="split each batch over N devices (data parallel; on CPU needs "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N)",
    )
    parser.add_argument(
        "--num-seeds",
        type=int,
        default=1,
        help="train K models (seeds --seed .. --seed+K-1) at once, vmapped",
    )
    parser.add_argument(
        "--learning-rates",
        type=_floats,
        help="comma-separated learning rates: a grid, times --num-seeds",
    )
    parser.add_argument(
        "--implementation",
        # The accelerator paths ('cudnn', 'pallas') stay off the CLI until a device has run them.
        choices=("auto", "scan", "fused"),
        default="auto",
        help="recurrent time loop: fused CPU kernels where they apply (auto, default), always "
        "the flax scan, or the kernels or an error (fused)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--summary", action="store_true", help="print the model summary and exit")
    return parser


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from None
    # Training runs in float32: a rate that is 0 there would train nothing.
    if not all(math.isfinite(v) and np.float32(v) > 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"learning rates must be finite and > 0 in float32, got {text!r}"
        )
    if len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(
            f"learning rates repeat in {text!r}: a model would be trained twice"
        )
    return values


class _Interrupt:
    """Ctrl-C sets a flag the training loop polls, so the current step finishes and is saved."""

    def __init__(self):
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nInterrupt: finishing the current step and saving (Ctrl-C again to abort)",
            file=sys.stderr,
            flush=True,
        )


def main(experiment: Experiment, argv: list[str] | None = None) -> int:
    """Runs ``experiment`` with the command-line overrides; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return _main(experiment, argv)
    except (UsageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:  # a second Ctrl-C: stopped without saving
        print("\naborted: nothing saved since the last checkpoint", file=sys.stderr)
        return INTERRUPTED
    except OSError as error:  # an output path the run cannot write (a directory, immutable)
        path = error.filename2 or error.filename  # a rename's target, else the file
        where = f" {path}" if path else ""
        print(f"error: cannot write{where}: {error.strerror or error}", file=sys.stderr)
        return USAGE_ERROR
    except (jax.errors.JaxRuntimeError, MemoryError) as error:
        if isinstance(error, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" not in str(error):
            raise
        print(
            f"error: out of memory ({str(error).splitlines()[0][:200]}); use a smaller "
            "--batch-size (or fewer --num-seeds)",
            file=sys.stderr,
        )
        return USAGE_ERROR


def command(experiment: Experiment, argv: list[str] | None = None) -> NoReturn:
    """``python -m experiments.<name>``: ``main``, then the process ends with its status.

    The process ends without tearing the interpreter down (``os._exit`` after the exit
    handlers): freeing every module and JAX's runtime took 0.7-0.9 s after each run on the
    development machine, and by then everything the run wrote is closed and in place.
    """
    sys.stdout = _OutlivesItsReader(sys.stdout)
    # Orbax logs through absl from its threads, a failed save once per thread and item (a full
    # disk: hundreds of lines); the run's own error line says what failed.
    absl.logging.set_verbosity(absl.logging.FATAL)
    status = main(experiment, argv)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away: nothing left to tell it
            pass
    atexit._run_exitfuncs()
    os._exit(status)


class _OutlivesItsReader:
    """Standard output that goes on when its reader goes away (``... | head``): the run trains
    to its end, the rest of its output discarded, as with ``--quiet``."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def _main(experiment: Experiment, argv: list[str]) -> int:
    args = build_parser(experiment).parse_args(argv)
    overrides = {name: getattr(args, name) for name in ("epochs", "batch_size", "seed", "patience")}
    try:
        experiment = experiment.replace(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.summary:
        print(summary(experiment.model, experiment.data.maxlen))
        return 0
    if args.workdir is not None and not args.workdir.strip():
        raise UsageError("--workdir is empty; pass a directory (or leave it out for the default)")
    if args.resume and not args.workdir:
        raise UsageError("--resume needs the --workdir of the run to continue")
    if args.devices is not None and args.devices < 1:
        raise UsageError(f"--devices must be >= 1, got {args.devices}")
    if args.num_seeds < 1:
        raise UsageError(f"--num-seeds must be >= 1, got {args.num_seeds}")
    models = args.num_seeds * len(args.learning_rates or [None])
    if models > MAX_MODELS:
        raise UsageError(f"--num-seeds x --learning-rates is {models} models; at most {MAX_MODELS}")
    many = args.num_seeds > 1 or args.learning_rates is not None
    if many and (args.resume or args.per_step or args.devices):
        raise UsageError(
            "--num-seeds/--learning-rates runs cannot use --resume, --per-step or --devices"
        )
    workdir = os.path.expanduser(args.workdir) if args.workdir else default_workdir(experiment.name)
    if args.quiet:
        tfds.disable_progress_bar()  # preparing a dataset draws TFDS' bars otherwise
    data = dict(data_dir=args.data_dir, manual_dir=args.manual_dir, prepare=args.prepare or None)
    if many:
        seeds = range(experiment.train.seed, experiment.train.seed + args.num_seeds)
        metrics = run_ensemble(
            experiment,
            workdir,
            list(seeds),
            args.learning_rates,
            quiet=args.quiet,
            implementation=args.implementation,
            **data,
        )
        diverged = f" ({metrics['diverged']} diverged, left out)" if metrics["diverged"] else ""
        print(
            f"{len(metrics['models'])} models{diverged}: val_accuracy "
            f"{metrics['val_accuracy_mean']:.4f} ± {metrics['val_accuracy_std']:.4f} - "
            f"test_accuracy {metrics['test_accuracy_mean']:.4f} ± "
            f"{metrics['test_accuracy_std']:.4f} - outputs in {workdir}"
        )
        if metrics["diverged"] == len(metrics["models"]):
            print(
                f"error: every model's loss became non-finite (lower the learning rates); "
                f"outputs in {workdir}",
                file=sys.stderr,
            )
            return DIVERGED
        return 0
    interrupt = _Interrupt()
    # A batch scheduler's SIGTERM ends the run as Ctrl-C does: saved, resumable.
    previous = {
        sig: signal.signal(sig, interrupt.handle) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        metrics = run(
            experiment,
            workdir,
            quiet=args.quiet,
            per_step=args.per_step,
            resume=args.resume,
            should_stop=interrupt,
            devices=args.devices,
            implementation=args.implementation,
            **data,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if metrics is None:
        command = ["python", "-m", f"experiments.{experiment.name}", *argv]
        if "--resume" not in command:
            command.append("--resume")
        if args.workdir is None:
            command += ["--workdir", workdir]
        print(f"Saved. Resume with: {shlex.join(command)}", file=sys.stderr)
        return INTERRUPTED
    if metrics["terminated_on_nan_at"] is not None:
        epoch, step = metrics["terminated_on_nan_at"]
        print(
            f"error: training stopped at epoch {epoch}, step {step}: the loss is not finite "
            f"(lower the learning rate); outputs in {workdir}",
            file=sys.stderr,
        )
        return DIVERGED
    if not args.quiet:
        print(
            f"test_loss: {metrics['test_loss']:.4f} - test_accuracy: {metrics['test_accuracy']:.4f}"
            f" - outputs in {workdir}"
        )
    return 0
