"""The Keras tutorial recipes, one module each: ``python -m experiments.<name>``.

Every recipe is ``imdb(...)`` or ``reuters(...)`` below with a few fields changed.
"""

import dataclasses

from rnnjax.experiment import DataConfig, Experiment, TrainConfig
from rnnjax.models import LayerSpec, ModelConfig

__all__ = ["LayerSpec", "imdb", "reuters"]


def imdb(
    name: str,
    description: str,
    layers: tuple[LayerSpec, ...],
    embed_dim: int = 16,
    data: DataConfig = DataConfig(),  # noqa: B008 (frozen, so sharing it is safe)
    **train,
) -> Experiment:
    """``imdb.load_data(num_words=500)``, pad/truncate to 100, an 80/20 split with seed 42;
    ``Embedding(500, embed_dim) -> layers -> Dense(1, sigmoid)``; RMSprop(1e-4), binary
    cross-entropy, batch 64, up to 100 epochs, EarlyStopping(patience=3, restore_best_weights)."""
    return Experiment(
        name=name,
        description=description,
        data=data,
        model=ModelConfig(
            vocab_size=data.num_words, embed_dim=embed_dim, layers=layers, num_classes=1
        ),
        train=dataclasses.replace(TrainConfig(), **train),
    )


def reuters(
    name: str,
    description: str,
    layers: tuple[LayerSpec, ...],
    embed_dim: int = 100,
    num_words: int = 1000,
    **train,
) -> Experiment:
    """``reuters.load_data(num_words=1000, test_split=0.2)``, 46 topics, a softmax classifier
    trained with categorical cross-entropy."""
    data = DataConfig(dataset="reuters", num_words=num_words)
    return Experiment(
        name=name,
        description=description,
        data=data,
        model=ModelConfig(vocab_size=num_words, embed_dim=embed_dim, layers=layers, num_classes=46),
        train=dataclasses.replace(TrainConfig(loss="categorical_crossentropy"), **train),
    )
