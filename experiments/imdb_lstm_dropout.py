"""IMDB: Embedding(500, 16) -> LSTM(8, dropout=0.3) -> Dense(1).

python -m experiments.imdb_lstm_dropout
"""

from experiments import LayerSpec, imdb

EXPERIMENT = imdb(
    "imdb_lstm_dropout", __doc__.splitlines()[0], layers=(LayerSpec("lstm", 8, dropout=0.3),)
)

if __name__ == "__main__":
    from rnnjax.cli import command

    command(EXPERIMENT)
