"""An experiment is a config: data, model and training as frozen data, and ``run`` to carry it out.

``run`` is the tutorials' script, written with the general API (``fit`` and callbacks): load and
pad the data, split off validation, compile (optimizer, loss, accuracy), fit with
``EarlyStopping``, a best-only ``ModelCheckpoint``, ``BackupAndRestore``, ``TerminateOnNaN`` and a
history file, restore the best weights, evaluate on train/validation/test, and write the outputs
to a work directory it claims for its lifetime:

``history.json`` (after every epoch), ``metrics.json``, ``summary.txt``, ``loss.png``,
``accuracy.png``, ``model.png``, ``config.json`` and ``checkpoints/`` (``best/``, ``latest/``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import numpy as np

from rnnjax import losses, metrics
from rnnjax.batches import seed_key
from rnnjax.callbacks import Callback, HistoryFile, Interrupt, TerminateOnNaN
from rnnjax.checkpoint import MANIFEST, BackupAndRestore, ModelCheckpoint
from rnnjax.data import imdb, pad_sequences, reuters, train_validation_split
from rnnjax.early_stopping import EarlyStopping
from rnnjax.ensemble import fit_ensemble, stack, unstack
from rnnjax.models import Classifier, LayerSpec, ModelConfig, count_params, init_params
from rnnjax.optimizers import OPTIMIZERS, get_optimizer
from rnnjax.plots import ensemble_png, history_png, model_png
from rnnjax.sharding import data_mesh
from rnnjax.summary import summary
from rnnjax.train import FitResult, evaluate, fit
from rnnjax.train_state import TrainState
from rnnjax.validation import check_dataset, check_loss
from rnnjax.workdir import Claim, write_atomic

LOSSES = ("binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy")
MONITORED = ("loss", "accuracy")  # what a recipe logs, with or without "val_"


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

    def to_dict(self) -> dict:
        """The fields this dataset uses (IMDB has no ``test_split``: it comes split)."""
        fields = dataclasses.asdict(self)
        if self.dataset == "imdb":
            del fields["test_split"]
        return fields


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
        if self.monitor.removeprefix("val_") not in MONITORED:
            raise ValueError(
                f"monitor must be one of {list(MONITORED)}, with or without 'val_', got "
                f"{self.monitor!r}"
            )


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
        """The config as JSON-able data (only the fields the run uses)."""
        return {
            "name": self.name,
            "description": self.description,
            "data": self.data.to_dict(),
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
        }

    @classmethod
    def from_dict(cls, config: dict) -> Experiment:
        """Inverse of ``to_dict`` (a stored ``config.json`` or checkpoint config)."""
        model = dict(config["model"])
        model["layers"] = tuple(LayerSpec(**layer) for layer in model.get("layers", ()))
        return cls(
            name=config["name"],
            description=config["description"],
            data=DataConfig(**config["data"]),
            model=ModelConfig(**model),
            train=TrainConfig(**config["train"]),
        )


def compile_objective(experiment: Experiment) -> dict:
    """The recipe's loss and metric for its model, which returns logits: Keras' loss with
    ``from_logits=True`` and accuracy thresholded at logit 0 (a probability of 0.5)."""
    loss = experiment.train.loss
    if loss == "binary_crossentropy":
        return dict(
            loss=losses.BinaryCrossentropy(from_logits=True),
            metrics=[metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
        )
    if loss == "categorical_crossentropy":  # targets one-hot (``targets``)
        return dict(
            loss=losses.CategoricalCrossentropy(from_logits=True),
            metrics=[metrics.CategoricalAccuracy(name="accuracy")],
        )
    return dict(
        loss=losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def targets(experiment: Experiment, labels: np.ndarray) -> np.ndarray:
    """The recipe's targets: class ids, one-hot for categorical cross-entropy (Keras'
    ``to_categorical``)."""
    if experiment.train.loss == "categorical_crossentropy":
        return np.eye(experiment.model.num_classes, dtype=np.float32)[labels]
    return labels


def create_state(
    experiment: Experiment,
    seed: int,
    learning_rate: float | None = None,
    implementation: str = "auto",
) -> TrainState:
    """The compiled model of ``experiment``: parameters from ``seed``'s init key, dropout from
    its second key, the configured optimizer (at ``learning_rate`` when given), loss and accuracy,
    recurrent layers running ``implementation``."""
    train = experiment.train
    init_key, dropout_key = jax.random.split(seed_key(seed))
    return TrainState.create(
        model=Classifier(experiment.model, implementation=implementation),
        params=init_params(experiment.model, init_key, implementation=implementation),
        tx=get_optimizer(train.optimizer, learning_rate or train.learning_rate),
        rng=dropout_key,
        **compile_objective(experiment),
    )


def run(
    experiment: Experiment,
    workdir: str,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    quiet: bool = False,
    per_step: bool = False,
    resume: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
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
    it wrote. ``should_stop`` is polled between compiled chunks (Ctrl-C); when it stops the run,
    the latest checkpoint is saved and None is returned. ``per_step``: a chunk is one step (a
    live bar, the finest interrupt). ``devices`` splits every batch over that many devices (data
    parallelism; the result equals one device's). ``implementation`` is every recurrent layer's
    ('auto', 'scan' or 'fused'; see ``rnnjax.layers.RNN``). ``data_dir``, ``manual_dir``,
    ``prepare``: see ``load_splits``.

    Returns:
      The final metrics (also ``workdir/metrics.json``; ``terminated_on_nan_at`` is set when a
      non-finite loss ended training), or None when interrupted.
    """
    started = time.perf_counter()
    mesh = None if devices is None else data_mesh(devices)  # fails before anything is written
    train = experiment.train
    claim = Claim.acquire(workdir, resume=resume)
    try:
        if resume:
            saved_epochs = _check_same_experiment(os.path.join(workdir, "config.json"), experiment)
        # Before anything is written: missing data, then an implementation that cannot run.
        splits = _checked(experiment, load_splits(experiment.data, data_dir, manual_dir, prepare))
        state = create_state(experiment, train.seed, implementation=implementation)
        callbacks = _callbacks(experiment, workdir, quiet, resume, should_stop)
        if resume:
            # Once the backup is restored (a refused resume leaves the files as they were); a
            # run that had stopped keeps the budget it ran with.
            budget = dataclasses.replace(train, epochs=max(saved_epochs, train.epochs))
            callbacks.append(_RunFiles(dataclasses.replace(experiment, train=budget), workdir))
        else:
            _write_run_files(experiment, workdir)
        result = fit(
            state,
            splits.train[0],
            targets(experiment, splits.train[1]),
            validation_data=(splits.validation[0], targets(experiment, splits.validation[1])),
            epochs=train.epochs,
            batch_size=train.batch_size,
            seed=train.seed,
            verbose=0 if quiet else 1,
            callbacks=callbacks,
            steps_per_execution=1 if per_step else "auto",
            mesh=mesh,
        )
        metrics = None if result.interrupted else _finish(experiment, workdir, splits, result)
    except BaseException:
        claim.release(discard=not resume and not _has_checkpoint(workdir))
        raise
    if metrics is not None:  # written while the run still holds the workdir
        metrics["seconds"] = time.perf_counter() - started
        write_atomic(os.path.join(workdir, "metrics.json"), json.dumps(metrics, indent=1))
    claim.release()
    return metrics


