"""IMDB sentiment, the tutorial's base model: Embedding(500, 16) -> LSTM(8) -> Dense(1).

python -m experiments.imdb_lstm
"""

from experiments import LayerSpec, imdb

EXPERIMENT = imdb("imdb_lstm", __doc__.splitlines()[0], layers=(LayerSpec("lstm", 8),))

if __name__ == "__main__":
    from rnnjax.cli import command

    command(EXPERIMENT)
