"""Datasets for the Keras tutorials, from tensorflow-datasets without TensorFlow.

``imdb.load`` / ``reuters.load`` (and their Keras-shaped ``load_data``) give id sequences in the
Keras index convention; ``pad_sequences`` and ``train_validation_split`` prepare them for ``fit``.
"""

from rnnjax.data import cache as cache
from rnnjax.data import imdb as imdb
from rnnjax.data import reuters as reuters
from rnnjax.data.sequences import Ragged as Ragged
from rnnjax.data.sequences import pad_sequences as pad_sequences
from rnnjax.data.sequences import train_validation_split as train_validation_split
from rnnjax.data.sources import DatasetNotFoundError as DatasetNotFoundError
from rnnjax.data.text import IndexConvention as IndexConvention
from rnnjax.data.text import TextDataset as TextDataset
from rnnjax.data.text import Vocabulary as Vocabulary
from rnnjax.data.text import decode as decode
from rnnjax.data.text import encode as encode
from rnnjax.data.text import tokenize as tokenize
