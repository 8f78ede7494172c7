"""Fused CPU recurrences: the LSTM, GRU and SimpleRNN time loops as XLA FFI custom calls.

On XLA:CPU a scanned cell runs each timestep as a few dozen tiny kernels on ``[B, U]`` arrays and
that overhead, not arithmetic, bounds the small models of the Keras tutorials. The C++ kernels in
``kernels/`` run a whole sequence per batch row in one loop, forward and backward, for every
configuration the layers accept with Keras' default activations: ``LSTMCell``, ``GRUCell`` (both
``reset_after`` variants) and ``SimpleRNNCell``, with or without a padding mask (states carried
through masked steps) and recurrent dropout masks. The input projection, the weight gradients and
everything else stay in XLA. The kernels compute the same equations as the cells
(``rnnjax.cells``) with a polynomial ``exp``, so values agree with the scan path to float32
rounding (about 1e-6), not bitwise.

Differentiation: reverse mode (``grad``, ``value_and_grad``, under ``vmap``, ``jit`` and
``shard_map``) runs the backward kernels. Forward mode (``jvp``, ``jacfwd``) and derivatives of the
backward pass (``grad`` of ``grad``, ``hessian``) are taken through the scan path's equations
instead (``_reference``): correct, at the scan path's speed.

The source is compiled on first use with the system C++ compiler (``$CXX`` or ``c++``) against the
XLA FFI headers shipped in jaxlib, for the host CPU (``-march=native``), and cached under
``$RNNJAX_CACHE_DIR`` (default ``~/.cache/rnnjax``) keyed by source, jaxlib version and CPU. When
that fails, ``available()`` is False, ``unavailable_reason()`` says why, and ``RNN`` with
``implementation="auto"`` uses the scan.

Shape letters: B batch, T time, U units, G gates (4 LSTM, 3 GRU, 1 SimpleRNN).
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental.hijax import ShapedArray, VJPHiPrimitive, Zero, instantiate_zeros
from jax.sharding import PartitionSpec

from rnnjax.cells import Array, Carry, GRUCell, LSTMCell, RecurrentCell, SimpleRNNCell
from rnnjax.data.cache import default_dir, writable
from rnnjax.workdir import write_atomic

KERNELS = Path(__file__).with_name("kernels")
TARGETS = {
    "rnnjax_lstm_forward": "RnnjaxLstmForward",
    "rnnjax_lstm_backward": "RnnjaxLstmBackward",
    "rnnjax_gru_forward": "RnnjaxGruForward",
    "rnnjax_gru_backward": "RnnjaxGruBackward",
    "rnnjax_gru_reset_before_forward": "RnnjaxGruResetBeforeForward",
    "rnnjax_gru_reset_before_backward": "RnnjaxGruResetBeforeBackward",
    "rnnjax_simple_rnn_forward": "RnnjaxSimpleRnnForward",
    "rnnjax_simple_rnn_backward": "RnnjaxSimpleRnnBackward",
}
# The kernel kinds, one per cell equation: the cell each runs (Keras' default activations).
KINDS = {
    "lstm": LSTMCell,
    "gru": GRUCell,  # reset_after=True
    "gru_reset_before": functools.partial(GRUCell, reset_after=False),
    "simple_rnn": SimpleRNNCell,
}


def _sources() -> list[Path]:
    """Every kernel source file (``.cc`` and the shared ``.h``), in a stable order."""
    return sorted(path for path in KERNELS.iterdir() if path.suffix in (".cc", ".h"))


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
    """Compiles every ``.cc`` into an object next to ``output``, all at once (the build takes
    the longest file's time, not the sum), then links them into ``output``."""
    jobs = []
    for source in (path for path in _sources() if path.suffix == ".cc"):
        command = [compiler, *flags, "-I", jax.ffi.include_dir(), "-c", str(source), "-o"]
        command.append(str(output.with_name(f"{source.stem}.o")))
        jobs.append((command, subprocess.Popen(command, stderr=subprocess.PIPE, text=True)))
    failures = []
    for command, process in jobs:
        _, errors = process.communicate()
        _check_compiled(command, process.returncode, errors)
        if process.returncode != 0:
            failures.append(f"{' '.join(command)} failed:\n{errors[-2000:]}")
    if failures:
        raise _Rejected("\n".join(failures))
    objects = [command[-1] for command, _ in jobs]
    command = [compiler, *flags, *objects, "-o", str(output)]
    result = subprocess.run(command, capture_output=True, text=True)
    _check_compiled(command, result.returncode, result.stderr)
    if result.returncode != 0:
        raise _Rejected(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")


class _Rejected(RuntimeError):
    """The compiler ran and refused (a flag it lacks, say): fewer flags may do."""


def _check_compiled(command: list[str], returncode: int, errors: str) -> None:
    # Stopped by a signal (a Ctrl-C reaches the compiler too): not a verdict on the flags, so no
    # lesser build is made and cached in its place.
    if returncode < 0:
        raise RuntimeError(f"{command[0]} was stopped by signal {-returncode}: {errors[-500:]}")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _intact(library: Path) -> bool:
    """Whether ``library`` is the file its build recorded beside it: a truncated library would
    crash the process when loaded, an emptied one would fail to load on every run."""
    try:
        return library.with_suffix(".sha256").read_text() == _digest(library)
    except OSError:
        return False


def _build() -> Path:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++ or clang++)")
    base_flags = ["-std=c++17", "-O3", "-fopenmp-simd", "-shared", "-fPIC", "-w"]
    sources = (f"{path.name}\0{path.read_text()}" for path in _sources())
    key = hashlib.sha256(
        b"\0".join(
            s.encode() for s in (*sources, jax.__version__, compiler, _host_cpu(), *base_flags)
        )
    ).hexdigest()[:16]
    # Beside the data cache (``$RNNJAX_CACHE_DIR`` or ``~/.cache/rnnjax``).
    library = default_dir() / f"recurrence_cpu_{key}.so"
    if _intact(library):
        return library
    try:
        if not writable(library.parent):
            raise PermissionError("the directory has no write permission")
        library.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        # Still fast, not cached: a build of this process's own.
        warnings.warn(
            f"cannot write the kernel cache in {library.parent} ({error.strerror or error}); "
            "building the fused kernels for this process only (set RNNJAX_CACHE_DIR to a "
            "writable directory to keep them)",
            stacklevel=3,
        )
        private = tempfile.mkdtemp(prefix="rnnjax-kernels-")
        atexit.register(shutil.rmtree, private, ignore_errors=True)  # loaded by then
        library = Path(private) / library.name
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        partial = Path(scratch) / library.name
        # The loops are a few vectors long: 256-bit vectors leave no scalar remainders for
        # 8 units. Compilers or CPUs that reject a flag (Apple clang, arm64) get fewer flags.
        for extra in (["-march=native", "-mprefer-vector-width=256"], ["-march=native"], []):
            try:
                _compile(compiler, [*base_flags, *extra], partial)
                break
            except _Rejected:
                if not extra:
                    raise
        os.replace(partial, library)  # atomic: concurrent first uses never load half a file
    write_atomic(str(library.with_suffix(".sha256")), _digest(library))
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


def kind_of(cell: RecurrentCell) -> str | None:
    """The kernel kind (a key of ``KINDS``) for a cell's equations, or None for other cells.
    Exact types only: a subclass may change the equations."""
    if type(cell) is LSTMCell:
        return "lstm"
    if type(cell) is GRUCell:
        return "gru" if cell.reset_after else "gru_reset_before"
    if type(cell) is SimpleRNNCell:
        return "simple_rnn"
    return None


def unsupported(cell: RecurrentCell, inputs: Array) -> str | None:
    """Why the kernels cannot run this cell on ``inputs [B, T, D]`` (a sentence), or None.

    They implement ``LSTMCell``, ``GRUCell`` (either ``reset_after``) and ``SimpleRNNCell`` with
    Keras' default activations (``tanh``, and ``sigmoid`` for the gates) in float32; padding masks,
    ``go_backwards``, initial states and input and recurrent dropout all run in them.
    """
    if kind_of(cell) is None:
        return f"there is no fused kernel for {type(cell).__name__}"
    if cell.activation != "tanh" or getattr(cell, "recurrent_activation", "sigmoid") != "sigmoid":
        return "the kernels implement activation='tanh', recurrent_activation='sigmoid' only"
    dtype = cell.compute_dtype(inputs.dtype)
    if dtype != jnp.float32:
        return f"the kernels are float32 only, this layer computes in {dtype}"
    return None


# --- The kernel calls --------------------------------------------------------------------------


class Operands(NamedTuple):
    """The differentiable inputs of one recurrence.

    Attributes:
      xw: ``[B, T, G*U]`` float32, the input projection ``x @ kernel + input bias`` of every step.
      recurrent_kernel: ``[U, G*U]``.
      recurrent_bias: ``[G*U]`` for ``"gru"`` (Keras' ``bias[1]``; zeros without bias), else None.
      states: the initial states in Keras order, each ``[B, U]``: ``(h, c)`` for LSTM, ``(h,)``.
      recurrent_masks: ``[G, B, U]`` recurrent dropout masks (gate g multiplies the previous
        ``h`` by mask g), or None.
    """

    xw: Array
    recurrent_kernel: Array
    recurrent_bias: Array | None
    states: tuple[Array, ...]
    recurrent_masks: Array | None


def _call(target: str, results: list[tuple[tuple[int, ...], jnp.dtype]], *args: Array):
    if (reason := _load()) is not None:
        raise RuntimeError(reason)
    shapes = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in results]
    # Under vmap (K models at once) every operand gets the same leading axes and one kernel call
    # runs all K models' rows, each row with its own model's weights.
    return jax.ffi.ffi_call(target, shapes, vmap_method="broadcast_all")(*args)


