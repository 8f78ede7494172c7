"""The command line of every experiment: ``python -m experiments.<name> [flags]``.

The only module that reads ``argv``. A user's mistake (a bad flag value, missing data, a workdir in
use) ends with one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys

from rnnjax.experiment import Experiment, run
from rnnjax.summary import summary
from rnnjax.workdir import default_workdir

USAGE_ERROR = 2


class UsageError(Exception):
    """A mistake in how the command was called; its message names the fix."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def build_parser(experiment: Experiment) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"python -m experiments.{experiment.name}",
                     description=experiment.description)
    train = experiment.train
    parser.add_argument("--epochs", type=int, help=f"maximum epochs (default {train.epochs})")
    parser.add_argument("--batch-size", type=int, help=f"default {train.batch_size}")
    parser.add_argument("--seed", type=int, help=f"initialisation, dropout and shuffling seed "
                        f"(default {train.seed})")
    parser.add_argument("--patience", type=int, help=f"early-stopping patience (default "
                        f"{train.patience})")
    parser.add_argument("--workdir", help="output directory (default runs/<experiment>/<time>)")
    parser.add_argument("--data-dir", help="TFDS data dir (default $TFDS_DATA_DIR or TFDS' own)")
    parser.add_argument("--per-step", action="store_true",
                        help="dispatch step by step (a live progress bar) instead of one call "
                        "per epoch")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--summary", action="store_true", help="print the model summary and exit")
    return parser


def _check_workdir(workdir: str) -> None:
    if os.path.isdir(workdir) and os.listdir(workdir):
        raise UsageError(f"workdir {workdir!r} is not empty; choose another --workdir")
    parent = os.path.dirname(os.path.abspath(workdir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write to {parent!r}; choose a writable --workdir")


def main(experiment: Experiment, argv: list[str] | None = None) -> int:
    """Runs ``experiment`` with the command-line overrides; returns the exit status."""
    try:
        args = build_parser(experiment).parse_args(argv)
        overrides = {name: getattr(args, name) for name in ("epochs", "batch_size", "seed",
                                                            "patience")}
        try:
            experiment = experiment.replace(**{k: v for k, v in overrides.items() if v is not None})
        except ValueError as error:
            raise UsageError(str(error)) from None
        if args.summary:
            print(summary(experiment.model, experiment.data.maxlen))
            return 0
        workdir = args.workdir or default_workdir(experiment.name)
        _check_workdir(workdir)
        metrics = run(experiment, workdir, data_dir=args.data_dir, quiet=args.quiet,
                      per_step=args.per_step)
    except (UsageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    if not args.quiet:
        print(f"test_loss: {metrics['test_loss']:.4f} - test_accuracy: {metrics['test_accuracy']:.4f}"
              f" - outputs in {workdir}")
    return 0
