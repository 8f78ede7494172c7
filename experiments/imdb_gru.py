"""IMDB: Embedding(500, 16) -> GRU(8) -> Dense(1).

python -m experiments.imdb_gru
"""

from experiments import LayerSpec, imdb

EXPERIMENT = imdb("imdb_gru", __doc__.splitlines()[0], layers=(LayerSpec("gru", 8),))

if __name__ == "__main__":
    from rnnjax.cli import command

    command(EXPERIMENT)
