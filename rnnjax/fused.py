"""Fused CPU recurrences: the LSTM and GRU time loops as XLA FFI custom calls.

On XLA:CPU a scanned cell runs each timestep as a few dozen tiny kernels on ``[B, U]`` arrays and
that overhead, not arithmetic, bounds the small models of the Keras tutorials. ``recurrence_cpu.cc``
runs a whole sequence per batch row in one C++ loop, forward and backward; the input projection,
the weight gradients and everything else stay in XLA. The kernels compute the same equations as
the cells (``rnnjax.cells``) with a polynomial ``exp``, so values agree with the scan path to
float32 rounding (about 1e-6), not bitwise.

The source is compiled on first use with the system C++ compiler (``$CXX`` or ``c++``) against the
XLA FFI headers shipped in jaxlib, for the host CPU (``-march=native``), and cached under
``$RNNJAX_CACHE_DIR`` (default ``~/.cache/rnnjax``) keyed by source, jaxlib version and CPU. When
that fails, ``available()`` is False, ``unavailable_reason()`` says why, and ``RNN`` with
``implementation="auto"`` uses the scan.

Shape letters: B batch, T time, U units, G gates (4 LSTM, 3 GRU).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from rnnjax.cells import Array, Carry, GRUCell, LSTMCell, RecurrentCell

SOURCE = Path(__file__).with_name("recurrence_cpu.cc")
TARGETS = {
    "rnnjax_lstm_forward": "RnnjaxLstmForward",
    "rnnjax_lstm_backward": "RnnjaxLstmBackward",
    "rnnjax_gru_forward": "RnnjaxGruForward",
    "rnnjax_gru_backward": "RnnjaxGruBackward",
}


def cache_dir() -> Path:
    """Where the compiled kernel library is kept: ``$RNNJAX_CACHE_DIR`` or ``~/.cache/rnnjax``."""
    if configured := os.environ.get("RNNJAX_CACHE_DIR"):
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnjax"


def _host_cpu() -> str:
    """Identifies the CPU's instruction sets, so a cache shared by unlike hosts never mixes up
    ``-march=native`` builds."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _compile(compiler: str, flags: list[str], output: Path) -> None:
    command = [compiler, *flags, "-I", jax.ffi.include_dir(), str(SOURCE), "-o", str(output)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")


def _build() -> Path:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++ or clang++)")
    base_flags = ["-std=c++17", "-O3", "-fopenmp-simd", "-shared", "-fPIC", "-w"]
    key = hashlib.sha256(
        b"\0".join(
            s.encode()
            for s in (SOURCE.read_text(), jax.__version__, compiler, _host_cpu(), *base_flags)
        )
    ).hexdigest()[:16]
    library = cache_dir() / f"recurrence_cpu_{key}.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        partial = Path(scratch) / library.name
        # The loops are a few vectors long: 256-bit vectors leave no scalar remainders for
        # 8 units. Compilers or CPUs that reject a flag (Apple clang, arm64) get fewer flags.
        for extra in (["-march=native", "-mprefer-vector-width=256"], ["-march=native"], []):
            try:
                _compile(compiler, [*base_flags, *extra], partial)
                break
            except RuntimeError:
                if not extra:
                    raise
        os.replace(partial, library)  # atomic: concurrent first uses never load half a file
    return library


@functools.cache
def _load() -> str | None:
    """Builds and registers the kernels once per process; returns why not, or None on success."""
    if jax.default_backend() != "cpu":
        return f"the default JAX backend is {jax.default_backend()!r}; the kernels are CPU-only"
    try:
        library = ctypes.cdll.LoadLibrary(str(_build()))
        for target, symbol in TARGETS.items():
            jax.ffi.register_ffi_target(
                target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu"
            )
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        return f"building the fused CPU kernels failed: {error}"
    return None


def available() -> bool:
    """True when the kernels are compiled and registered (builds them on the first call)."""
    return _load() is None


def unavailable_reason() -> str | None:
    """Why ``available()`` is False, or None."""
    return _load()


