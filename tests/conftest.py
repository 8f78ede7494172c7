"""Suite-wide JAX settings and fixtures."""

import jax
import numpy as np
import pytest

# Mixed-dtype arithmetic must be explicit in library code.
jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_runtest_setup(item):
    """Tests marked ``gpu`` run only where JAX's default backend is a GPU."""
    if item.get_closest_marker("gpu") and jax.default_backend() != "gpu":
        pytest.skip(f"needs a GPU; the default JAX backend is {jax.default_backend()!r}")


@pytest.fixture
def rng():
    """A seeded numpy Generator for test data."""
    return np.random.default_rng(0)
