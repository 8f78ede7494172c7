import csv

import flax.linen as nn
import jax
import numpy as np
import optax

rng = np.random.default_rng(0)
x = rng.integers(1, 200, size=(4000, 40))
y = ((x < 30).sum(axis=1) > 5).astype("float32")
x_fit, y_fit, x_val, y_val = x[:3200], y[:3200], x[3200:], y[3200:]


class Model(nn.Module):
    @nn.compact
    def __call__(self, ids):
        h = nn.RNN(nn.OptimizedLSTMCell(16))(nn.Embed(200, 16)(ids))
        return nn.Dense(1)(h[:, -1])[:, 0]


model, tx = Model(), optax.adam(3e-3)
params = model.init(jax.random.key(0), x[:1])["params"]
opt_state = tx.init(params)


@jax.jit
def step(params, opt_state, xb, yb):
    def loss_fn(p):
        return optax.sigmoid_binary_cross_entropy(model.apply({"params": p}, xb), yb).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss


def auc(scores, labels):  # ROC AUC from ranks (ties ignored)
    ranks = np.argsort(np.argsort(scores)) + 1
    positives = labels.sum()
    return (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (
        positives * (len(labels) - positives)
    )


best, best_params, wait = -1.0, params, 0
with open("log.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["epoch", "loss", "val_auc", "val_accuracy"])
    for epoch in range(20):
        order = np.random.default_rng(epoch).permutation(len(x_fit))
        losses = []
        for i in range(0, len(order), 64):
            rows = order[i : i + 64]
            params, opt_state, loss = step(params, opt_state, x_fit[rows], y_fit[rows])
            losses.append(float(loss))
        scores = np.asarray(jax.jit(model.apply)({"params": params}, x_val))
        val_auc, val_acc = auc(scores, y_val), ((scores > 0) == y_val).mean()
        writer.writerow([epoch, np.mean(losses), val_auc, val_acc])
        if val_auc > best:
            best, best_params, wait = val_auc, params, 0
        else:
            wait += 1
            if wait >= 3:
                break
scores = np.asarray(model.apply({"params": best_params}, x[-800:]))
print({"auc": auc(scores, y[-800:]), "accuracy": ((scores > 0) == y[-800:]).mean()})
