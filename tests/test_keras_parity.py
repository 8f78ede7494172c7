"""Parity with a real Keras installation: optional, enabled by ``RNNJAX_KERAS_PYTHON``.

Keras is no dependency of rnnjax or of its tests. Give this module a separate interpreter that
has Keras 3.15.1 on the JAX backend, e.g.::

    python3 -m venv .venv-keras
    .venv-keras/bin/pip install keras==3.15.1 jax==0.10.2 jaxlib==0.10.2
    RNNJAX_KERAS_PYTHON=.venv-keras/bin/python python -m pytest -q tests/test_keras_parity.py

That interpreter runs ``keras_parity/make_reference.py`` once into a temporary directory (random
weights, ids and Keras outputs per case); each case then loads the same weights into rnnjax with
``params_from_keras`` (classifiers) or by name (single layers) and must reproduce every Keras
output within ``ATOL``. Without the variable, or when it cannot import Keras 3.15.1, the module
is skipped.
"""

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import (
    RNN,
    Bidirectional,
    Classifier,
    LayerSpec,
    ModelConfig,
    cudnn,
    fused,
    pallas,
    params_from_keras,
)

# rnnjax follows 3.15.1's mask propagation, which Keras master changed (keras_semantics.md §1).
KERAS_VERSION = "3.15.1"
ATOL = 1e-5
SCRIPT = Path(__file__).parent / "keras_parity" / "make_reference.py"
KERAS_PYTHON = os.environ.get("RNNJAX_KERAS_PYTHON")
# The CPU platform keeps Keras on its generic rnn() path: its GPU cuDNN LSTM returns go_backwards
# sequences in a different order (keras_semantics.md §1), and TF32 matmuls would blur the 1e-5.
KERAS_ENV = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}


