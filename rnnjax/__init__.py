"""rnnjax: Keras-exact recurrent sequence models and training in JAX/Flax."""

from rnnjax.cells import GRUCell as GRUCell
from rnnjax.cells import LSTMCell as LSTMCell
from rnnjax.cells import SimpleRNNCell as SimpleRNNCell
from rnnjax.keras_weights import load_keras_weights as load_keras_weights
from rnnjax.keras_weights import params_from_keras as params_from_keras
from rnnjax.layers import RNN as RNN
from rnnjax.layers import Bidirectional as Bidirectional
from rnnjax.layers import padding_mask as padding_mask
from rnnjax.models import Classifier as Classifier
from rnnjax.models import LayerSpec as LayerSpec
from rnnjax.models import ModelConfig as ModelConfig
from rnnjax.models import count_params as count_params
from rnnjax.models import init_params as init_params
from rnnjax.models import probabilities as probabilities
from rnnjax.summary import summary as summary

__version__ = "0.1.0"
