"""What every speed-benchmark worker shares: the job it is given and the one JSON line it answers.

A worker runs in its framework's own interpreter, so this module needs only the standard library
and numpy. It is started as ``python <worker>.py --versions`` (print the framework versions and
exit: the orchestrator's probe) or ``python <worker>.py JOB`` with JOB a JSON object:

    {"data": ".npz with x_train [N, T], y_train [N], x_val [M, T], y_val [M]",
     "model": {"vocab_size": V, "embed_dim": E, "mask_zero": bool,
               "layers": [{"kind": "lstm" | "gru", "units": U, "bidirectional": bool,
                           "dropout": float, "recurrent_dropout": float}, ...],
               "num_classes": C},
     "epochs": int, "batch_size": int, "learning_rate": float, "seed": int, "options": {...},
     "models_at_once": K (optional, rnnjax only; default 1)}

Every layer but the last returns sequences; a bidirectional layer concatenates its directions,
and as the last layer outputs the forward direction's last step and the backward direction's
last processed step (input step 0), as Keras does. ``mask_zero`` masks id 0 (Keras
``Embedding(mask_zero=True)``); the orchestrator sends no job with a feature the framework
lacks. Job options: rnnjax ``hoist`` (bool) and ``implementation``, torch ``threads`` (int or
null) and ``device`` ('cpu' or 'cuda'). ``num_classes`` 1 means a sigmoid unit and binary
cross-entropy on 0/1 labels; C > 1 a softmax and categorical cross-entropy on integer labels in
[0, C). The optimizer is always RMSprop with ``rho`` 0.9 and ``epsilon`` 1e-7 (Keras'
defaults). The answer is the last line on stdout.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable

import numpy as np

RHO = 0.9
EPSILON = 1e-7


def read_job(argv: list[str]) -> tuple[dict, dict[str, np.ndarray]]:
    """The job from ``argv[1]`` and its arrays, loaded from the job's ``.npz``."""
    job = json.loads(argv[1])
    with np.load(job["data"]) as data:
        arrays = {name: data[name] for name in data.files}
    return job, arrays


def run_worker(versions: Callable[[], dict], train: Callable[[dict, dict], dict]) -> None:
    """A worker's ``main``: ``--versions`` answers ``versions()`` and the Python version; a job
    answers ``train(job, arrays)``: ``epoch_seconds`` (each epoch, validation included),
    ``fit_seconds`` (the whole training call), the last epoch's ``train_loss`` and ``val_loss``,
    and optionally ``options`` (settings the framework chose, worth keeping)."""
    if sys.argv[1:] == ["--versions"]:
        answer = versions() | {"python": platform.python_version()}
    else:
        answer = train(*read_job(sys.argv))
    print(json.dumps(answer), flush=True)
