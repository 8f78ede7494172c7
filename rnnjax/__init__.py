"""rnnjax: Keras-exact recurrent sequence models and training in JAX/Flax.

The data flow, one module each: ``data`` (tensorflow-datasets -> Keras-convention ids) ->
``batches`` (epoch order, on-device batches) -> ``steps`` (the jitted pure ``train_step``) ->
``metrics`` (sums, ``History``) -> ``early_stopping`` -> ``checkpoint``; ``train`` is the host
loop (``fit``, ``evaluate``, ``predict``) and ``experiment`` turns a config into a run.
"""

from rnnjax import data as data
from rnnjax import fused as fused
from rnnjax.batches import batch_indices as batch_indices
from rnnjax.batches import iterate_batches as iterate_batches
from rnnjax.cells import GRUCell as GRUCell
from rnnjax.cells import LSTMCell as LSTMCell
from rnnjax.cells import SimpleRNNCell as SimpleRNNCell
from rnnjax.checkpoint import Checkpoints as Checkpoints
from rnnjax.checkpoint import load_model as load_model
from rnnjax.data import pad_sequences as pad_sequences
from rnnjax.data import train_validation_split as train_validation_split
from rnnjax.early_stopping import EarlyStopping as EarlyStopping
from rnnjax.keras_weights import load_keras_weights as load_keras_weights
from rnnjax.keras_weights import params_from_keras as params_from_keras
from rnnjax.layers import RNN as RNN
from rnnjax.layers import Bidirectional as Bidirectional
from rnnjax.layers import padding_mask as padding_mask
from rnnjax.losses import accuracy as accuracy
from rnnjax.losses import compute_loss as compute_loss
from rnnjax.metrics import History as History
from rnnjax.metrics import Metrics as Metrics
from rnnjax.models import Classifier as Classifier
from rnnjax.models import LayerSpec as LayerSpec
from rnnjax.models import ModelConfig as ModelConfig
from rnnjax.models import count_params as count_params
from rnnjax.models import init_params as init_params
from rnnjax.models import probabilities as probabilities
from rnnjax.optimizers import adam as adam
from rnnjax.optimizers import rmsprop as rmsprop
from rnnjax.optimizers import sgd as sgd
from rnnjax.steps import eval_step as eval_step
from rnnjax.steps import train_step as train_step
from rnnjax.summary import summary as summary
from rnnjax.train import evaluate as evaluate
from rnnjax.train import fit as fit
from rnnjax.train import predict as predict
from rnnjax.train_state import TrainState as TrainState

__version__ = "0.1.0"