def _optional_inputs(args: Operands, mask: Array | None) -> tuple[Array, Array]:
    """The kernels' mask ``[B, T]`` and recurrent masks ``[B, G, U]`` (rows first, as every other
    operand), each empty where absent."""
    mask = jnp.zeros((0,), bool) if mask is None else mask
    masks = args.recurrent_masks
    masks = jnp.zeros((0,), jnp.float32) if masks is None else jnp.swapaxes(masks, 0, 1)
    return mask, masks


def _kernel_forward(kind: str, args: Operands, mask: Array | None):
    """``((hs [B, T, U], final states after h), residuals)`` from the forward kernel."""
    batch, time, width = args.xw.shape
    units = args.recurrent_kernel.shape[0]
    state = ((batch, time, units), jnp.float32)
    gates = ((batch, time, width), jnp.float32)
    optional = _optional_inputs(args, mask)
    xw, kernel = args.xw, args.recurrent_kernel
    if kind == "lstm":
        hs, cs, activated, tanh_cs = _call(
            "rnnjax_lstm_forward", [state, state, gates, state], xw, kernel, *args.states, *optional
        )
        return (hs, (cs[:, -1],)), (cs, activated, tanh_cs)
    if kind == "gru":
        hs, activated, candidate = _call(
            "rnnjax_gru_forward",
            [state, gates, state],
            xw,
            kernel,
            args.recurrent_bias,
            *args.states,
            *optional,
        )
        return (hs, ()), (activated, candidate)
    if kind == "gru_reset_before":
        hs, activated = _call(
            "rnnjax_gru_reset_before_forward", [state, gates], xw, kernel, *args.states, *optional
        )
        return (hs, ()), (activated,)
    (hs,) = _call("rnnjax_simple_rnn_forward", [state], xw, kernel, *args.states, *optional)
    return (hs, ()), ()