def _callbacks(experiment, workdir, quiet, resume, should_stop) -> list:
    train = experiment.train
    checkpoints = os.path.join(workdir, "checkpoints")
    return [
        EarlyStopping(
            monitor=train.monitor,
            patience=train.patience,
            restore_best_weights=train.restore_best_weights,
            verbose=0 if quiet else 1,
        ),
        ModelCheckpoint(
            os.path.join(checkpoints, "best"),
            monitor=train.monitor,
            save_best_only=True,
            config=experiment.to_dict(),
            overwrite=resume,  # a resumed run's best/ is its own, whatever state it is in
        ),
        BackupAndRestore(os.path.join(checkpoints, "latest")),
        TerminateOnNaN(verbose=0 if quiet else 1),
        HistoryFile(os.path.join(workdir, "history.json")),
        Interrupt(should_stop),
    ]


def _checked(experiment: Experiment, splits: Splits) -> Splits:
    """Ids inside the vocabulary, labels inside the classes: JAX itself would silently clamp
    them (one ``ValueError`` naming the value and where)."""
    model = experiment.model
    return Splits(
        *(
            check_dataset(split, model.vocab_size, model.num_classes, f"{name} data")
            for name, split in (
                ("training", splits.train),
                ("validation", splits.validation),
                ("test", splits.test),
            )
        )
    )


def _finish(experiment: Experiment, workdir: str, splits: Splits, result: FitResult) -> dict:
    """The tutorials' ending: curves, then train/validation/test evaluation of the final weights
    (the best epoch's when early stopping restored them)."""
    history = result.history
    stopping = next(c for c in result.callbacks if isinstance(c, EarlyStopping))
    best_epoch = stopping.best_epoch
    for metric in ("loss", "accuracy"):
        if len(history):
            png = history_png(
                history,
                metric,
                title=experiment.name,
                best_epoch=best_epoch if stopping.restore_best_weights else None,
                stopped_epoch=stopping.stopped_epoch or None,
            )
            write_atomic(os.path.join(workdir, f"{metric}.png"), png)
    metrics = {
        "experiment": experiment.name,
        "epochs_run": len(history),
        "best_epoch": None if best_epoch is None else best_epoch + 1,
        "stopped_epoch": stopping.stopped_epoch + 1 if stopping.stopped_epoch else None,
        "terminated_on_nan_at": result.nan_at,
        "params": count_params(result.state.params),
    }
    batch_size = experiment.train.batch_size
    for name, (ids, labels) in (
        ("train", splits.train),
        ("val", splits.validation),
        ("test", splits.test),
    ):
        logs = evaluate(result.state, ids, targets(experiment, labels), batch_size=batch_size)
        for key, value in logs.items():
            metrics[f"{name}_{key}"] = value
    return metrics


