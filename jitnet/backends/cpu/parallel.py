"""Parallel CPU kernels without numba's parfors, and calls between kernels without linking.

Why: numba compiles every `prange` loop into a gufunc of its own and links every njit callee into
each caller, re-optimising the callee's LLVM there. A trivial prange kernel took 0.23 s to compile
against 0.07 s serial, and a GEMM module whose micro-kernel passed through LLVM four times (its
function, the per-image function, the kernel and the kernel's gufunc) took 2.5-5 s. So:

- One launcher, `jitnet_parallel_for(chunk, args, nt)`, compiled once (a `cfunc` holding the only
  prange), calls `chunk(args, t, nt)` for t in [0, nt) on numba's thread pool.
- A parallel kernel module defines its loop body as a serial `cfunc` chunk (arrays come in through
  `args`, a table of data addresses), registers it as an LLVM symbol, and a small `njit` entry
  fills the table and calls the launcher by symbol name.
- Shared code (the GEMM core, cpu/gemm.py) is a `cfunc` called by symbol name as well: compiled once
  per process, cached once on disk, and never re-optimised inside its callers.

Symbols are resolved when a caller is finalised, also when numba loads it from its disk cache, so a
module registers every symbol it calls (`require` / `register`) before the functions that call them
are compiled or loaded: a generated module does that in its first lines.

Checked mode (`JITNET_BOUNDSCHECK=1`, read when a kernel's source is generated): every generated
CPU kernel and GEMM core compiles with numba's `boundscheck=True`, which also makes the unchecked
intrinsics (`ld`, `st`, `vload_n`, ..., `span`) check their element ranges; the flag is in the
source, so checked kernels have cache entries of their own. A chunk's table carries each array's
true size. An exception in a `cfunc` does not reach its caller: numba prints "Exception ignored"
and the cfunc returns, the launch goes on and the call returns a wrong result. So in checked mode
chunks and cores catch it and set a process-wide failure word, which the entry tests after the
launch and turns into an IndexError at the kernel's call.
"""

from __future__ import annotations

import hashlib
import os

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np import numpy_support
from numba.np.arrayobj import populate_array

from jitnet.backends.cpu.intrinsics import check_range

I64 = ir.IntType(64)
CHUNK = ir.FunctionType(ir.VoidType(), [I64, I64, I64])  # chunk(args, t, nt)
LAUNCHER = "jitnet_parallel_for"

LAUNCHER_SOURCE = f'''"""jitnet's parallel launcher: chunk(args, t, nt) for t in [0, nt) on numba's threads."""
from numba import cfunc, prange
from numba.types import int64, void

from jitnet.backends.cpu.parallel import call_address


@cfunc(void(int64, int64, int64), parallel=True, cache=True)
def {LAUNCHER}(chunk, args, nt):
    for t in prange(nt):
        call_address(chunk, args, t, nt)
'''

BOUNDSCHECK = "JITNET_BOUNDSCHECK"
FAILURE = "jitnet_chunk_failure"  # the failure word's symbol (checked mode)

_registered: set[str] = set()
_failure = np.zeros(1, np.int64)
llvm.add_symbol(FAILURE, _failure.ctypes.data)


def checked() -> bool:
    """Whether kernels generated now check their indexing (JITNET_BOUNDSCHECK=1)."""
    return os.environ.get(BOUNDSCHECK, "0") not in ("", "0")


def jit_flags(extra: str = "") -> str:
    """The numba options of a generated kernel: numpy's error model, `extra`, and checked indexing
    in checked mode."""
    return 'error_model="numpy"' + (f", {extra}" if extra else "") + (", boundscheck=True" if checked() else "")


def cfunc_source(name: str, params: list[str], flags: str, body: list[str]) -> list[str]:
    """Source lines of the void cfunc `name(<params>)` (all int64) whose body is `body` (lines
    indented one level). In checked mode the body is an njit function the cfunc calls in a try:
    an exception sets the failure word instead of vanishing (see the module docstring). (A try
    around a long body, such as the GEMM core's, exhausts numba's recursion limit.)"""
    args = ", ".join(params)
    head = [f"@cfunc(void({', '.join(['int64'] * len(params))}), cache=True, {flags})", f"def {name}({args}):"]
    if not checked():
        return head + list(body)
    guard = ["    try:", f"        {name}_body({args})", "    except Exception:", "        fail()"]
    return [f"@njit(cache=True, {flags})", f"def {name}_body({args}):", *body, "", "", *head, *guard]


def register(name: str, fn) -> None:
    """Make the cfunc `fn` callable by the symbol `name` from compiled kernels."""
    llvm.add_symbol(name, fn.address)
    _registered.add(name)


