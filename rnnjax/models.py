"""The tutorial classifier: ``Embedding -> recurrent layers -> Dense``, built from a frozen config.

Shape letters: B batch, T time, V vocabulary size, E embedding width, U units, C classes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from rnnjax.cells import ACTIVATIONS, GRUCell, LSTMCell, RecurrentCell, SimpleRNNCell, validate_rate
from rnnjax.layers import MERGE_MODES, RNN, Bidirectional, EmbeddedIds, padding_mask
from rnnjax.validation import check_ids

Array = jax.Array
CellKind = Literal["lstm", "gru", "simple_rnn"]

CELLS: dict[str, type[RecurrentCell]] = {
    "lstm": LSTMCell,
    "gru": GRUCell,
    "simple_rnn": SimpleRNNCell,
}


def keras_embedding_init(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    """Keras ``Embedding``'s default ``"uniform"`` initializer: U(-0.05, 0.05)."""
    return jax.random.uniform(key, shape, dtype, minval=-0.05, maxval=0.05)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One recurrent layer of a classifier, in Keras' argument names.

    ``LayerSpec("lstm", 8, dropout=0.3)`` is ``keras.layers.LSTM(8, dropout=0.3)``. Every layer but
    the last returns sequences (Keras needs that spelled out; a classifier has no other choice).
    """

    kind: CellKind = "lstm"
    units: int = 8
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    reset_after: bool = True  # GRU only
    go_backwards: bool = False
    bidirectional: bool = False
    merge_mode: str | None = "concat"  # Bidirectional only
    unroll: int = 1

    def __post_init__(self):
        if self.kind not in CELLS:
            raise ValueError(f"layer kind must be one of {sorted(CELLS)}, got {self.kind!r}")
        if self.units < 1:
            raise ValueError(f"units must be >= 1, got {self.units}")
        validate_rate("dropout", self.dropout)
        validate_rate("recurrent_dropout", self.recurrent_dropout)
        for name in ("activation", "recurrent_activation"):
            if getattr(self, name) not in ACTIVATIONS:
                raise ValueError(
                    f"{name} must be one of {sorted(ACTIVATIONS)}, got {getattr(self, name)!r}"
                )
        if self.merge_mode not in MERGE_MODES or (self.bidirectional and self.merge_mode is None):
            raise ValueError(
                f"merge_mode must be one of 'concat', 'sum', 'mul', 'ave', got {self.merge_mode!r}"
            )
        if self.unroll < 1:
            raise ValueError(f"unroll must be >= 1, got {self.unroll}")

    def make_cell(self) -> RecurrentCell:
        """The Keras cell this spec describes, unbound (the ``RNN`` that holds it adopts it)."""
        fields = dict(
            units=self.units,
            activation=self.activation,
            dropout=self.dropout,
            recurrent_dropout=self.recurrent_dropout,
            parent=None,
        )
        if self.kind != "simple_rnn":
            fields["recurrent_activation"] = self.recurrent_activation
        if self.kind == "gru":
            fields["reset_after"] = self.reset_after
        return CELLS[self.kind](**fields)

    def output_units(self) -> int:
        """Features per step this layer emits (doubled by a concatenating Bidirectional)."""
        return self.units * (2 if self.bidirectional and self.merge_mode == "concat" else 1)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A ``Sequential([Embedding, *recurrent layers, Dense])`` Keras model as plain data.

    Attributes:
      vocab_size: V, the number of token ids (ids must lie in ``[0, V)``).
      embed_dim: E, the embedding width.
      layers: the recurrent layers, first to last.
      num_classes: 1 for a binary classifier (a sigmoid on one logit), >1 for a softmax.
      mask_zero: Keras ``Embedding(mask_zero=True)``: id 0 is padding and is masked in the
        recurrent layers.
    """

    vocab_size: int
    embed_dim: int
    layers: tuple[LayerSpec, ...] = (LayerSpec(),)
    num_classes: int = 1
    mask_zero: bool = False

    def __post_init__(self):
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        if self.vocab_size < 1 or self.embed_dim < 1:
            raise ValueError(
                f"vocab_size and embed_dim must be >= 1, got {self.vocab_size}, {self.embed_dim}"
            )
        if not self.layers:
            raise ValueError("a classifier needs at least one recurrent layer")
        if not all(isinstance(layer, LayerSpec) for layer in self.layers):
            raise ValueError("layers must be a tuple of LayerSpec")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")

    def layer_names(self) -> tuple[str, ...]:
        """Keras' automatic names: ``lstm``, ``lstm_1``, ``gru``, ``bidirectional``, ..."""
        seen: dict[str, int] = {}
        names = []
        for spec in self.layers:
            base = "bidirectional" if spec.bidirectional else spec.kind
            count = seen.get(base, 0)
            names.append(base if count == 0 else f"{base}_{count}")
            seen[base] = count + 1
        return tuple(names)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Inverse of ``dataclasses.asdict``, for configs stored as JSON."""
        fields = dict(data)
        fields["layers"] = tuple(LayerSpec(**layer) for layer in fields.get("layers", ()))
        return cls(**fields)


class Classifier(nn.Module):
    """``Embedding -> recurrent layers -> Dense`` returning logits ``[B, C]``.

    Embedding init is Keras' U(-0.05, 0.05); Dense is glorot-uniform with zero bias; cells use
    Keras' initializers. Parameter tree: ``embedding``, one entry per recurrent layer under its
    Keras name (``lstm``, ``lstm_1``, ...), ``dense``.

    Attributes:
      config: the model as data.
      hoist_input_projection: passed to every ``RNN`` (an implementation choice, same values).
      implementation: passed to every ``RNN``: 'auto', 'scan', 'fused', 'cudnn' or 'pallas'.
      dtype: the compute dtype of every layer (Flax's convention; None: promoted from the
        inputs and parameters, i.e. float32). The logits are returned in at least float32, so
        losses and metrics stay float32 under ``dtype=jnp.bfloat16``.
      param_dtype: the dtype every parameter is created in (float32).
    """

    config: ModelConfig
    hoist_input_projection: bool = True
    implementation: str = "auto"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: Array, training: bool = False) -> Array:
        """``ids [B, T]`` -> ``[B, C]``; ``training`` turns dropout on (rng 'dropout')."""
        config = self.config
        embedding = nn.Embed(
            config.vocab_size,
            config.embed_dim,
            embedding_init=keras_embedding_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="embedding",
        )
        (table,) = promote_dtype(embedding.embedding, dtype=self.dtype, inexact=False)
        # Not gathered here: the first layer may project the table instead of every step.
        x = EmbeddedIds(table, ids)
        mask = padding_mask(ids) if config.mask_zero else None
        last = len(config.layers) - 1
        for index, (spec, name) in enumerate(zip(config.layers, config.layer_names())):
            layer = RNN(
                spec.make_cell(),
                return_sequences=index < last,
                go_backwards=spec.go_backwards,
                unroll=spec.unroll,
                hoist_input_projection=self.hoist_input_projection,
                implementation=self.implementation,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=None if spec.bidirectional else name,
            )
            if spec.bidirectional:
                layer = Bidirectional(layer, merge_mode=spec.merge_mode, name=name)
            # Keras 3.15.1 forwards the mask to the next layer only along returned sequences.
            x = layer(x, mask=mask, training=training)
        logits = nn.Dense(
            config.num_classes,
            kernel_init=nn.initializers.glorot_uniform(),
            bias_init=nn.initializers.zeros_init(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="dense",
        )(x)
        # Keras' advice under mixed precision: the model's outputs in float32.
        with jax.numpy_dtype_promotion("standard"):
            return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))

    def check_inputs(self, ids, name: str = "ids") -> None:
        """``fit``/``evaluate``/``predict`` call this once per dataset: ids ``[N, T]`` must be
        integers in ``[0, vocab_size)`` (JAX's embedding lookup would clamp them silently)."""
        check_ids(ids, self.config.vocab_size, f"{name} ids")


def probabilities(logits: Array) -> Array:
    """Logits ``[B, C]`` -> probabilities: a sigmoid for one logit, a softmax over C > 1."""
    return jax.nn.sigmoid(logits) if logits.shape[-1] == 1 else jax.nn.softmax(logits, axis=-1)


def init_params(
    config: ModelConfig, key: Array, seq_len: int = 1, implementation: str = "auto"
) -> dict:
    """Fresh parameters for ``Classifier(config)`` (they depend on neither ``seq_len`` nor
    ``implementation``; initialising through ``implementation`` checks that it can run)."""
    ids = jnp.zeros((1, seq_len), jnp.int32)
    return _initializer(config, implementation)(key, ids)["params"]


@functools.cache
def _initializer(config: ModelConfig, implementation: str) -> Callable:
    # Jitted: one compilation instead of one per initializer op run eagerly (1.8 s -> 0.7 s for
    # the tutorial model), the same bits; kept, so K models of one config compile it once.
    return jax.jit(Classifier(config, implementation=implementation).init)


def count_params(params) -> int:
    """Number of scalars in a parameter tree."""
    return sum(leaf.size for leaf in jax.tree.leaves(params))