def _has_checkpoint(workdir: str) -> bool:
    """Whether a latest checkpoint of the run in ``workdir`` was sealed (a resumable run)."""
    latest = os.path.join(workdir, "checkpoints", "latest")
    return os.path.isdir(latest) and any(
        os.path.exists(os.path.join(latest, step, MANIFEST)) for step in os.listdir(latest)
    )


class _RunFiles(Callback):
    """Writes a resumed run's files once its backup is restored: a refused resume (a smaller
    epoch budget than the run has done) leaves them as they were."""

    order = BackupAndRestore.order + 1

    def __init__(self, experiment: Experiment, workdir: str):
        self.experiment, self.workdir = experiment, workdir

    def on_train_begin(self, logs=None):
        _write_run_files(self.experiment, self.workdir)


def _write_run_files(experiment: Experiment, workdir: str, ensemble: dict | None = None) -> None:
    """The run's config (with ``ensemble``, the models of a ``run_ensemble``), summary and model
    diagram (rewritten identically by a resumed run)."""
    config = experiment.to_dict() | ({"ensemble": ensemble} if ensemble else {})
    write_atomic(os.path.join(workdir, "config.json"), json.dumps(config, indent=1))
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
    per model, ``loss.png``/``accuracy.png`` (the mean over the models with a band of one
    standard deviation, every model faint), the stacked best weights in ``checkpoints/best``,
    and ``metrics.json`` with every model's results and the mean and standard deviation of the
    validation and test accuracy over the models that did not diverge (a non-finite loss stops a
    model; ``diverged`` counts them).
    """
    started = time.perf_counter()
    learning_rates = list(learning_rates or [experiment.train.learning_rate])
    runs = [(seed, lr) for lr in learning_rates for seed in seeds]
    train = experiment.train
    claim = Claim.acquire(workdir, resume=False)
    try:
        splits = _checked(experiment, load_splits(experiment.data, data_dir, manual_dir, prepare))
        states = stack(
            [create_state(experiment, seed, lr, implementation=implementation) for seed, lr in runs]
        )
        ensemble = {"seeds": [seed for seed, _ in runs], "learning_rates": [lr for _, lr in runs]}
        _write_run_files(experiment, workdir, ensemble)
        result = fit_ensemble(
            states,
            splits.train[0],
            targets(experiment, splits.train[1]),
            validation_data=(splits.validation[0], targets(experiment, splits.validation[1])),
            seeds=[seed for seed, _ in runs],
            epochs=train.epochs,
            batch_size=train.batch_size,
            early_stopping=EarlyStopping(
                monitor=train.monitor,
                patience=train.patience,
                restore_best_weights=train.restore_best_weights,
            ),
            checkpoint_dir=os.path.join(workdir, "checkpoints", "best"),
            checkpoint_config=experiment.to_dict(),
            verbose=0 if quiet else 1,
        )
        evaluations = {
            name: [
                evaluate(single, ids, targets(experiment, labels), batch_size=train.batch_size)
                for single in unstack(result.state)
            ]
            for name, (ids, labels) in (("val", splits.validation), ("test", splits.test))
        }
    except BaseException:
        claim.release(discard=True)
        raise
    models = []
    for k, ((seed, lr), history, stopping, nan_at) in enumerate(
        zip(runs, result.histories, result.early_stopping, result.nan_at)
    ):
        write_atomic(
            os.path.join(workdir, f"history_{k}.json"), json.dumps({"epochs": history}, indent=1)
        )
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
    for metric in ("loss", "accuracy"):
        png = ensemble_png(
            result.histories, metric, title=f"{experiment.name} ({len(runs)} models)"
        )
        write_atomic(os.path.join(workdir, f"{metric}.png"), png)
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


def _check_same_experiment(config_path: str, experiment: Experiment) -> int:
    """A resumed run must be the saved run's experiment; only its epoch budget may change.
    Returns the saved budget."""
    try:
        with open(config_path) as f:
            saved = json.load(f)
        saved_epochs = int(saved["train"]["epochs"])
        saved["train"]["epochs"] = experiment.train.epochs
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"cannot resume: {config_path!r} is unreadable or damaged ({error}); start a new run "
            "(another --workdir)"
        ) from None
    if "ensemble" in saved:
        raise ValueError(
            f"cannot resume: {os.path.dirname(config_path)!r} holds a run of several models "
            "(--num-seeds, --learning-rates), which cannot be resumed; start it again in a new "
            "--workdir"
        )
    # JSON has no tuples: compare through a JSON round trip.
    current = json.loads(json.dumps(experiment.to_dict()))
    if saved != current:
        changed = sorted(key for key in current if saved.get(key) != current.get(key))
        raise ValueError(
            f"cannot resume: the run in {os.path.dirname(config_path)!r} used a different "
            f"{', '.join(changed)} config; resume with the same flags or use a new --workdir"
        )
    return saved_epochs
