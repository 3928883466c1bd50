"""Data parallelism across processes and machines, on MPI: `mpiexec -n N python train.py`.

Every rank holds the whole model and runs the same compiled programs on its own part of each batch;
gradients are summed across ranks (weighted by each rank's share of the batch) before the update,
so every rank applies the same update to the same parameters. The collectives are MPI's (mpi4py,
the `mpi` extra: `pip install 'jitnet[mpi]'`); jitnet adds only what a training loop needs:

- `init()` joins the job the launcher started (it is called by the first function that needs it);
  without a launcher, or without mpi4py in a one-process job, every call here is a no-op over a
  world of one. `rank()`, `world_size()`, `is_main()`, `barrier()`.
- `allreduce_mean(tree)` / `allreduce_sum(tree)` of a pytree of Arrays or numpy arrays, as a few
  large flat buckets per dtype (BUCKET_BYTES), each a reduce-scatter then an all-gather: every
  element is reduced once, by one rank, in one order, so every rank receives the same bits (a plain
  allreduce may round differently on different ranks, and replicas would drift apart).
- `broadcast(tree, root=0)`: parameters, buffers and optimizer state from one rank to all.

GPU Arrays are staged through host memory, unless the MPI library reports CUDA support
(`cuda_aware`): then the buckets are device buffers handed to MPI directly.

Failures are loud, never a hang: after `init()` an uncaught exception on any rank aborts the whole
job (as `python -m mpi4py` does), a rank that dies is reported by the launcher, which stops the
others, and every collective waits at most `JITNET_DIST_TIMEOUT` seconds (default 300) before it
aborts the job with an error naming the collective.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from typing import Any

import numpy as np

from jitnet.ir import pytree
from jitnet.runtime.array import Array, asarray

ABORT_GRACE_S = 1.0  # between a failing rank's last words and MPI_Abort
BUCKET_BYTES = 32 << 20  # leaves are packed into flat buffers of at most this many bytes (one bigger leaf: its own)
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")  # set by MPICH's, OpenMPI's launchers


class _World:
    """The communicator (None in a world of one) and what jitnet needs to know of it."""

    def __init__(self, comm=None, cuda_aware: bool = False):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.cuda_aware = cuda_aware


_world: _World | None = None
_init_lock = threading.Lock()


def launched_size() -> int:
    """The number of ranks the launcher's environment states (0: not started by an MPI launcher)."""
    for var in _SIZE_VARS:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


def timeout_s() -> float:
    value = os.environ.get("JITNET_DIST_TIMEOUT", "300")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"JITNET_DIST_TIMEOUT={value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise ValueError(f"JITNET_DIST_TIMEOUT must be positive, got {value!r}")
    return seconds


def init() -> None:
    """Join the MPI job this process was started in; a world of one when there is none. Idempotent."""
    global _world
    with _init_lock:
        if _world is not None:
            return
        size = launched_size()
        if size == 0 and "mpi4py.MPI" not in sys.modules:  # no launcher, no MPI in use: a single process
            _world = _World()
            return
        try:
            from mpi4py import MPI
        except ImportError:
            if size > 1:
                raise RuntimeError(
                    f"jn.distributed: this process was started by an MPI launcher with {size} ranks, but mpi4py "
                    "is not installed: pip install 'jitnet[mpi]'"
                ) from None
            _world = _World()
            return
        comm = MPI.COMM_WORLD
        _world = _World(comm if comm.Get_size() > 1 else None, cuda_aware(MPI))
        if _world.comm is not None:
            _abort_on_uncaught_exceptions(comm)


