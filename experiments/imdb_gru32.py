"""IMDB: Embedding(500, 32) -> GRU(32, dropout=0.2) -> Dense(1), Adam, batch 64.

python -m experiments.imdb_gru32
"""

from experiments import LayerSpec, imdb

EXPERIMENT = imdb(
    "imdb_gru32",
    __doc__.splitlines()[0],
    layers=(LayerSpec("gru", 32, dropout=0.2),),
    embed_dim=32,
    optimizer="adam",
    learning_rate=1e-3,
)

if __name__ == "__main__":
    from rnnjax.cli import command

    command(EXPERIMENT)
