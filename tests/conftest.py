"""Suite-wide JAX settings and fixtures."""

import getpass
import os
import tempfile

# Compiled programs are shared through JAX's persistent cache by every test worker (pytest -n) and
# every child process a test starts (they inherit the environment): the same training step
# compiles once per suite, not once per process. Set before JAX reads its configuration.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"rnnjax-tests-{getpass.getuser()}-jax-cache"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

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
