"""PyTorch under the speed benchmark: ``nn.Embedding -> nn.LSTM/nn.GRU(bidirectional) ... ->
nn.Linear``.

The loop a PyTorch user writes for the Keras recipe: ``set_num_threads`` (option ``threads``,
default every core), a fresh ``torch.randperm`` each epoch, manual batching of tensors (no
DataLoader: the data is a few MB), RMSprop(lr, alpha=rho, eps), BCE-with-logits or
cross-entropy, then validation under ``no_grad``; epoch seconds include validation. Option
``device`` ('cpu' default, or 'cuda': model and tensors on the GPU, where ``nn.LSTM``/``nn.GRU``
run cuDNN; an epoch's time then ends with the last loss read on the host). ``nn.GRU``
applies the reset gate after the recurrent matmul, like Keras' default ``reset_after=True``.
Initializers are PyTorch's own. See ``common`` for the job.
"""

import os
import time

import torch
from common import EPSILON, RHO, run_worker
from torch import nn

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU}


class Net(nn.Module):
    """``ids [B, T]`` -> logits ``[B, C]``."""

    def __init__(self, spec: dict):
        super().__init__()
        self.embedding = nn.Embedding(spec["vocab_size"], spec["embed_dim"])
        layers = spec["layers"]
        widths = [spec["embed_dim"]] + [
            layer["units"] * (2 if layer["bidirectional"] else 1) for layer in layers
        ]
        self.rnns = nn.ModuleList(
            RNNS[layer["kind"]](
                width, layer["units"], batch_first=True, bidirectional=layer["bidirectional"]
            )
            for layer, width in zip(layers, widths[:-1], strict=True)
        )
        self.last_units = layers[-1]["units"] if layers[-1]["bidirectional"] else None
        self.dense = nn.Linear(widths[-1], spec["num_classes"])

    def forward(self, ids):
        x = self.embedding(ids)
        for rnn in self.rnns:
            x, _ = rnn(x)  # [B, T, U] or [B, T, 2U]
        if self.last_units is not None:  # the backward direction's last step is input step 0
            units = self.last_units
            return self.dense(torch.cat([x[:, -1, :units], x[:, 0, units:]], dim=-1))
        return self.dense(x[:, -1])


def versions() -> dict:
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return {"torch": torch.__version__, "cuda_device": cuda}


def train(job: dict, arrays: dict) -> dict:
    torch.set_num_threads(job["options"].get("threads") or os.cpu_count())
    torch.manual_seed(job["seed"])
    spec = job["model"]
    binary = spec["num_classes"] == 1
    device = torch.device(job["options"].get("device") or "cpu")
    model = Net(spec).to(device)
    # torch adds eps outside the square root (Keras: inside); the same work per step, and
    # this is a speed benchmark.
    optimizer = torch.optim.RMSprop(
        model.parameters(), lr=job["learning_rate"], alpha=RHO, eps=EPSILON
    )
    criterion = nn.BCEWithLogitsLoss() if binary else nn.CrossEntropyLoss()

    def tensors(x, y):
        labels = torch.from_numpy(y).to(device)
        return torch.from_numpy(x).long().to(device), labels.float() if binary else labels.long()

    def loss_of(ids, labels):
        logits = model(ids)
        return criterion(logits[:, 0] if binary else logits, labels)

    x_train, y_train = tensors(arrays["x_train"], arrays["y_train"])
    x_val, y_val = tensors(arrays["x_val"], arrays["y_val"])
    batch = job["batch_size"]
    epoch_seconds, train_loss, val_loss = [], None, None
    fit_start = time.perf_counter()
    for _ in range(job["epochs"]):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), device=device)
        total = 0.0
        for first in range(0, len(order), batch):
            rows = order[first : first + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(x_train[rows], y_train[rows])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        train_loss = total / len(x_train)
        model.eval()
        total = 0.0
        with torch.no_grad():
            for first in range(0, len(x_val), batch):
                ids, labels = x_val[first : first + batch], y_val[first : first + batch]
                total += loss_of(ids, labels).item() * len(ids)
        val_loss = total / len(x_val)
        epoch_seconds.append(time.perf_counter() - start)
    return {
        "epoch_seconds": epoch_seconds,
        "fit_seconds": time.perf_counter() - fit_start,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "options": {"threads": torch.get_num_threads()},
    }


if __name__ == "__main__":
    run_worker(versions, train)
