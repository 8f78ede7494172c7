"""IMDB: Embedding(500, 32) -> two LSTM(32, dropout=0.2) -> Dense(1), Adam, batch 32.

python -m experiments.imdb_lstm32_stacked
"""

from experiments import LayerSpec, imdb

EXPERIMENT = imdb(
    "imdb_lstm32_stacked",
    __doc__.splitlines()[0],
    layers=(LayerSpec("lstm", 32, dropout=0.2), LayerSpec("lstm", 32, dropout=0.2)),
    embed_dim=32,
    optimizer="adam",
    learning_rate=1e-3,
    batch_size=32,
)

if __name__ == "__main__":
    from rnnjax.cli import command

    command(EXPERIMENT)