def require() -> None:
    """Load (compile once, then from the disk cache) and register the launcher."""
    if LAUNCHER not in _registered:
        from jitnet.codegen import cache

        register(LAUNCHER, cache.load(LAUNCHER_SOURCE, LAUNCHER))


def symbol(text: str, prefix: str = "jitnet_chunk") -> str:
    """A symbol name unique to `text` (the chunk's source): equal text may share it."""
    return f"{prefix}_{hashlib.sha256(text.encode()).hexdigest()[:20]}"


# ---- intrinsics -------------------------------------------------------------------------------


@intrinsic
def call_address(typingctx, fn, args, t, nt):
    """fn(args, t, nt) where fn is a chunk's address."""
    sig = types.void(types.int64, types.int64, types.int64, types.int64)

    def codegen(context, builder, sig, a):
        builder.call(builder.inttoptr(a[0], CHUNK.as_pointer()), list(a[1:]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic(prefer_literal=True)
def launch(typingctx, name, table, nt, *keep):
    """Run the chunk `name` (a symbol) over nt threads, or call it directly when nt <= 1, with the
    address of `table` (the int64 array of the chunk's buffer addresses). The table and the scratch
    arrays (`keep`) are passed as arrays, not addresses, so that numba keeps them alive until the
    chunks are done: it frees an array after its last use, and taking an address is no use that
    reaches the launch (the freed table was reused as another thread's scratch: a segfault)."""
    if not isinstance(name, types.StringLiteral) or not isinstance(table, types.Array):
        return None
    sym = name.literal_value

    def codegen(context, builder, sig, a):
        chunk = cgutils.get_or_insert_function(builder.module, CHUNK, sym)
        data = context.make_array(sig.args[1])(context, builder, a[1]).data
        addr = builder.ptrtoint(data, I64)
        nt = builder.sext(a[2], I64) if a[2].type.width < 64 else a[2]
        with builder.if_else(builder.icmp_signed("<=", nt, ir.Constant(I64, 1))) as (serial, threaded):
            with serial:
                builder.call(chunk, [addr, ir.Constant(I64, 0), ir.Constant(I64, 1)])
            with threaded:
                launcher = cgutils.get_or_insert_function(builder.module, CHUNK, LAUNCHER)
                builder.call(launcher, [builder.ptrtoint(chunk, I64), addr, nt])
        return context.get_dummy_value()

    return types.void(name, table, nt, types.StarArgTuple(keep)), codegen


@intrinsic(prefer_literal=True)
def call(typingctx, name, *args):
    """The void C function `name` (a symbol) called with int64 arguments."""
    if not isinstance(name, types.StringLiteral) or not all(isinstance(a, types.Integer) for a in args):
        return None
    sym, n = name.literal_value, len(args)
    args = tuple(types.unliteral(a) for a in args)

    def codegen(context, builder, sig, a):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [I64] * n), sym)
        values = cgutils.unpack_tuple(builder, a[1], n)
        builder.call(fn, [v if v.type == I64 else builder.sext(v, I64) for v in values])
        return context.get_dummy_value()

    return types.void(name, types.StarArgTuple(args)), codegen


def _failure_word(builder):
    """The failure word, declared in the module being built (resolved to `_failure` by symbol)."""
    return builder.module.globals.get(FAILURE) or ir.GlobalVariable(builder.module, I64, FAILURE)


@intrinsic
def fail(typingctx):
    """Set the failure word (checked mode: a chunk or core caught an exception)."""

    def codegen(context, builder, sig, a):
        builder.store_atomic(ir.Constant(I64, 1), _failure_word(builder), "monotonic", 8)
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def take_failure(typingctx):
    """The failure word, cleared."""

    def codegen(context, builder, sig, a):
        old = builder.atomic_rmw("xchg", _failure_word(builder), ir.Constant(I64, 0), "monotonic")
        return builder.icmp_signed("!=", old, ir.Constant(I64, 0))

    return types.boolean(), codegen


@intrinsic
def address(typingctx, arr, offset):
    """The address of arr[offset] (unchecked: see `span`)."""
    if not (isinstance(arr, types.Array) and isinstance(offset, types.Integer)):
        return None

    def codegen(context, builder, sig, a):
        data = context.make_array(sig.args[0])(context, builder, a[0]).data
        return builder.ptrtoint(builder.gep(data, [a[1]]), I64)

    return types.int64(arr, offset), codegen


@intrinsic
def span(typingctx, arr, offset, count):
    """The address of arr[offset], where a callee reads or writes `count` elements (checked mode:
    they lie in arr): how a GEMM core's operands are passed."""
    if not (isinstance(arr, types.Array) and isinstance(offset, types.Integer) and isinstance(count, types.Integer)):
        return None

    def codegen(context, builder, sig, a):
        check_range(context, builder, sig.args[0], a[0], a[1], a[2])
        data = context.make_array(sig.args[0])(context, builder, a[0]).data
        return builder.ptrtoint(builder.gep(data, [a[1]]), I64)

    return types.int64(arr, offset, count), codegen


