"""rnnjax: Keras-exact recurrent sequence models and Keras' training loop in JAX/Flax.

The data flow, one module each: ``data`` (tensorflow-datasets -> Keras-convention ids) ->
``batches`` / ``streams`` (arrays on device, or a source streamed there) -> ``steps`` (the jitted
pure ``train_step``) -> ``objective``, ``losses``, ``metrics`` (what is minimised and logged) ->
``callbacks``, ``early_stopping``, ``checkpoint`` (host decisions between compiled chunks);
``train`` is the loop (``fit``, ``evaluate``, ``predict``) for any Flax model in a
``TrainState``, and ``experiment`` turns a tutorial config into a run.
"""

from rnnjax import callbacks as callbacks
from rnnjax import cudnn as cudnn
from rnnjax import data as data
from rnnjax import fused as fused
from rnnjax import losses as losses
from rnnjax import metrics as metrics
from rnnjax import pallas as pallas
from rnnjax.batches import batch_indices as batch_indices
from rnnjax.batches import iterate_batches as iterate_batches
from rnnjax.batches import seed_key as seed_key
from rnnjax.callbacks import Callback as Callback
from rnnjax.callbacks import CSVLogger as CSVLogger
from rnnjax.callbacks import History as History
from rnnjax.callbacks import LambdaCallback as LambdaCallback
from rnnjax.callbacks import LearningRateScheduler as LearningRateScheduler
from rnnjax.callbacks import ReduceLROnPlateau as ReduceLROnPlateau
from rnnjax.callbacks import TerminateOnNaN as TerminateOnNaN
from rnnjax.cells import GRUCell as GRUCell
from rnnjax.cells import LSTMCell as LSTMCell
from rnnjax.cells import SimpleRNNCell as SimpleRNNCell
from rnnjax.checkpoint import BackupAndRestore as BackupAndRestore
from rnnjax.checkpoint import ModelCheckpoint as ModelCheckpoint
from rnnjax.checkpoint import load_model as load_model
from rnnjax.data import pad_sequences as pad_sequences
from rnnjax.data import train_validation_split as train_validation_split
from rnnjax.early_stopping import EarlyStopping as EarlyStopping
from rnnjax.ensemble import fit_ensemble as fit_ensemble
from rnnjax.ensemble import stack as stack
from rnnjax.ensemble import unstack as unstack
from rnnjax.keras_weights import load_keras_weights as load_keras_weights
from rnnjax.keras_weights import params_from_keras as params_from_keras
from rnnjax.layers import RNN as RNN
from rnnjax.layers import Bidirectional as Bidirectional
from rnnjax.layers import EmbeddedIds as EmbeddedIds
from rnnjax.layers import padding_mask as padding_mask
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
from rnnjax.tensorboard import TensorBoard as TensorBoard
from rnnjax.train import FitResult as FitResult
from rnnjax.train import evaluate as evaluate
from rnnjax.train import fit as fit
from rnnjax.train import predict as predict
from rnnjax.train_state import TrainState as TrainState

__version__ = "0.2.0"
