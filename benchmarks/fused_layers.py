"""Milliseconds per jitted forward+backward of one recurrent layer, fused kernels vs scan.

    python benchmarks/fused_layers.py [--units 8,32] [--calls 20] [--repeats 15] [--only a,b]

The IMDB tutorial's shapes: a batch of 64 sequences of 100 steps, embedding width 16 for 8 units
and 32 for 32 units; the padding mask of the masked layers comes from the first 64 rows of the
speed benchmark's IMDB-shaped ids ('pre' padding, 88% of the rows full). Each configuration is
``jax.jit(jax.value_and_grad(loss, argnums=(params, x)))`` with ``loss = sum(layer(x) * w)`` over
the last output (``return_sequences=False``, as in the tutorials), training mode (dropout on);
each time is the median over ``--repeats`` of the mean of ``--calls`` back-to-back calls, the two
paths alternating. Prints a Markdown table; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's rnnjax
sys.path.insert(0, HERE)

import speed_data  # noqa: E402

from rnnjax import RNN, Bidirectional, GRUCell, LSTMCell, SimpleRNNCell  # noqa: E402

BATCH = 64

# name -> (make layer from units and implementation, masked)
CONFIGS = {
    "lstm": (lambda u, impl: RNN(LSTMCell(u), implementation=impl), False),
    "lstm mask_zero": (lambda u, impl: RNN(LSTMCell(u), implementation=impl), True),
    "bidirectional lstm": (
        lambda u, impl: Bidirectional(RNN(LSTMCell(u), implementation=impl)),
        False,
    ),
    "lstm dropout+recurrent_dropout 0.2": (
        lambda u, impl: RNN(LSTMCell(u, dropout=0.2, recurrent_dropout=0.2), implementation=impl),
        False,
    ),
    "gru": (lambda u, impl: RNN(GRUCell(u), implementation=impl), False),
    "gru mask_zero": (lambda u, impl: RNN(GRUCell(u), implementation=impl), True),
    "gru reset_after=False": (
        lambda u, impl: RNN(GRUCell(u, reset_after=False), implementation=impl),
        False,
    ),
    "simple_rnn": (lambda u, impl: RNN(SimpleRNNCell(u), implementation=impl), False),
}


def step_function(layer, x, mask):
    """The jitted forward+backward of ``layer`` and its initial parameters."""
    variables = layer.init(jax.random.key(0), x, mask)
    weights = jax.random.normal(jax.random.key(1), layer.apply(variables, x, mask).shape)

    def loss(variables, x):
        out = layer.apply(variables, x, mask, training=True, rngs={"dropout": jax.random.key(2)})
        return jnp.sum(out * weights)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), variables


def milliseconds(functions: dict, calls: int, repeats: int) -> dict[str, float]:
    """``{name: median ms per call}`` for ``{name: (fn, args)}``, the functions taking turns in
    every repeat so that a machine whose speed drifts affects them alike."""
    for fn, args in functions.values():
        jax.block_until_ready(fn(*args))  # compile
    means = {name: [] for name in functions}
    for _ in range(repeats):
        for name, (fn, args) in functions.items():
            start = time.perf_counter()
            for _ in range(calls):
                out = fn(*args)
            jax.block_until_ready(out)
            means[name].append((time.perf_counter() - start) / calls * 1e3)
    return {name: statistics.median(values) for name, values in means.items()}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", default="8,32")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", help="comma-separated configuration names")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(CONFIGS)
    ids = speed_data.synthetic(speed_data.SHAPES["imdb"], seed=0)["x_train"][:BATCH]
    mask = jnp.asarray(ids != 0)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print("| layer | units | scan ms | fused ms | scan / fused |")
    print("|---|---|---|---|---|")
    for units in map(int, args.units.split(",")):
        embed = 16 if units == 8 else 32
        x = jnp.asarray(np.random.default_rng(0).normal(size=(BATCH, 100, embed)), jnp.float32)
        for name in names:
            make, masked = CONFIGS[name]
            functions = {}
            for implementation in ("scan", "fused"):
                fn, variables = step_function(
                    make(units, implementation), x, mask if masked else None
                )
                functions[implementation] = (fn, (variables, x))
            times = milliseconds(functions, args.calls, args.repeats)
            print(
                f"| {name} | {units} | {times['scan']:.2f} | {times['fused']:.2f} | "
                f"{times['scan'] / times['fused']:.1f}× |",
                flush=True,
            )
    print(f"load average at the end {os.getloadavg()[0]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