def cuda_aware(MPI) -> bool:
    """Whether the MPI library takes CUDA device buffers: JITNET_MPI_CUDA=0/1 if set, else the
    library's own answer (MPICH's MPIX_GPU_query_support, Open MPI's MPIX_Query_cuda_support; mpi4py
    has no binding for either, so they are looked up in the library mpi4py loaded)."""
    setting = os.environ.get("JITNET_MPI_CUDA", "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    try:
        lib = ctypes.CDLL(MPI.__file__)
    except OSError:
        return False
    if hasattr(lib, "MPIX_GPU_query_support"):
        answer = ctypes.c_int(0)
        return lib.MPIX_GPU_query_support(0, ctypes.byref(answer)) == 0 and answer.value == 1  # 0: CUDA
    if hasattr(lib, "MPIX_Query_cuda_support"):
        return lib.MPIX_Query_cuda_support() == 1
    return False


def _abort_on_uncaught_exceptions(comm) -> None:
    """An exception that ends one rank ends the job (the others would wait for it forever)."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.write(f"jn.distributed: rank {comm.Get_rank()} failed; aborting all {comm.Get_size()} ranks\n")
        _abort(comm)

    sys.excepthook = hook


def _get() -> _World:
    if _world is None:
        init()
    return _world


def rank() -> int:
    """This process's rank (0 in a world of one)."""
    return _get().rank


def world_size() -> int:
    """The number of ranks (1 without MPI)."""
    return _get().size


def is_main() -> bool:
    """Rank 0: the one that prints, logs and writes checkpoints."""
    return _get().rank == 0


def abort(message: str) -> None:
    """Print `message` and stop every rank of the job (a no-op raise in a world of one)."""
    world = _get()
    if world.comm is None:
        raise RuntimeError(message)
    sys.stderr.write(f"{message}\n")
    _abort(world.comm)


def _abort(comm) -> None:
    """MPI_Abort, once what this rank wrote has had time to reach the launcher: MPICH's launcher
    kills every rank at once, and output still in its pipes would be lost (seen under load)."""
    sys.stderr.flush()
    sys.stdout.flush()
    time.sleep(ABORT_GRACE_S)
    comm.Abort(1)


def _wait(requests: list, what: str) -> None:
    """Wait for nonblocking MPI requests, at most timeout_s(); past it, abort the job. A busy poll,
    as MPI's own blocking wait is: MPICH advances a collective only inside its calls, so a rank that
    sleeps between tests stalls the exchange (a 3-4 ms floor on every allreduce, measured)."""
    deadline = time.monotonic() + timeout_s()
    while not all([r.Test() for r in requests]):  # each Test completes its request once it can
        if time.monotonic() > deadline:
            abort(
                f"jn.distributed: rank {rank()}: {what} did not complete within {timeout_s():.0f} s "
                "(JITNET_DIST_TIMEOUT): another rank stopped, hangs or runs a different step"
            )


def barrier() -> None:
    world = _get()
    if world.comm is not None:
        _wait([world.comm.Ibarrier()], "barrier")


def allgather(obj: Any) -> list:
    """Every rank's `obj` (a small picklable value), in rank order."""
    world = _get()
    if world.comm is None:
        return [obj]
    return world.comm.allgather(obj)


# ---- reductions and broadcasts of pytrees ----


def allreduce_sum(tree: Any, host: bool = False) -> Any:
    """The elementwise sum over ranks of a pytree of Arrays / numpy arrays / numbers, the same bits
    on every rank; Arrays come back as Arrays on their device (host=True: as numpy arrays, for a
    caller that goes on on the host), everything else as numpy."""
    return _reduce(tree, None, host)


def allreduce_mean(tree: Any) -> Any:
    """The elementwise mean over ranks of a pytree of float leaves (see allreduce_sum)."""
    leaves, _ = pytree.flatten(tree)
    ints = [i for i, x in enumerate(leaves) if np.dtype(getattr(x, "dtype", np.asarray(x).dtype)).kind != "f"]
    if ints:
        raise TypeError(f"jn.distributed.allreduce_mean: leaves {ints} are not floats (use allreduce_sum)")
    return _reduce(tree, 1.0 / world_size())


def _reduce(tree: Any, scale: float | None, host: bool = False) -> Any:
    leaves, treedef = pytree.flatten(tree)
    world = _get()
    if world.comm is None:
        out = [np.array(_host(x), copy=True) for x in leaves]
    else:
        device = [isinstance(x, Array) and not x.device.host and world.cuda_aware for x in leaves]
        out = _reduce_buckets(world, leaves, device)
    if scale is not None and scale != 1.0:
        out = [o * o.dtype.type(scale) for o in out]
    if host:
        out = [o.numpy() if isinstance(o, Array) else o for o in out]
    return pytree.unflatten(treedef, out if host else [_like(o, x) for o, x in zip(out, leaves)])


def _host(x) -> np.ndarray:
    return x.numpy() if isinstance(x, Array) else np.asarray(x)


def _like(value: np.ndarray, original):
    """`value` as `original` was: an Array on its device, else numpy."""
    if isinstance(original, Array):
        return value if isinstance(value, Array) else asarray(value, device=original.device)
    return value


def buckets(sizes: list[int], itemsize: int, limit: int = BUCKET_BYTES) -> list[list[int]]:
    """Leaf indices grouped into consecutive buckets of at most `limit` bytes (a leaf bigger than
    that alone in its own)."""
    out: list[list[int]] = []
    used = limit
    for i, size in enumerate(sizes):
        nbytes = size * itemsize
        if used + nbytes > limit:
            out.append([])
            used = 0
        out[-1].append(i)
        used += nbytes
    return out


def _reduce_buckets(world: _World, leaves: list, on_device: list[bool]) -> list:
    """Sum the leaves over ranks: per dtype, in buckets, each reduce-scattered then all-gathered."""
    from mpi4py import MPI

    comm, size = world.comm, world.size
    results: list = [None] * len(leaves)
    groups: dict = {}
    for i, x in enumerate(leaves):
        dtype = np.dtype(x.dtype) if isinstance(x, Array) else np.asarray(x).dtype
        groups.setdefault((dtype.str, on_device[i]), []).append(i)
    pending = []  # (send, part, gathered, members, device) per bucket
    for slot, ((dtype_str, device), indices) in enumerate(groups.items()):
        dtype = np.dtype(dtype_str)
        sizes = [int(np.prod(np.shape(leaves[i]))) for i in indices]
        for b, bucket in enumerate(buckets(sizes, dtype.itemsize)):
            members = [indices[j] for j in bucket]
            block = max(1, -(-sum(sizes[j] for j in bucket) // size))
            send, part, full = _workspace((slot, b, dtype.str, block, size, device), dtype)
            _pack(send, leaves, members)
            pending.append((send, part, full, members, device))
    requests = [comm.Ireduce_scatter_block(send, part, op=MPI.SUM) for send, part, *_ in pending]
    _wait(requests, "allreduce (reduce-scatter)")
    _wait([comm.Iallgather(part, full) for _, part, full, *_ in pending], "allreduce (all-gather)")
    for _, _, full, members, device in pending:
        at = 0
        for i in members:
            shape = tuple(np.shape(leaves[i]))
            size_i = int(np.prod(shape))
            if device:  # a copy into a buffer of the leaf's device pool, owned by the new Array
                dev = leaves[i].device
                results[i] = Array(dev.storage(full[at : at + size_i]), shape, dev)
            else:
                results[i] = full[at : at + size_i].reshape(shape).copy()
            at += size_i
    return results


_workspaces: dict = {}  # (bucket's place in its call, dtype, block, ranks, on device) -> (send, part, full)
MAX_WORKSPACES = 16


def _workspace(key: tuple, dtype: np.dtype) -> tuple:
    """The buffers of one bucket: send (block * size), this rank's reduced part (block), the
    gathered result (block * size). Kept for the next call of the same layout (a training step's
    buckets are the same every step): fresh buffers cost page faults and zeroing at every step."""
    *_, block, size, device = key
    buffers = _workspaces.pop(key, None)
    if buffers is None:
        if device:
            from numba import cuda

            empty = lambda n: cuda.device_array(n, dtype)
        else:
            empty = lambda n: np.empty(n, dtype)
        buffers = (empty(block * size), empty(block), empty(block * size))
    _workspaces[key] = buffers  # most recently used last
    while len(_workspaces) > MAX_WORKSPACES:
        _workspaces.pop(next(iter(_workspaces)))
    return buffers


def _pack(send, leaves: list, members: list[int]) -> None:
    """The members' elements end to end in `send`, zeros after them."""
    at = 0
    for i in members:
        if isinstance(send, np.ndarray):
            values = _host(leaves[i]).reshape(-1)
            send[at : at + values.size] = values
        else:  # a device bucket: device-to-device copies
            values = leaves[i].buffer()
            if values.size:
                send[at : at + values.size].copy_to_device(values)
        at += values.size
    if at < send.size:
        tail = send[at:]
        if isinstance(send, np.ndarray):
            tail.fill(0)
        else:
            tail.copy_to_device(np.zeros(tail.size, send.dtype))


def broadcast(tree: Any, root: int = 0) -> Any:
    """Rank `root`'s values of a pytree on every rank (same structure, shapes and dtypes on all)."""
    world = _get()
    leaves, treedef = pytree.flatten(tree)
    if world.comm is None:
        return tree
    specs = allgather([(tuple(np.shape(x)), str(np.dtype(getattr(x, "dtype", np.asarray(x).dtype)))) for x in leaves])
    for r, spec in enumerate(specs):
        if spec != specs[root]:
            raise RuntimeError(
                f"jn.distributed.broadcast: rank {r}'s tree differs from rank {root}'s: {_diff(spec, specs[root])}"
            )
    out = []
    for x in leaves:
        values = np.array(_host(x), order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        buf = values if world.rank == root else np.empty_like(values)
        _wait([world.comm.Ibcast(buf.reshape(-1).view(np.uint8), root=root)], "broadcast")
        out.append(_like(buf, x))
    return pytree.unflatten(treedef, out)


def _diff(a: list, b: list) -> str:
    if len(a) != len(b):
        return f"{len(a)} leaves vs {len(b)}"
    i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    return f"leaf {i}: shape/dtype {a[i]} vs {b[i]}"
