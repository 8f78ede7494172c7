"""Sequence labelling: a tag for every token, with padded sequences of different lengths.

The task (synthetic, so it runs anywhere): sentences of 4-20 tokens, padded with 0 to 20; a
token's tag is 2 if it repeats the previous token, else 1 if it is a "rare" id (>= 40), else 0.
The model reads the sentence with a bidirectional LSTM that returns sequences and classifies
every step; padding steps get weight 0, so they count in neither the loss nor the accuracy.

    python examples/sequence_labelling.py [--examples 2000] [--epochs 15]
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import numpy as np

import rnnjax as rj

VOCAB, MAXLEN, TAGS = 50, 20, 3


def make_data(n: int, seed: int = 0):
    """ids ``[N, T]`` (0 = padding), tags ``[N, T]``, weights ``[N, T]`` (1 on real tokens)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, MAXLEN), np.int32)
    for row, length in zip(ids, rng.integers(4, MAXLEN + 1, n)):
        row[:length] = rng.integers(1, VOCAB, length)
        repeats = rng.random(length) < 0.2
        repeats[0] = False
        row[:length][repeats] = row[:length][np.flatnonzero(repeats) - 1]
    previous = np.concatenate([np.zeros((n, 1), np.int32), ids[:, :-1]], axis=1)
    tags = np.where(ids == previous, 2, np.where(ids >= 40, 1, 0)).astype(np.int32)
    weights = (ids > 0).astype(np.float32)
    return ids, tags, weights


class Tagger(nn.Module):
    """``[batch, time]`` ids -> ``[batch, time, TAGS]`` logits."""

    @nn.compact
    def __call__(self, ids, training: bool = False):
        x = nn.Embed(VOCAB, 16)(ids)
        mask = rj.padding_mask(ids)  # [batch, time], False at padding
        layer = rj.RNN(rj.LSTMCell(16), return_sequences=True)
        x = rj.Bidirectional(layer)(x, mask=mask, training=training)
        return nn.Dense(TAGS)(x)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    ids, tags, weights = make_data(args.examples)
    model = Tagger()
    state = rj.TrainState.create(
        model=model,
        params=model.init(jax.random.key(0), ids[:1])["params"],
        tx=rj.adam(3e-3),
        loss=rj.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],  # weighted: padding steps do not count
        rng=jax.random.key(1),
    )
    result = rj.fit(
        state,
        ids,
        tags,
        sample_weight=weights,  # [N, T]: one weight per step
        validation_split=0.2,
        batch_size=32,
        epochs=args.epochs,
        verbose=args.verbose,
    )
    tagged = rj.predict(result.state, ids[:1]).argmax(-1)  # [1, T]
    length = int(weights[0].sum())
    print("tokens:   ", ids[0, :length].tolist())
    print("predicted:", tagged[0, :length].tolist())
    print("true:     ", tags[0, :length].tolist())
    return result.history.epochs[-1]


if __name__ == "__main__":
    main()