def _keras_version() -> str:
    """The Keras version ``RNNJAX_KERAS_PYTHON`` imports, or skips the module saying why not."""
    if not KERAS_PYTHON:
        pytest.skip(
            "RNNJAX_KERAS_PYTHON is unset: point it at a Python with keras==3.15.1 "
            "(JAX backend) to compare rnnjax with real Keras",
            allow_module_level=True,
        )
    try:
        probe = subprocess.run(
            [KERAS_PYTHON, "-c", "import keras; print(keras.__version__)"],
            env=KERAS_ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(
            f"RNNJAX_KERAS_PYTHON={KERAS_PYTHON} cannot run: {error}", allow_module_level=True
        )
    if probe.returncode != 0:
        last_line = (probe.stderr.strip().splitlines() or ["no error output"])[-1]
        pytest.skip(
            f"RNNJAX_KERAS_PYTHON={KERAS_PYTHON} cannot import keras: {last_line}",
            allow_module_level=True,
        )
    # Keras may print notices on import; the version is the last line.
    return probe.stdout.strip().splitlines()[-1]


FOUND_VERSION = _keras_version()
if FOUND_VERSION != KERAS_VERSION:
    pytest.skip(
        f"RNNJAX_KERAS_PYTHON has keras {FOUND_VERSION}; these cases pin Keras {KERAS_VERSION}",
        allow_module_level=True,
    )


def _load_cases() -> dict:
    # The case table is plain data at the top of the script (Keras is imported only in its main),
    # so test ids exist at collection time without running Keras.
    spec = importlib.util.spec_from_file_location("keras_parity_make_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


CASES = _load_cases()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """Runs the Keras script once: ``(directory of <case>.npz, cases.json contents)``."""
    out_dir = tmp_path_factory.mktemp("keras_reference")
    result = subprocess.run(
        [KERAS_PYTHON, str(SCRIPT), str(out_dir)],
        env=KERAS_ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"make_reference.py failed:\n{result.stderr[-4000:]}"
    manifest = json.loads((out_dir / "cases.json").read_text())
    assert manifest["keras_version"] == KERAS_VERSION and manifest["keras_backend"] == "jax"
    assert list(manifest["cases"]) == list(CASES)
    return out_dir, manifest


def _numbered(arrays: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    """``prefix000``, ``prefix001``, ... in index order."""
    keys = sorted(
        (key for key in arrays if key.startswith(prefix)), key=lambda key: int(key[len(prefix) :])
    )
    return [arrays[key] for key in keys]


def _run_classifier(
    case: dict, arrays: dict, weights: list[np.ndarray], implementation: str
) -> list[jax.Array]:
    """Logits ``[B, C]`` of ``Classifier`` on the case's ids, as a one-element list."""
    config = ModelConfig.from_dict(case["config"])
    params = params_from_keras(config, weights)
    model = Classifier(config, implementation=implementation)
    return [model.apply({"params": params}, jnp.asarray(arrays["inputs"]))]


def _run_layer(
    case: dict, arrays: dict, weights: list[np.ndarray], implementation: str
) -> list[jax.Array]:
    """``[output [B, T, U'], *states [B, U]]`` of one ``RNN`` (or ``Bidirectional``) on floats."""
    spec = LayerSpec(**case["layer"])
    layer = RNN(
        spec.make_cell(),
        return_sequences=case["return_sequences"],
        return_state=case["return_state"],
        go_backwards=spec.go_backwards,
        implementation=implementation,
    )
    directions = ["forward", "backward"] if spec.bidirectional else [None]
    if spec.bidirectional:
        layer = Bidirectional(layer, merge_mode=spec.merge_mode)
    # Keras' get_weights() per cell: kernel, recurrent_kernel, bias; forward cell first.
    names = ("kernel", "recurrent_kernel", "bias")
    assert len(weights) == len(names) * len(directions)
    params = {}
    for index, direction in enumerate(directions):
        cell = {name: jnp.asarray(w) for name, w in zip(names, weights[3 * index : 3 * index + 3])}
        params |= {"cell": cell} if direction is None else {direction: {"cell": cell}}
    mask = jnp.asarray(arrays["mask"]) if "mask" in arrays else None
    outputs = layer.apply({"params": params}, jnp.asarray(arrays["inputs"]), mask=mask)
    return list(outputs) if isinstance(outputs, tuple) else [outputs]


PATH_MODULES = {"fused": fused, "cudnn": cudnn, "pallas": pallas}


def _cannot_run(case: dict, implementation: str) -> str | None:
    """Why ``implementation`` cannot run every layer of a case (its own words), or None."""
    module = PATH_MODULES[implementation]
    layers = case["config"]["layers"] if case["model"] == "classifier" else [case["layer"]]
    inputs = jnp.zeros((case["batch"], case["time"], 1), jnp.float32)
    for layer in layers:
        if reason := module.unsupported(LayerSpec(**layer).make_cell(), inputs):
            return reason
    return module.unavailable_reason()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
# 'fused', 'cudnn' and 'pallas' run every layer on that path ('cudnn' on a GPU only; 'pallas' in
# Pallas' interpreter on CPU), 'scan' none; 'auto' is the default choice.
@pytest.mark.parametrize("implementation", ["auto", "fused", "cudnn", "pallas", "scan"])
def test_outputs_equal_keras(implementation, name, reference, record_property):
    if implementation in PATH_MODULES and (reason := _cannot_run(CASES[name], implementation)):
        pytest.skip(reason)
    out_dir, manifest = reference
    case = manifest["cases"][name]
    with np.load(out_dir / f"{name}.npz") as archive:
        arrays = dict(archive)
    weights = _numbered(arrays, "weight_")
    expected = _numbered(arrays, "output_")
    run = _run_classifier if case["model"] == "classifier" else _run_layer
    # Full float32 matmuls, as Keras ran them on CPU (an accelerator's default may be TF32).
    with jax.default_matmul_precision("float32"):
        actual = run(case, arrays, weights, implementation)

    assert len(actual) == len(expected), f"{name}: {len(actual)} outputs, Keras has {len(expected)}"
    diffs = []
    for index, (ours, theirs) in enumerate(zip(actual, expected)):
        assert ours.shape == theirs.shape, (
            f"{name} output {index}: shape {ours.shape}, Keras {theirs.shape}"
        )
        diffs.append(float(np.max(np.abs(np.asarray(ours, np.float64) - theirs))))
    record_property("max_abs_diff", max(diffs))
    worst = int(np.argmax(diffs))
    assert diffs[worst] <= ATOL, (
        f"{name}: max |rnnjax - keras| = {diffs[worst]:.3e} > {ATOL:g} at output {worst} "
        f"(per output: {', '.join(f'{d:.2e}' for d in diffs)})"
    )