def _kernel_backward(kind, args: Operands, mask, hs, residuals, cotangents):
    """``(dxw, d_recurrent, d_states)`` from the backward kernel: the gradients of the input
    projection, of the recurrent products (gate g's ``h' @ R_g``, ``[B, T, G*U]``) and of the
    initial states."""
    dhs, d_finals = cotangents
    state = (args.states[0].shape, jnp.float32)
    gates = (args.xw.shape, jnp.float32)
    optional = _optional_inputs(args, mask)
    kernel = args.recurrent_kernel
    if kind == "lstm":
        cs, activated, tanh_cs = residuals
        dz, dh0, dc0 = _call(
            "rnnjax_lstm_backward",
            [gates, state, state],
            dhs,
            *d_finals,
            activated,
            cs,
            tanh_cs,
            args.states[1],
            kernel,
            *optional,
        )
        return dz, dz, (dh0, dc0)
    if kind == "gru":
        activated, candidate = residuals
        dxw, dhr, dh0 = _call(
            "rnnjax_gru_backward",
            [gates, gates, state],
            dhs,
            activated,
            candidate,
            hs,
            args.states[0],
            kernel,
            *optional,
        )
        return dxw, dhr, (dh0,)
    if kind == "gru_reset_before":
        (activated,) = residuals
        dxw, dh0 = _call(
            "rnnjax_gru_reset_before_backward",
            [gates, state],
            dhs,
            activated,
            hs,
            args.states[0],
            kernel,
            *optional,
        )
        return dxw, dxw, (dh0,)
    dxw, dh0 = _call(
        "rnnjax_simple_rnn_backward", [gates, state], dhs, hs, args.states[0], kernel, *optional
    )
    return dxw, dxw, (dh0,)


