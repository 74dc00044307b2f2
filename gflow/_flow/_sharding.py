"""Running a batched (ensemble) solve on one device, several devices or several hosts.

The ensemble axis (axis 0 of every array leaf) is laid out over a one-dimensional device
`Mesh` with `NamedSharding(mesh, P("ensemble"))`. The batched solve runs under
`jax.shard_map`: every device integrates its own block of members with a vmapped solve, in
one jitted program, with no communication between devices during the solve (each device's
while loop ends when *its* slowest member is done). On a single device this is the plain
`jax.jit(jax.vmap(solve))`.

Several hosts: call `init_distributed()` (or set GFLOW_DISTRIBUTED=1 before importing
gflow) at the start of the same script on every host; `jax.devices()` then lists the
devices of all hosts, every process builds the same ensemble (same seeds), supplies its own
devices' blocks, and `gather` returns the full result on every host.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

ENSEMBLE_AXIS = "ensemble"
PyTree = Any


def init_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    **kwargs: Any,
) -> dict[str, int]:
    """Join a multi-host JAX job (`jax.distributed.initialize`); call it once per process,
    before any other JAX work.

    Arguments default to the environment variables GFLOW_COORDINATOR ("host:port" of
    process 0), GFLOW_NUM_PROCESSES and GFLOW_PROCESS_ID; when those are unset too, JAX
    detects the cluster itself (Slurm, Open MPI, Cloud TPU). Other keyword arguments go to
    `jax.distributed.initialize` (e.g. local_device_ids).

    Returns:
        {"process_index", "process_count", "local_devices", "global_devices"}.
    """
    env = os.environ
    if coordinator_address is None:
        coordinator_address = env.get("GFLOW_COORDINATOR")
    if num_processes is None and env.get("GFLOW_NUM_PROCESSES"):
        num_processes = int(env["GFLOW_NUM_PROCESSES"])
    if process_id is None and env.get("GFLOW_PROCESS_ID"):
        process_id = int(env["GFLOW_PROCESS_ID"])
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )
    return {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "local_devices": jax.local_device_count(),
        "global_devices": jax.device_count(),
    }


def ensemble_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named "ensemble" over `devices` (default: all devices of all hosts)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices: empty device list; pass None to use all devices.")
    return Mesh(np.array(devices), (ENSEMBLE_AXIS,))


def padded_size(n_members: int, n_devices: int) -> int:
    """The smallest multiple of `n_devices` that holds `n_members` (shards are equal)."""
    return -(-n_members // n_devices) * n_devices


def _pad(leaf: np.ndarray, size: int) -> np.ndarray:
    """Pad axis 0 to `size` with copies of member 0 (they run like member 0 and never
    make the ensemble slower than member 0 alone)."""
    extra = size - leaf.shape[0]
    if extra == 0:
        return leaf
    return np.concatenate([leaf, np.repeat(leaf[:1], extra, axis=0)], axis=0)


def shard_batch(tree: PyTree, mesh: Mesh, size: int) -> PyTree:
    """Global arrays, padded to `size` along axis 0 and sharded over `mesh` along it.

    Every process holds the whole host batch; each supplies the blocks of its own devices
    (`jax.make_array_from_callback`), so this works on one host and on several alike."""
    sharding = NamedSharding(mesh, P(ENSEMBLE_AXIS))

    def put(leaf):
        host = _pad(np.asarray(leaf), size)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jtu.tree_map(put, tree)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Global arrays replicated on every device of `mesh`."""
    sharding = NamedSharding(mesh, P())

    def put(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jtu.tree_map(put, tree)


def gather(tree: PyTree) -> PyTree:
    """Host numpy copies of (possibly sharded, possibly multi-host) arrays, on every host."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def batched_solve(
    solve: Callable[[PyTree, jax.Array], PyTree], static: PyTree, mesh: Mesh | None
) -> Callable[[PyTree, jax.Array], PyTree]:
    """The function to jit: `(batched array part of the problem, ts) -> batched outputs`.

    `static` is the non-array part of the problem (closed over). Without a mesh (or with a
    one-device mesh) it is `vmap(solve)`; otherwise `shard_map` of it over the mesh, every
    device solving its block independently."""

    def one(dyn, ts):
        return solve(eqx.combine(dyn, static), ts)

    vmapped = jax.vmap(one, in_axes=(0, None))
    if mesh is None or mesh.size == 1:
        return vmapped
    return jax.shard_map(
        vmapped,
        mesh=mesh,
        in_specs=(P(ENSEMBLE_AXIS), P()),
        out_specs=P(ENSEMBLE_AXIS),
        check_vma=False,
    )