def _call(target: str, results: list[tuple[tuple[int, ...], jnp.dtype]], *args: Array):
    if (reason := _load()) is not None:
        raise RuntimeError(reason)
    shapes = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in results]
    # Under vmap (K models at once) every operand gets the same leading axes and one kernel call
    # runs all K models' rows, each row with its own model's weights.
    return jax.ffi.ffi_call(target, shapes, vmap_method="broadcast_all")(*args)


def _previous(h0: Array, hs: Array) -> Array:
    """The state each step started from: ``[h0, hs[:, 0], ..., hs[:, -2]]``, ``[B, T, U]``."""
    return jnp.concatenate([h0[:, None], hs[:, :-1]], axis=1)


# --- LSTM ------------------------------------------------------------------------------------


def _lstm_forward(xw, recurrent_kernel, h0, c0):
    batch, time, width = xw.shape
    state = ((batch, time, width // 4), xw.dtype)
    hs, cs, gates, tanh_cs = _call(
        "rnnjax_lstm_forward",
        [state, state, ((batch, time, width), xw.dtype), state],
        xw,
        recurrent_kernel,
        h0,
        c0,
    )
    return (hs, cs[:, -1]), (recurrent_kernel, h0, c0, hs, cs, gates, tanh_cs)


@jax.custom_vjp
def lstm_sequence(xw: Array, recurrent_kernel: Array, h0: Array, c0: Array) -> tuple[Array, Array]:
    """The Keras LSTM recurrence (gates ``[i, f, c, o]``, sigmoid and tanh) over a sequence.

    Args:
      xw: ``[B, T, 4U]`` float32, the input projection ``x @ kernel + bias`` of every step.
      recurrent_kernel: ``[U, 4U]``.
      h0, c0: ``[B, U]`` initial states.

    Returns:
      ``(hs [B, T, U], c_last [B, U])``; the final ``h`` is ``hs[:, -1]``.
    """
    return _lstm_forward(xw, recurrent_kernel, h0, c0)[0]


def _lstm_backward(residuals, cotangents):
    recurrent_kernel, h0, c0, hs, cs, gates, tanh_cs = residuals
    dhs, dc_last = cotangents
    batch, _, units = hs.shape
    state = ((batch, units), hs.dtype)
    dz, dh0, dc0 = _call(
        "rnnjax_lstm_backward",
        [(gates.shape, gates.dtype), state, state],
        dhs,
        dc_last,
        gates,
        cs,
        tanh_cs,
        c0,
        recurrent_kernel,
    )
    d_recurrent_kernel = jnp.einsum("btu,btg->ug", _previous(h0, hs), dz)
    return dz, d_recurrent_kernel, dh0, dc0


lstm_sequence.defvjp(_lstm_forward, _lstm_backward)


# --- GRU (reset_after=True) -------------------------------------------------------------------


def _gru_forward(xw, recurrent_kernel, recurrent_bias, h0):
    batch, time, width = xw.shape
    state = ((batch, time, width // 3), xw.dtype)
    hs, gates, hr_candidate = _call(
        "rnnjax_gru_forward",
        [state, ((batch, time, width), xw.dtype), state],
        xw,
        recurrent_kernel,
        recurrent_bias,
        h0,
    )
    return hs, (recurrent_kernel, h0, hs, gates, hr_candidate)


@jax.custom_vjp
def gru_sequence(xw: Array, recurrent_kernel: Array, recurrent_bias: Array, h0: Array) -> Array:
    """The Keras GRU recurrence with ``reset_after=True`` (gates ``[z, r, h]``) over a sequence.

    Args:
      xw: ``[B, T, 3U]`` float32, ``x @ kernel + input bias`` of every step.
      recurrent_kernel: ``[U, 3U]``.
      recurrent_bias: ``[3U]`` (Keras' ``bias[1]``; zeros without bias).
      h0: ``[B, U]``.

    Returns:
      ``hs [B, T, U]``; the final state is ``hs[:, -1]``.
    """
    return _gru_forward(xw, recurrent_kernel, recurrent_bias, h0)[0]


def _gru_backward(residuals, dhs):
    recurrent_kernel, h0, hs, gates, hr_candidate = residuals
    dxw, dhr, dh0 = _call(
        "rnnjax_gru_backward",
        [(gates.shape, gates.dtype), (gates.shape, gates.dtype), (h0.shape, h0.dtype)],
        dhs,
        gates,
        hr_candidate,
        hs,
        h0,
        recurrent_kernel,
    )
    d_recurrent_kernel = jnp.einsum("btu,btg->ug", _previous(h0, hs), dhr)
    return dxw, d_recurrent_kernel, dhr.sum(axis=(0, 1)), dh0


gru_sequence.defvjp(_gru_forward, _gru_backward)


# --- Sequence layers --------------------------------------------------------------------------


def unsupported(cell: RecurrentCell, inputs: Array, mask: Array | None, recurrent_dropout: bool):
    """Why the kernels cannot run this ``RNN`` call (a sentence), or None when they can.

    They implement the Keras defaults of ``LSTMCell`` and ``GRUCell(reset_after=True)``
    (``tanh``/``sigmoid``) in float32, without a padding mask or recurrent dropout, like the cuDNN
    path of Keras. Input dropout is fine: it acts on the input projection, outside the recurrence.
    """
    if type(cell) not in (LSTMCell, GRUCell):
        return f"there is no fused kernel for {type(cell).__name__}"
    if isinstance(cell, GRUCell) and not cell.reset_after:
        return "the GRU kernel implements reset_after=True only"
    if cell.activation != "tanh" or cell.recurrent_activation != "sigmoid":
        return "the kernels implement activation='tanh', recurrent_activation='sigmoid' only"
    if inputs.dtype != jnp.float32:
        return f"the kernels are float32 only, inputs are {inputs.dtype}"
    if inputs.shape[1] == 0:
        return "the sequence is empty"
    if mask is not None:
        return "the kernels do not take a padding mask"
    if recurrent_dropout:
        return "the kernels do not apply recurrent dropout"
    return None


def _per_batch_shard(fn, batch_size: int, batched: tuple[bool, ...]):
    """``fn`` run on each device's rows when a data-parallel mesh is in context
    (``jax.sharding.use_abstract_mesh``, which ``rnnjax.steps`` sets for a sharded epoch);
    otherwise ``fn`` itself. ``batched`` says which arguments have the batch axis first (the
    others, weights, are replicated). Without this, XLA would gather the whole batch onto every
    device for the custom call and run the recurrence replicated."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or batch_size % mesh.size:
        return fn
    rows = PartitionSpec(mesh.axis_names)
    return jax.shard_map(
        fn,
        mesh=mesh,
        in_specs=tuple(rows if has_rows else PartitionSpec() for has_rows in batched),
        out_specs=rows,
        # The custom calls' outputs carry no varying-axis types, so skip that check.
        check_vma=False,
    )


def run(cell: RecurrentCell, xw: Array, carry: Carry) -> tuple[Carry, Array]:
    """Runs a bound ``LSTMCell``/``GRUCell``'s recurrence over ``xw [B, T, G*U]`` (its
    ``project`` output) from ``carry``; returns ``(final carry, outputs [B, T, U])``."""
    recurrent_kernel = cell.get_variable("params", "recurrent_kernel")
    batch_size = xw.shape[0]
    if isinstance(cell, LSTMCell):
        lstm = _per_batch_shard(lstm_sequence, batch_size, (True, False, True, True))
        hs, c_last = lstm(xw, recurrent_kernel, *carry)
        return (hs[:, -1], c_last), hs
    if cell.use_bias:
        recurrent_bias = cell.get_variable("params", "bias")[1]
    else:
        recurrent_bias = jnp.zeros(recurrent_kernel.shape[-1], xw.dtype)
    gru = _per_batch_shard(gru_sequence, batch_size, (True, False, False, True))
    hs = gru(xw, recurrent_kernel, recurrent_bias, *carry)
    return (hs[:, -1],), hs
