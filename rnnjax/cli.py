"""The command line of every experiment: ``python -m experiments.<name> [flags]``.

The only module that reads ``argv``. A user's mistake (a bad flag value, missing data, a workdir in
use) ends with one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from rnnjax.experiment import Experiment, run, run_ensemble
from rnnjax.layers import IMPLEMENTATIONS
from rnnjax.summary import summary
from rnnjax.workdir import default_workdir

USAGE_ERROR = 2


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
        choices=IMPLEMENTATIONS,
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
    if not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"learning rates must be > 0, got {text!r}")
    return values


def _check_workdir(workdir: str, resume: bool) -> None:
    if resume:
        if not os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise UsageError(f"nothing to resume in {workdir!r}: it has no checkpoints/")
        return
    if os.path.isdir(workdir) and os.listdir(workdir):
        raise UsageError(
            f"workdir {workdir!r} is not empty; pass --resume to continue that run "
            "or choose another --workdir"
        )
    parent = os.path.dirname(os.path.abspath(workdir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK) or not os.path.isdir(parent):
        raise UsageError(
            f"cannot create {workdir!r} ({parent!r} is not a writable directory); "
            "choose another --workdir"
        )


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
    try:
        args = build_parser(experiment).parse_args(argv)
        overrides = {
            name: getattr(args, name) for name in ("epochs", "batch_size", "seed", "patience")
        }
        try:
            experiment = experiment.replace(**{k: v for k, v in overrides.items() if v is not None})
        except ValueError as error:
            raise UsageError(str(error)) from None
        if args.summary:
            print(summary(experiment.model, experiment.data.maxlen))
            return 0
        if args.resume and not args.workdir:
            raise UsageError("--resume needs the --workdir of the run to continue")
        if args.num_seeds < 1:
            raise UsageError(f"--num-seeds must be >= 1, got {args.num_seeds}")
        many = args.num_seeds > 1 or args.learning_rates is not None
        if many and (args.resume or args.per_step or args.devices):
            raise UsageError(
                "--num-seeds/--learning-rates runs cannot use --resume, --per-step or --devices"
            )
        workdir = args.workdir or default_workdir(experiment.name)
        _check_workdir(workdir, args.resume)
        if many:
            seeds = range(experiment.train.seed, experiment.train.seed + args.num_seeds)
            metrics = run_ensemble(
                experiment,
                workdir,
                list(seeds),
                args.learning_rates,
                data_dir=args.data_dir,
                manual_dir=args.manual_dir,
                quiet=args.quiet,
                implementation=args.implementation,
            )
            print(
                f"{len(metrics['models'])} models: val_accuracy "
                f"{metrics['val_accuracy_mean']:.4f} ± {metrics['val_accuracy_std']:.4f} - "
                f"test_accuracy {metrics['test_accuracy_mean']:.4f} ± "
                f"{metrics['test_accuracy_std']:.4f} - outputs in {workdir}"
            )
            return 0
        interrupt = _Interrupt()
        previous = signal.signal(signal.SIGINT, interrupt.handle)
        try:
            metrics = run(
                experiment,
                workdir,
                data_dir=args.data_dir,
                manual_dir=args.manual_dir,
                quiet=args.quiet,
                per_step=args.per_step,
                resume=args.resume,
                should_stop=interrupt,
                devices=args.devices,
                implementation=args.implementation,
            )
        finally:
            signal.signal(signal.SIGINT, previous)
    except (UsageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    if metrics is None:
        command = " ".join(
            [
                "python -m",
                f"experiments.{experiment.name}",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        )
        if "--resume" not in command:
            command += " --resume"
        if "--workdir" not in command:
            command += f" --workdir {workdir}"
        print(f"Saved. Resume with: {command}", file=sys.stderr)
        return 130
    if not args.quiet:
        print(
            f"test_loss: {metrics['test_loss']:.4f} - test_accuracy: {metrics['test_accuracy']:.4f}"
            f" - outputs in {workdir}"
        )
    return 0
