"""Data parallelism: each batch split over a 1-D device mesh, everything else replicated.

One process: ``data_mesh(N)`` over the first N local devices (on CPU, more devices come from
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` or ``jax_num_cpu_devices``). Several hosts:
call ``jax.distributed.initialize(...)`` in every process first (see the README); the mesh then
spans all processes' devices and every process runs the same program on the same data.

The mesh axis is ``Auto``: with jax >= 0.9's default ``Explicit`` axes, ``nn.Embed``'s gather with
sharded ids does not type-check; with ``Auto``, XLA propagates the batch sharding itself.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXIS = "data"


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D ``'data'`` mesh over ``num_devices`` devices (all of them when None)."""
    available = jax.device_count()
    num_devices = available if num_devices is None else num_devices
    if num_devices < 1:
        raise ValueError(f"the number of devices must be >= 1, got {num_devices}")
    if num_devices > available:
        raise ValueError(
            f"asked for {num_devices} devices but {available} are available; on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={num_devices} before starting"
        )
    return jax.make_mesh(
        (num_devices,), (AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:num_devices]
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of ``tree`` copied whole to every device of ``mesh`` (also across hosts: each
    process supplies its own, identical, copy)."""
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(leaf))
            impl = jax.random.key_impl(leaf)
            raw = jax.make_array_from_callback(data.shape, sharding, lambda index: data[index])
            return jax.random.wrap_key_data(raw, impl=impl)
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)