def _previous(h0: Array, hs: Array) -> Array:
    """The state each step started from: ``[h0, hs[:, 0], ..., hs[:, -2]]``, ``[B, T, U]``. At a
    masked step ``hs`` repeats the carried state, so this is right through padding too."""
    return jnp.concatenate([h0[:, None], hs[:, :-1]], axis=1)


def _gradients(kind: str, args: Operands, mask, hs, residuals, cotangents) -> Operands:
    """The cotangents of ``args``: the backward kernel, then the weight gradients in XLA, each one
    einsum over all timesteps (``dR_g = sum_t h'_{t-1}^T d_recurrent_g``)."""
    dxw, d_recurrent, d_states = _kernel_backward(kind, args, mask, hs, residuals, cotangents)
    kernel, masks = args.recurrent_kernel, args.recurrent_masks
    units, width = kernel.shape
    previous = _previous(args.states[0], hs)
    d_bias = None if args.recurrent_bias is None else d_recurrent.sum(axis=(0, 1))
    if masks is None and kind != "gru_reset_before":
        d_kernel = jnp.einsum("btu,btg->ug", previous, d_recurrent)
        return Operands(dxw, d_kernel, d_bias, d_states, None)
    # Gate g multiplies R_g by its own vector: h (times mask g), and for reset_after=False's
    # candidate r * h.
    operands = [previous] * (width // units)
    if kind == "gru_reset_before":
        operands[2] = residuals[0][..., units : 2 * units] * previous
    operands = jnp.stack(operands)  # [G, B, T, U]
    per_gate = d_recurrent.reshape(*d_recurrent.shape[:2], width // units, units)  # [B, T, G, U]
    masked = operands if masks is None else operands * masks[:, :, None]
    d_kernel = jnp.einsum("gbtu,btgv->ugv", masked, per_gate).reshape(units, width)
    d_masks = None
    if masks is not None:
        d_masks = jnp.einsum(
            "gbtu,btgv,ugv->gbu", operands, per_gate, kernel.reshape(units, -1, units)
        )
    return Operands(dxw, d_kernel, d_bias, d_states, d_masks)


# --- Differentiation -----------------------------------------------------------------------------


def _reference(kind: str, args: Operands, mask: Array | None):
    """The recurrence as the scan path computes it (the cell's ``step`` in ``lax.scan``, states
    carried where ``mask`` is False): ``(hs, final states after h)``. Differentiable to any order;
    the kernels' derivatives beyond the first reverse-mode one go through it."""
    units = args.recurrent_kernel.shape[0]
    cell = KINDS[kind](units, parent=None)
    params = {"recurrent_kernel": args.recurrent_kernel}
    if args.recurrent_bias is not None:  # the GRU reads its recurrent bias from bias[1]
        params["bias"] = jnp.stack([jnp.zeros_like(args.recurrent_bias), args.recurrent_bias])

    def step(carry, inputs):
        xw_t, keep = inputs
        new, _ = cell.apply({"params": params}, carry, xw_t, args.recurrent_masks, method="step")
        if keep is not None:
            new = tuple(jnp.where(keep[:, None], n, o) for n, o in zip(new, carry))
        return new, new[0]

    steps = (jnp.swapaxes(args.xw, 0, 1), None if mask is None else jnp.swapaxes(mask, 0, 1))
    carry, hs = jax.lax.scan(step, tuple(args.states), steps)
    return jnp.swapaxes(hs, 0, 1), tuple(carry[1:])


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _forward(kind: str, args: Operands, mask: Array | None):
    """The forward kernel, differentiable: outputs' tangents come from ``_reference``. The
    residuals' tangents are zeros: they only feed ``_backward``, whose own derivative is taken
    from ``args`` through the reference."""
    return _kernel_forward(kind, args, mask)


@_forward.defjvp
def _forward_jvp(kind, primals, tangents):
    args, mask = primals
    outputs, residuals = _forward(kind, args, mask)
    _, d_outputs = jax.jvp(lambda a: _reference(kind, a, mask), (args,), (tangents[0],))
    return (outputs, residuals), (d_outputs, jax.tree.map(jnp.zeros_like, residuals))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _backward(kind: str, args: Operands, mask, hs, residuals, cotangents) -> Operands:
    """The backward kernels (``_gradients``), differentiable: their derivative is that of the
    reference's VJP in ``args`` and ``cotangents`` (``hs`` and ``residuals`` are functions of
    ``args``)."""
    return _gradients(kind, args, mask, hs, residuals, cotangents)


@_backward.defjvp
def _backward_jvp(kind, primals, tangents):
    args, mask, _, _, cotangents = primals
    d_args, _, _, _, d_cotangents = tangents

    def reference_gradients(args, cotangents):
        return jax.vjp(lambda a: _reference(kind, a, mask), args)[1](cotangents)[0]

    _, d_gradients = jax.jvp(reference_gradients, (args, cotangents), (d_args, d_cotangents))
    return _backward(kind, *primals), d_gradients


def _instantiate_zeros(tree):
    """Symbolic zeros (JAX's ``Zero``, a pytree node of its own) as arrays of zeros."""
    return jax.tree.map(instantiate_zeros, tree, is_leaf=lambda leaf: isinstance(leaf, Zero))


class _Recurrence(VJPHiPrimitive):
    """One recurrence as a JAX primitive with both derivative rules: reverse mode through the
    kernels (``vjp_fwd``/``vjp_bwd_retval``) and forward mode through the reference (``jvp``,
    and ``lin``/``linearized`` for ``jax.linearize``). ``jax.custom_vjp`` has no forward mode at
    all, ``jax.custom_jvp`` would send reverse mode through the reference's scan."""

    def __init__(self, kind: str, args: Operands, mask: Array | None):
        self.in_avals = (jax.tree.map(jax.typeof, args), None if mask is None else jax.typeof(mask))
        units = args.recurrent_kernel.shape[0]
        hs = ShapedArray((*args.xw.shape[:-1], units), jnp.float32)
        self.out_aval = (hs, tuple(jax.typeof(state) for state in args.states[1:]))
        self.params = {"kind": kind, "signature": self.in_avals}
        super().__init__()

    def expand(self, args, mask):
        return _forward(self.kind, args, mask)[0]

    def vjp_fwd(self, nonzeros, args, mask):
        del nonzeros  # unused cotangents are dropped by XLA's dead-code elimination
        outputs, residuals = _forward(self.kind, args, mask)
        return outputs, (args, mask, outputs[0], residuals)

    def vjp_bwd_retval(self, saved, cotangents):
        args, mask, hs, residuals = saved
        cotangents = _instantiate_zeros(cotangents)
        return _backward(self.kind, args, mask, hs, residuals, cotangents), None

    def jvp(self, primals, tangents):
        return self(*primals), self.linearized(primals, *tangents)

    def lin(self, nonzeros, args, mask):  # jax.linearize
        del nonzeros
        return self(args, mask), (args, mask)

    def linearized(self, saved, d_args, d_mask):
        args, mask = saved
        d_args = _instantiate_zeros(d_args)
        _, d_outputs = jax.jvp(lambda a: _reference(self.kind, a, mask), (args,), (d_args,))
        return d_outputs

    def batch_dim_rule(self, axis_data, dims):
        # The kernels take any leading axes (vmap_method="broadcast_all"): outputs lead with the
        # batched axis whenever any input has one.
        batched = any(dim is not None for dim in jax.tree.leaves(dims))
        axis = 0 if batched else None
        return (axis, tuple(axis for _ in self.out_aval[1]))


def recurrence(
    kind: str,
    xw: Array,
    recurrent_kernel: Array,
    initial_states: tuple[Array, ...],
    *,
    recurrent_bias: Array | None = None,
    mask: Array | None = None,
    recurrent_masks: Array | None = None,
) -> tuple[Array, tuple[Array, ...]]:
    """Runs the Keras recurrence ``kind`` (a key of ``KINDS``) over a sequence in the kernels.

    Args:
      kind: ``"lstm"`` (gates ``[i, f, c, o]``), ``"gru"`` (``reset_after=True``, gates ``[z, r,
        h]``), ``"gru_reset_before"`` or ``"simple_rnn"``; activations tanh and sigmoid.
      xw: ``[B, T, G*U]`` float32, ``x @ kernel + input bias`` of every step.
      recurrent_kernel: ``[U, G*U]``.
      initial_states: ``(h0, c0)`` for LSTM, ``(h0,)`` otherwise, each ``[B, U]``.
      recurrent_bias: ``[3U]`` for ``"gru"`` (Keras' ``bias[1]``), else None.
      mask: optional ``[B, T]`` booleans, False at padding: the states are carried through.
      recurrent_masks: optional ``[G, B, U]`` recurrent dropout masks, one per gate.

    Returns:
      ``(hs [B, T, U], final states after h)``: the final ``h`` is ``hs[:, -1]``; LSTM adds the
      final ``c``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if (recurrent_bias is None) != (kind != "gru"):
        raise ValueError("recurrent_bias is required for kind 'gru' and only for it")
    args = Operands(xw, recurrent_kernel, recurrent_bias, tuple(initial_states), recurrent_masks)
    if xw.shape[-2] == 0:  # nothing to run: the states stay as they are
        return jnp.zeros((*xw.shape[:-1], recurrent_kernel.shape[0]), xw.dtype), args.states[1:]
    return _Recurrence(kind, args, mask)(args, mask)


# --- Sequence layers --------------------------------------------------------------------------


def _per_batch_shard(fn, batch_size: int, specs):
    """``fn`` run on each device's rows when a data-parallel mesh is in context
    (``jax.sharding.use_abstract_mesh``, which ``rnnjax.steps`` sets for a sharded epoch);
    otherwise ``fn`` itself. ``specs(rows)`` gives the arguments' partition specs, ``rows`` being
    the spec of an axis over the mesh (weights are replicated). Without this, XLA would gather the
    whole batch onto every device for the custom call and run the recurrence replicated."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or batch_size % mesh.size:
        return fn
    return jax.shard_map(
        fn,
        mesh=mesh,
        in_specs=specs(mesh.axis_names),
        out_specs=PartitionSpec(mesh.axis_names),
        # The custom calls' outputs carry no varying-axis types, so skip that check.
        check_vma=False,
    )


def run(
    cell: RecurrentCell,
    xw: Array,
    carry: Carry,
    mask: Array | None = None,
    recurrent_masks: Array | None = None,
) -> tuple[Carry, Array]:
    """Runs a bound cell's recurrence over ``xw [B, T, G*U]`` (its ``project`` output) from
    ``carry``, with an optional padding ``mask [B, T]`` and recurrent dropout masks ``[G, B, U]``
    (``cell.dropout_masks``); returns ``(final carry, outputs [B, T, U])``."""
    kind = kind_of(cell)
    batch_size = xw.shape[0]
    mask = None if mask is None else mask.astype(bool)  # the kernels read booleans
    # Parameters of another param_dtype are used in the compute dtype, float32, as on the scan.
    recurrent_kernel = cell.get_variable("params", "recurrent_kernel").astype(xw.dtype)
    recurrent_bias = None
    if kind == "gru":
        recurrent_bias = (
            cell.get_variable("params", "bias")[1].astype(xw.dtype)
            if cell.use_bias
            else jnp.zeros(recurrent_kernel.shape[-1], xw.dtype)
        )

    def call(xw, recurrent_kernel, recurrent_bias, states, mask, recurrent_masks):
        return recurrence(
            kind,
            xw,
            recurrent_kernel,
            states,
            recurrent_bias=recurrent_bias,
            mask=mask,
            recurrent_masks=recurrent_masks,
        )

    def specs(axis):
        rows, replicated = PartitionSpec(axis), PartitionSpec()
        return (
            rows,
            replicated,
            None if recurrent_bias is None else replicated,
            tuple(rows for _ in carry),
            None if mask is None else rows,
            None if recurrent_masks is None else PartitionSpec(None, axis),
        )

    operands = (xw, recurrent_kernel, recurrent_bias, tuple(carry), mask, recurrent_masks)
    hs, finals = _per_batch_shard(call, batch_size, specs)(*operands)
    h_last = hs[:, -1] if hs.shape[1] else carry[0]
    return (h_last, *finals), hs
