"""Suite-wide JAX settings and fixtures."""

import jax
import numpy as np
import pytest

# Mixed-dtype arithmetic must be explicit in library code.
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def rng():
    """A seeded numpy Generator for test data."""
    return np.random.default_rng(0)
