"""Reuters topics: Embedding(1000, 100) -> LSTM(100) -> Dense(46, softmax), Adam, batch 64.

The tutorial names no optimizer; Adam with Keras' defaults (lr 1e-3) is our choice.

    python -m experiments.reuters_lstm
"""

from experiments import LayerSpec, reuters

EXPERIMENT = reuters(
    "reuters_lstm",
    __doc__.splitlines()[0],
    layers=(LayerSpec("lstm", 100),),
    optimizer="adam",
    learning_rate=1e-3,
)

if __name__ == "__main__":
    from rnnjax.cli import command

    command(EXPERIMENT)