def _array(context, builder, aryty, addr, size):
    """The array struct of `size` elements of aryty.dtype at the integer address `addr`."""
    data = builder.inttoptr(addr, context.get_data_type(aryty.dtype).as_pointer())
    ary = context.make_array(aryty)(context, builder)
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(aryty.dtype)))
    size = size if size.type == I64 else builder.sext(size, I64)
    populate_array(ary, data=data, shape=[size], strides=[itemsize], itemsize=itemsize, meminfo=None)
    return ary._getvalue()


def _array_type(dtype) -> types.Array | None:
    if not isinstance(dtype, types.StringLiteral):
        return None
    return types.Array(numpy_support.from_dtype(np.dtype(dtype.literal_value)), 1, "C")


@intrinsic(prefer_literal=True)
def arg_array(typingctx, args, i, dtype):
    """Array i of the table at `args` (pairs of address and size) as an array of `dtype` (a string):
    its true size, as the entry found it, so that checked indexing means something."""
    aryty = _array_type(dtype)
    if aryty is None or not isinstance(i, types.IntegerLiteral):
        return None

    def codegen(context, builder, sig, a):
        table = builder.inttoptr(a[0], I64.as_pointer())
        addr, size = (builder.load(builder.gep(table, [ir.Constant(I64, 2 * i.literal_value + k)])) for k in (0, 1))
        return _array(context, builder, aryty, addr, size)

    return aryty(args, i, dtype), codegen


@intrinsic(prefer_literal=True)
def array_at(typingctx, addr, dtype, size):
    """The array of `size` elements of `dtype` (a string) at the address `addr`."""
    aryty = _array_type(dtype)
    if aryty is None:
        return None

    def codegen(context, builder, sig, a):
        return _array(context, builder, aryty, a[0], a[2])

    return aryty(addr, dtype, size), codegen


# ---- the module shape -------------------------------------------------------------------------


IMPORTS = [  # what chunked_kernel's lines use (the caller's body may use call, address and span too)
    "from numba import cfunc",
    "from jitnet.backends.cpu.intrinsics import num_threads",
    "from jitnet.backends.cpu.parallel import address, arg_array, call, fail, launch, register, require, span",
    "from jitnet.backends.cpu.parallel import take_failure",
]


def chunked_kernel(
    buffers: list[tuple[str, np.dtype]],
    signature: str,
    body: list[str],
    flags: str,
    *,
    work: list[tuple[str, np.dtype, int | str]] = (),
    after: list[str] = (),
    threads: str = "num_threads()",
) -> list[str]:
    """Source lines of a parallel kernel `kernel(<buffers>)`, its imports included (the module's
    own header imports numpy, njit and the numba types), whose work is `body` (lines indented
    one level, using the buffers by name and t / nt: this chunk and the number of chunks).
    `buffers`: (name, dtype) of the kernel's arguments in order; `signature`: the entry's numba
    signature; `flags`: both functions' numba options (`jit_flags`); `work`: (name, dtype, size)
    of scratch arrays the entry allocates (uninitialised) and every chunk sees (a size may be an
    expression of nt); `after`: entry lines run once all chunks are done (indented one level);
    `threads`: the entry's expression for nt, the number of chunks."""
    table = [(n, np.dtype(d).name) for n, d, *_ in [*buffers, *work]]
    chunk = [f"    {n} = arg_array(args, {i}, {d!r})" for i, (n, d) in enumerate(table)] + list(body)
    chunk = cfunc_source("chunk", ["args", "t", "nt"], flags, chunk)
    name = symbol("\n".join(chunk))
    params = [n for n, _ in buffers]
    check = [f'        raise IndexError("jitnet kernel {name}: index out of bounds ({BOUNDSCHECK})")']
    return [
        *IMPORTS,
        "",
        "require()",
        "",
        "",
        *chunk,
        "",
        "",
        f'register("{name}", chunk)',
        "",
        "",
        f"@njit({signature}, cache=True, {flags})",
        f"def kernel({', '.join(params)}):",
        f"    nt = {threads}",
        *(f"    {n} = np.empty({s}, np.{np.dtype(d).name})" for n, d, s in work),
        f"    args = np.empty({2 * len(table)}, np.int64)",
        *(
            f"    args[{2 * i + k}] = {v}"
            for i, (n, _) in enumerate(table)
            for k, v in enumerate([f"address({n}, 0)", f"{n}.size"])
        ),
        f'    launch("{name}", {", ".join(["args", "nt", *(n for n, _, _ in work)])})',
        *(["    if take_failure():", *check] if checked() else []),
        *after,
    ]
