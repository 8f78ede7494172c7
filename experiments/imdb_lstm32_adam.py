"""IMDB: Embedding(500, 32) -> LSTM(32) -> Dense(1), Adam (Keras defaults), batch 64.

python -m experiments.imdb_lstm32_adam
"""

from experiments import LayerSpec, imdb

EXPERIMENT = imdb(
    "imdb_lstm32_adam",
    __doc__.splitlines()[0],
    layers=(LayerSpec("lstm", 32),),
    embed_dim=32,
    optimizer="adam",
    learning_rate=1e-3,
)

if __name__ == "__main__":
    from rnnjax.cli import command

    command(EXPERIMENT)
