"""A training process for the resume tests (run as a subprocess, killed, and resumed).

    python resume_worker.py WORKDIR [--per-step] [--kill-at-step E:S] [--interrupt-at-step E:S]

Trains a small LSTM on synthetic data with checkpoints in WORKDIR (``BackupAndRestore`` resumes
whatever is there) and writes ``result.json`` and ``params.npz`` there when it finishes.
``--kill-at-step E:S`` SIGKILLs itself after step S of epoch E (1-based, per-step mode);
``--interrupt-at-step E:S`` asks fit to stop there, as Ctrl-C does (exit status 130).
"""

import argparse
import json
import os
import signal
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rnnjax import Classifier, LayerSpec, ModelConfig, init_params, losses  # noqa: E402
from rnnjax.callbacks import Interrupt, LambdaCallback  # noqa: E402
from rnnjax.checkpoint import BackupAndRestore, ModelCheckpoint  # noqa: E402
from rnnjax.early_stopping import EarlyStopping  # noqa: E402
from rnnjax.optimizers import adam  # noqa: E402
from rnnjax.train import fit  # noqa: E402
from rnnjax.train_state import TrainState  # noqa: E402

CONFIG = ModelConfig(40, 6, (LayerSpec("lstm", 5, dropout=0.3),))
EPOCHS = 5


def data():
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 40, size=(150, 10)).astype(np.int32)
    labels = ((ids[:, -3:] < 20).sum(1) >= 2).astype(np.int32)
    return (ids[:110], labels[:110]), (ids[110:], labels[110:])


def at_step(at: str, action) -> LambdaCallback:
    """Calls ``action`` after step S of epoch E (both 1-based; one step a chunk)."""
    epoch, step = map(int, at.split(":"))
    state = {"epoch": -1}

    def begin(e, logs=None):
        state["epoch"] = e

    def end(batch, logs=None):
        if (state["epoch"] + 1, batch + 1) == (epoch, step):
            action()

    return LambdaCallback(on_epoch_begin=begin, on_train_batch_end=end)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--per-step", action="store_true")
    parser.add_argument("--kill-at-step")
    parser.add_argument("--interrupt-at-step")
    args = parser.parse_args()

    callbacks = [
        EarlyStopping(patience=10, restore_best_weights=True),
        ModelCheckpoint(os.path.join(args.workdir, "best"), save_best_only=True),
        BackupAndRestore(os.path.join(args.workdir, "latest")),
    ]
    interrupted = []
    if args.kill_at_step:
        callbacks.append(at_step(args.kill_at_step, lambda: os.kill(os.getpid(), signal.SIGKILL)))
    if args.interrupt_at_step:
        callbacks.append(at_step(args.interrupt_at_step, lambda: interrupted.append(1)))
        callbacks.append(Interrupt(lambda: bool(interrupted)))
    init_key, dropout_key = jax.random.split(jax.random.key(0))
    state = TrainState.create(
        model=Classifier(CONFIG),
        params=init_params(CONFIG, init_key),
        tx=adam(1e-2),
        rng=dropout_key,
        loss=losses.BinaryCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    (x, y), val = data()
    result = fit(
        state,
        x,
        y,
        validation_data=val,
        epochs=EPOCHS,
        batch_size=32,
        seed=1,
        callbacks=callbacks,
        steps_per_execution=1 if args.per_step else "auto",
        verbose=0,
    )
    if result.interrupted:
        sys.exit(130)
    with open(os.path.join(args.workdir, "result.json"), "w") as f:
        json.dump(
            {"history": result.history.epochs, "best_epoch": result.callbacks[0].best_epoch}, f
        )
    leaves = jax.tree_util.tree_leaves_with_path(result.state.params)
    np.savez(
        os.path.join(args.workdir, "params.npz"),
        **{jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves},
    )


if __name__ == "__main__":
    main()
