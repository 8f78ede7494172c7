"""Plain Flax under the speed benchmark: what a Flax user writes without rnnjax.

``nn.Embed -> [nn.Bidirectional](nn.RNN(nn.OptimizedLSTMCell | nn.GRUCell)) ... -> nn.Dense``
(Flax's own cells and initializers, not Keras'), ``optax.rmsprop``, and the usual loop: a jitted
train step per batch of host numpy rows in a fresh permutation each epoch (the partial last batch
compiles a second shape in the first epoch), then a jitted evaluation step over the validation
batches. Epoch seconds include validation. See ``common`` for the job.
"""

import functools
import time

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import EPSILON, RHO, run_worker

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


class Net(nn.Module):
    """``ids [B, T]`` -> logits ``[B, C]``; ``layers`` are (kind, units, bidirectional)."""

    layers: tuple[tuple[str, int, bool], ...]
    vocab_size: int
    embed_dim: int
    num_classes: int

    @nn.compact
    def __call__(self, ids):
        x = nn.Embed(self.vocab_size, self.embed_dim)(ids)
        for kind, units, bidirectional in self.layers:
            if bidirectional:  # [B, T, 2U], both directions in input order
                x = nn.Bidirectional(nn.RNN(CELLS[kind](units)), nn.RNN(CELLS[kind](units)))(x)
            else:
                x = nn.RNN(CELLS[kind](units))(x)  # [B, T, U]
        if self.layers[-1][2]:  # the backward direction's last step is input step 0
            units = self.layers[-1][1]
            return nn.Dense(self.num_classes)(
                jnp.concatenate([x[:, -1, :units], x[:, 0, units:]], axis=-1)
            )
        return nn.Dense(self.num_classes)(x[:, -1])


def versions() -> dict:
    return {
        "flax": flax.__version__,
        "jax": jax.__version__,
        "optax": optax.__version__,
        "device": jax.devices()[0].device_kind,
    }


def train(job: dict, arrays: dict) -> dict:
    spec = job["model"]
    model = Net(
        tuple((layer["kind"], layer["units"], layer["bidirectional"]) for layer in spec["layers"]),
        spec["vocab_size"],
        spec["embed_dim"],
        spec["num_classes"],
    )
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    x_val, y_val = arrays["x_val"], arrays["y_val"]
    tx = optax.rmsprop(job["learning_rate"], decay=RHO, eps=EPSILON, eps_in_sqrt=True)
    params = model.init(jax.random.key(job["seed"]), x_train[:1])["params"]
    opt_state = tx.init(params)

    def loss_fn(params, ids, labels):
        logits = model.apply({"params": params}, ids)
        if spec["num_classes"] == 1:
            return optax.sigmoid_binary_cross_entropy(logits[:, 0], labels).mean()
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, ids, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, ids, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    eval_step = jax.jit(loss_fn)
    if spec["num_classes"] == 1:
        y_train, y_val = y_train.astype(np.float32), y_val.astype(np.float32)
    batch, rng = job["batch_size"], np.random.default_rng(job["seed"])
    epoch_seconds, train_loss, val_loss = [], None, None
    fit_start = time.perf_counter()
    for _ in range(job["epochs"]):
        start = time.perf_counter()
        order = rng.permutation(len(x_train))
        losses = []
        for first in range(0, len(order), batch):
            rows = order[first : first + batch]
            params, opt_state, loss = train_step(params, opt_state, x_train[rows], y_train[rows])
            losses.append(loss * len(rows))
        val_losses = []
        for first in range(0, len(x_val), batch):
            ids, labels = x_val[first : first + batch], y_val[first : first + batch]
            val_losses.append(eval_step(params, ids, labels) * len(ids))
        # One transfer per epoch; the sums also wait for the last step to finish.
        train_loss = float(np.sum(jax.device_get(losses))) / len(x_train)
        val_loss = float(np.sum(jax.device_get(val_losses))) / len(x_val)
        epoch_seconds.append(time.perf_counter() - start)
    return {
        "epoch_seconds": epoch_seconds,
        "fit_seconds": time.perf_counter() - fit_start,
        "train_loss": train_loss,
        "val_loss": val_loss,
    }


if __name__ == "__main__":
    run_worker(versions, train)
