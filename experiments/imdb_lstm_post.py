"""IMDB: the base LSTM(8) model with padding and truncating 'post' instead of 'pre'.

python -m experiments.imdb_lstm_post
"""

from experiments import LayerSpec, imdb
from rnnjax.experiment import DataConfig

EXPERIMENT = imdb(
    "imdb_lstm_post",
    __doc__.splitlines()[0],
    layers=(LayerSpec("lstm", 8),),
    data=DataConfig(padding="post", truncating="post"),
)

if __name__ == "__main__":
    from rnnjax.cli import command

    command(EXPERIMENT)
