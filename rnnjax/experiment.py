"""An experiment is a config: data, model and training as frozen data, and ``run`` to carry it out.

``run`` is the tutorials' script: load and pad the data, split off validation, compile (optimizer,
loss), fit with early stopping and a best-only checkpoint, restore the best weights, evaluate on
train/validation/test, and write the outputs to a work directory:

``history.json`` (after every epoch), ``metrics.json``, ``summary.txt``, ``loss.png``,
``accuracy.png``, ``model.png``, ``config.json`` and ``checkpoints/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Literal

import jax
import numpy as np

from rnnjax.batches import seed_key, steps_per_epoch
from rnnjax.checkpoint import MANIFEST, Checkpoints
from rnnjax.data import imdb, pad_sequences, reuters, train_validation_split
from rnnjax.early_stopping import EarlyStopping, monitor_direction
from rnnjax.ensemble import evaluate_ensemble, fit_ensemble, stack
from rnnjax.losses import LOSSES
from rnnjax.models import Classifier, ModelConfig, count_params, init_params
from rnnjax.optimizers import OPTIMIZERS, get_optimizer
from rnnjax.plots import history_png, model_png
from rnnjax.progress import Progress
from rnnjax.sharding import data_mesh
from rnnjax.summary import summary
from rnnjax.train import FitResult, evaluate, fit
from rnnjax.train_state import TrainState
from rnnjax.validation import check_loss
from rnnjax.workdir import Claim, write_atomic


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``load_data`` + ``pad_sequences`` + a validation split, as the tutorials do them."""

    dataset: Literal["imdb", "reuters"] = "imdb"
    num_words: int = 500
    maxlen: int = 100
    padding: Literal["pre", "post"] = "pre"
    truncating: Literal["pre", "post"] = "pre"
    validation_split: float = 0.2
    split_seed: int = 42
    test_split: float = 0.2  # Reuters' train/test split of its single pool

    def __post_init__(self):
        if self.dataset not in ("imdb", "reuters"):
            raise ValueError(f"dataset must be 'imdb' or 'reuters', got {self.dataset!r}")
        if self.maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {self.maxlen}")
        for name in ("padding", "truncating"):
            if getattr(self, name) not in ("pre", "post"):
                raise ValueError(f"{name} must be 'pre' or 'post', got {getattr(self, name)!r}")
        for name in ("validation_split", "test_split"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class Splits:
    """Padded ``(ids [N, T] int32, labels [N])`` for training, validation and test."""

    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def load_splits(
    config: DataConfig,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    prepare: bool | None = None,
) -> Splits:
    """The tutorials' data preparation: ``load_data(num_words)``, ``pad_sequences(maxlen,
    padding, truncating)`` on both splits, and a seeded validation split of the training set.

    ``data_dir``, ``manual_dir``, ``prepare``: where the dataset is read and whether it may be
    prepared there (``rnnjax.data.imdb.load``)."""
    where = dict(data_dir=data_dir, manual_dir=manual_dir, prepare=prepare)
    if config.dataset == "imdb":
        dataset = imdb.load(num_words=config.num_words, **where)
    else:
        dataset = reuters.load(num_words=config.num_words, test_split=config.test_split, **where)

    def pad(sequences):
        return pad_sequences(
            sequences, maxlen=config.maxlen, padding=config.padding, truncating=config.truncating
        )

    train, validation = train_validation_split(
        pad(dataset.x_train),
        dataset.y_train,
        fraction=config.validation_split,
        seed=config.split_seed,
    )
    return Splits(train, validation, (pad(dataset.x_test), dataset.y_test))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """``compile`` and ``fit`` arguments, and the ``EarlyStopping`` callback's."""

    optimizer: str = "rmsprop"
    learning_rate: float = 1e-4
    loss: str = "binary_crossentropy"
    batch_size: int = 64
    epochs: int = 100
    monitor: str = "val_loss"
    patience: int = 3
    restore_best_weights: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning rate must be > 0, got {self.learning_rate}")
        monitor_direction(self.monitor)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One tutorial recipe."""

    name: str
    description: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig

    def __post_init__(self):
        check_loss(self.train.loss, self.model.num_classes)

    def replace(self, **train_fields) -> Experiment:
        """A copy with some ``TrainConfig`` fields changed (the CLI's flags)."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **train_fields))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run(
    experiment: Experiment,
    workdir: str,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    quiet: bool = False,
    per_step: bool = False,
    resume: bool = False,
    should_stop=lambda: False,
    devices: int | None = None,
    implementation: str = "auto",
    prepare: bool | None = None,
) -> dict | None:
    """Trains and evaluates ``experiment``, writing its outputs to ``workdir``.

    The run claims ``workdir`` before anything else and holds it to the end (a second run there
    fails at once, naming this one); a new run needs it missing or empty. With ``resume``,
    continues the run in ``workdir`` (the same experiment; ``epochs`` may grow) from its newest
    intact checkpoint — a run that had already stopped only finishes, so a resumed run always ends
    as the uninterrupted one would. A new run that fails before its first checkpoint removes what
    it wrote. ``should_stop`` is polled between steps/epochs (Ctrl-C); when it stops the run, the
    latest checkpoint is saved and None is returned. ``devices`` splits every batch over that many
    devices (data parallelism; the result equals one device's). ``implementation`` is every
    recurrent layer's ('auto', 'scan' or 'fused'; see ``rnnjax.layers.RNN``). ``data_dir``,
    ``manual_dir``, ``prepare``: see ``load_splits``.

    Returns:
      The final metrics (also ``workdir/metrics.json``; ``terminated_on_nan_at`` is set when a
      non-finite loss ended training), or None when interrupted.
    """
    started = time.perf_counter()
    mesh = None if devices is None else data_mesh(devices)  # fails before anything is written
    train = experiment.train
    claim = Claim.acquire(workdir, resume=resume)
    checkpoints = None
    try:
        if resume:
            _check_same_experiment(os.path.join(workdir, "config.json"), experiment)
        # Before anything is written: an implementation that cannot run fails here.
        state = create_state(experiment, train.seed, implementation=implementation)
        splits = load_splits(experiment.data, data_dir, manual_dir, prepare)
        _write_run_files(experiment, workdir)
        early_stopping = _early_stopping(train)
        checkpoints = Checkpoints(
            os.path.join(workdir, "checkpoints"), train.monitor, early_stopping.direction
        )
        result: FitResult = fit(
            state,
            splits.train,
            splits.validation,
            epochs=train.epochs,
            batch_size=train.batch_size,
            seed=train.seed,
            early_stopping=early_stopping,
            checkpoints=checkpoints,
            checkpoint_config=experiment.to_dict(),
            resume=resume,
            history_path=os.path.join(workdir, "history.json"),
            progress=Progress(
                train.epochs, steps_per_epoch(len(splits.train[0]), train.batch_size), quiet=quiet
            ),
            per_step=per_step,
            should_stop=should_stop,
            mesh=mesh,
        )
        checkpoints.close()
        checkpoints = None
        metrics = None if result.interrupted else _finish(experiment, workdir, splits, result)
    except BaseException:
        if checkpoints is not None:
            with contextlib.suppress(Exception):
                checkpoints.close()
        claim.release(discard=not resume and not _has_checkpoint(workdir))
        raise
    claim.release()
    if metrics is not None:
        metrics["seconds"] = time.perf_counter() - started
        write_atomic(os.path.join(workdir, "metrics.json"), json.dumps(metrics, indent=1))
    return metrics


def _finish(experiment: Experiment, workdir: str, splits: Splits, result: FitResult) -> dict:
    """The tutorials' ending: curves, then train/validation/test evaluation of the final weights
    (the best epoch's when early stopping restored them)."""
    history = result.history
    for metric in ("loss", "accuracy"):
        if len(history):
            write_atomic(os.path.join(workdir, f"{metric}.png"), history_png(history, metric))
    stopping = result.early_stopping
    metrics = {
        "experiment": experiment.name,
        "epochs_run": len(history),
        "best_epoch": None
        if stopping is None or stopping.best is None
        else stopping.best_epoch + 1,
        "stopped_epoch": None
        if stopping is None or not stopping.stopped_epoch
        else stopping.stopped_epoch + 1,
        "terminated_on_nan_at": result.nan_at,
        "params": count_params(result.state.params),
    }
    batch_size = experiment.train.batch_size
    for name, split in (("train", splits.train), ("val", splits.validation), ("test", splits.test)):
        for key, value in evaluate(result.state, split, batch_size).items():
            metrics[f"{name}_{key}"] = value
    return metrics


def _has_checkpoint(workdir: str) -> bool:
    """Whether a latest checkpoint of the run in ``workdir`` was sealed (a resumable run)."""
    latest = os.path.join(workdir, "checkpoints", "latest")
    return os.path.isdir(latest) and any(
        os.path.exists(os.path.join(latest, step, MANIFEST)) for step in os.listdir(latest)
    )


def create_state(
    experiment: Experiment,
    seed: int,
    learning_rate: float | None = None,
    injectable: bool = False,
    implementation: str = "auto",
) -> TrainState:
    """The compiled-model state of ``experiment``: parameters from ``seed``'s init key, dropout
    from its second key, the configured optimizer (at ``learning_rate`` when given), recurrent
    layers running ``implementation``."""
    train = experiment.train
    init_key, dropout_key = jax.random.split(seed_key(seed))
    return TrainState.create(
        model=Classifier(experiment.model, implementation=implementation),
        params=init_params(experiment.model, init_key, implementation=implementation),
        tx=get_optimizer(
            train.optimizer, learning_rate or train.learning_rate, injectable=injectable
        ),
        rng=dropout_key,
        loss=train.loss,
    )


def _early_stopping(train: TrainConfig) -> EarlyStopping:
    return EarlyStopping(
        monitor=train.monitor,
        patience=train.patience,
        restore_best_weights=train.restore_best_weights,
    )


def _write_run_files(experiment: Experiment, workdir: str) -> None:
    """The run's config, summary and model diagram (rewritten identically by a resumed run)."""
    write_atomic(os.path.join(workdir, "config.json"), json.dumps(experiment.to_dict(), indent=1))
    seq_len = experiment.data.maxlen
    write_atomic(os.path.join(workdir, "summary.txt"), summary(experiment.model, seq_len) + "\n")
    write_atomic(os.path.join(workdir, "model.png"), model_png(experiment.model, seq_len))


def run_ensemble(
    experiment: Experiment,
    workdir: str,
    seeds: Sequence[int],
    learning_rates: Sequence[float] | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    quiet: bool = False,
    implementation: str = "auto",
    prepare: bool | None = None,
) -> dict:
    """Trains one model per (seed, learning rate) pair in one vmapped program.

    Claims ``workdir`` as ``run`` does (it must be missing or empty). Writes ``history_<k>.json``
    per model and ``metrics.json`` with every model's results and the mean and standard deviation
    of the validation and test accuracy over the models that did not diverge (a non-finite loss
    stops a model; ``diverged`` counts them).
    """
    started = time.perf_counter()
    learning_rates = list(learning_rates or [experiment.train.learning_rate])
    runs = [(seed, lr) for lr in learning_rates for seed in seeds]
    train = experiment.train
    claim = Claim.acquire(workdir, resume=False)
    try:
        states = stack(
            [
                create_state(experiment, seed, lr, injectable=True, implementation=implementation)
                for seed, lr in runs
            ]
        )
        splits = load_splits(experiment.data, data_dir, manual_dir, prepare)
        _write_run_files(experiment, workdir)
        result = fit_ensemble(
            states,
            splits.train,
            splits.validation,
            seeds=[seed for seed, _ in runs],
            epochs=train.epochs,
            batch_size=train.batch_size,
            early_stopping=_early_stopping(train),
            progress=Progress(
                train.epochs, steps_per_epoch(len(splits.train[0]), train.batch_size), quiet=quiet
            ),
        )
        evaluations = {
            name: evaluate_ensemble(result.state, split, train.batch_size)
            for name, split in (("val", splits.validation), ("test", splits.test))
        }
    except BaseException:
        claim.release(discard=True)
        raise
    models = []
    for k, ((seed, lr), history, stopping, nan_at) in enumerate(
        zip(runs, result.histories, result.early_stopping, result.nan_at)
    ):
        write_atomic(os.path.join(workdir, f"history_{k}.json"), history.to_json())
        models.append(
            {
                "seed": seed,
                "learning_rate": lr,
                "epochs_run": len(history),
                "best_epoch": stopping.best_epoch + 1 if stopping.best is not None else None,
                "stopped_epoch": stopping.stopped_epoch + 1 if stopping.stopped_epoch else None,
                "terminated_on_nan_at": nan_at,
                **{
                    f"{name}_{key}": logs[k][key]
                    for name, logs in evaluations.items()
                    for key in ("loss", "accuracy")
                },
            }
        )
    healthy = [m for m in models if m["terminated_on_nan_at"] is None]
    metrics = {"experiment": experiment.name, "models": models}
    metrics["diverged"] = len(models) - len(healthy)
    for key in ("val_accuracy", "test_accuracy"):
        values = np.asarray([m[key] for m in healthy], np.float64)
        mean, std = (values.mean(), values.std()) if len(values) else (math.nan, math.nan)
        metrics[f"{key}_mean"], metrics[f"{key}_std"] = float(mean), float(std)
    metrics["seconds"] = time.perf_counter() - started
    write_atomic(os.path.join(workdir, "metrics.json"), json.dumps(metrics, indent=1))
    claim.release()
    return metrics


def _check_same_experiment(config_path: str, experiment: Experiment) -> None:
    """A resumed run must be the saved run's experiment; only its epoch budget may change."""
    try:
        with open(config_path) as f:
            saved = json.load(f)
        saved["train"]["epochs"] = experiment.train.epochs
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"cannot resume: {config_path!r} is unreadable or damaged ({error}); start a new run "
            "(another --workdir)"
        ) from None
    # JSON has no tuples: compare through a JSON round trip.
    current = json.loads(json.dumps(experiment.to_dict()))
    if saved != current:
        changed = sorted(key for key in current if saved.get(key) != current.get(key))
        raise ValueError(
            f"cannot resume: the run in {os.path.dirname(config_path)!r} used a different "
            f"{', '.join(changed)} config; resume with the same flags or use a new --workdir"
        )
