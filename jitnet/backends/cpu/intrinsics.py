"""LLVM operations that numba does not expose, for generated kernels.

- `fmaximum` / `fminimum`: `llvm.maximum` / `llvm.minimum` are numpy's maximum / minimum (NaN
  wins) in one instruction sequence that LLVM vectorises, also as a reduction, where a
  compare-and-select loop stays scalar.
- SIMD vectors (`Vec`, `vload`, `vfma`, ...): what a GEMM micro-kernel needs, with the vector width
  explicit (see cpu/gemm.py for why not LLVM's SLP vectoriser).
- Unchecked element access (`ld`, `st`), `prefetch`, `align_skip` and `num_threads`.

"Unchecked" holds in normal builds; a kernel compiled with numba's `boundscheck=True` (the
JITNET_BOUNDSCHECK mode, cpu/parallel.py) gets every access range checked (`check_range`).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

_I64 = ir.IntType(64)


def check_range(context, builder, arrty, arr, start, count) -> None:
    """Under boundscheck=True: raise IndexError unless arr[start : start + count] lies in arr
    (count >= 0, and 0 <= start, start + count <= arr.size unless count is 0: a masked access of
    no lanes touches nothing). The unchecked intrinsics call this on their range."""
    if not context.enable_boundscheck:
        return
    size = cgutils.unpack_tuple(builder, context.make_array(arrty)(context, builder, arr).shape)[0]
    start, count = (v if v.type == _I64 else builder.sext(v, _I64) for v in (start, count))
    zero = ir.Constant(_I64, 0)
    outside = builder.or_(
        builder.icmp_signed("<", start, zero), builder.icmp_signed(">", builder.add(start, count), size)
    )
    bad = builder.select(builder.icmp_signed(">", count, zero), outside, builder.icmp_signed("<", count, zero))
    with cgutils.if_unlikely(builder, bad):
        context.call_conv.return_user_exc(builder, IndexError, ("jitnet: index out of bounds (JITNET_BOUNDSCHECK)",))


def _call_binary(llvm_name: str, context, builder, t, args):
    lt = context.get_value_type(t)
    fn = builder.module.declare_intrinsic(llvm_name, [lt], ir.FunctionType(lt, [lt, lt]))
    return builder.call(fn, args)


@intrinsic
def fmaximum(typingctx, a, b):
    if a == b and isinstance(a, types.Float):
        return a(a, b), lambda context, builder, sig, args: _call_binary("llvm.maximum", context, builder, a, args)
    return None


@intrinsic
def fminimum(typingctx, a, b):
    if a == b and isinstance(a, types.Float):
        return a(a, b), lambda context, builder, sig, args: _call_binary("llvm.minimum", context, builder, a, args)
    return None


# ---------------------------------------------------------------------------------------------
# SIMD vectors for numba: a value type lowered to an LLVM vector, and the few operations a GEMM
# micro-kernel needs. Indices are element offsets into flat contiguous arrays, unchecked (no
# bounds check, no negative wraparound): the generated code computes them.
# ---------------------------------------------------------------------------------------------


class Vec(types.Type):
    """`lanes` x `dtype` as one LLVM vector value (`<16 x float>` is a zmm register)."""

    def __init__(self, dtype: types.Float, lanes: int):
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Vec({dtype} x {lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes))


def _literal(t) -> int | None:
    return t.literal_value if isinstance(t, types.IntegerLiteral) else None


def _element_ptr(context, builder, arrty, arr, idx):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [idx])


def _vec_ptr(context, builder, arrty, arr, idx, vt: Vec):
    ptr = _element_ptr(context, builder, arrty, arr, idx)
    return builder.bitcast(ptr, context.get_value_type(vt).as_pointer())


def _mask(builder, n, lanes: int):
    """<lanes x i1>: lane l is on when l < n (n is clamped to [0, lanes] by the caller)."""
    # (1 << n) - 1 built in 64 bits: in `lanes` bits the shift by n == lanes would be poison.
    wide = ir.IntType(64)
    n = builder.zext(n, wide) if n.type.width < 64 else n
    m = builder.sub(builder.shl(ir.Constant(wide, 1), n), ir.Constant(wide, 1))
    return builder.bitcast(builder.trunc(m, ir.IntType(lanes)), _mask_type(lanes))


def _is_array(t) -> bool:
    return isinstance(t, types.Array) and t.ndim == 1 and isinstance(t.dtype, types.Float)


@intrinsic(prefer_literal=True)
def vload(typingctx, arr, i, lanes):
    """arr[i : i + lanes] as a vector (unaligned load)."""
    n = _literal(lanes)
    if n is None or not _is_array(arr) or not isinstance(i, types.Integer):
        return None
    vt = Vec(arr.dtype, n)

    def codegen(context, builder, sig, args):
        check_range(context, builder, sig.args[0], args[0], args[1], ir.Constant(_I64, n))
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], vt)
        return builder.load(ptr, align=arr.dtype.bitwidth // 8)

    return vt(arr, i, lanes), codegen


@intrinsic(prefer_literal=True)
def vload_n(typingctx, arr, i, count, lanes):
    """arr[i : i + count] in the first `count` lanes (0 <= count <= lanes), zeros after; reads
    nothing past arr[i + count - 1] (a masked load)."""
    n = _literal(lanes)
    if n is None or not _is_array(arr) or not isinstance(i, types.Integer) or not isinstance(count, types.Integer):
        return None
    vt = Vec(arr.dtype, n)

    def codegen(context, builder, sig, args):
        check_range(context, builder, sig.args[0], args[0], args[1], args[2])
        vty = context.get_value_type(vt)
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], vt)
        fnty = ir.FunctionType(vty, [ptr.type, ir.IntType(32), _mask_type(n), vty])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.{_vname(vt)}.p0")
        align = ir.Constant(ir.IntType(32), arr.dtype.bitwidth // 8)
        return builder.call(fn, [ptr, align, _mask(builder, args[2], n), ir.Constant(vty, None)])

    return vt(arr, i, count, lanes), codegen


def _vname(vt: Vec) -> str:
    """The LLVM intrinsic suffix of a vector type: v16f32."""
    return f"v{vt.lanes}f{vt.dtype.bitwidth}"


def _mask_type(lanes: int):
    return ir.VectorType(ir.IntType(1), lanes)


@intrinsic
def vstore(typingctx, arr, i, v):
    """arr[i : i + lanes] = v (unaligned store)."""
    if not (isinstance(v, Vec) and _is_array(arr) and arr.dtype == v.dtype and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        check_range(context, builder, sig.args[0], args[0], args[1], ir.Constant(_I64, v.lanes))
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], v)
        builder.store(args[2], ptr, align=v.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(arr, i, v), codegen


@intrinsic(prefer_literal=True)
def vtranspose(typingctx, src, s_off, s_stride, dst, d_off, d_stride, lanes):
    """A lanes x lanes block transposed: row c of dst (from dst[d_off + c * d_stride]) is column c
    of the block whose row r is src[s_off + r * s_stride :][:lanes]. log2(lanes) rounds of
    interleaving rows r and r + lanes/2 (a perfect shuffle) transpose it in registers: LLVM emits
    vector permutes, not lanes**2 scalar copies (packing a transposed GEMM operand)."""
    n = _literal(lanes)
    ints = (s_off, s_stride, d_off, d_stride)
    if n is None or n & (n - 1) or not (_is_array(src) and _is_array(dst) and src.dtype == dst.dtype):
        return None
    if not all(isinstance(t, types.Integer) for t in ints):
        return None
    vt = Vec(src.dtype, n)

    def codegen(context, builder, sig, args):
        so, ss, do, ds = (context.cast(builder, args[k], sig.args[k], types.intp) for k in (1, 2, 4, 5))
        for k, off, stride in ((0, so, ss), (3, do, ds)):  # the first row and the last (strides are >= 0)
            check_range(context, builder, sig.args[k], args[k], off, ir.Constant(_I64, n))
            last = builder.add(off, builder.mul(stride, ir.Constant(_I64, n - 1)))
            check_range(context, builder, sig.args[k], args[k], last, ir.Constant(_I64, n))
        align = src.dtype.bitwidth // 8
        intp = context.get_value_type(types.intp)
        rows = []
        for r in range(n):
            at = builder.add(so, builder.mul(ss, ir.Constant(intp, r)))
            rows.append(builder.load(_vec_ptr(context, builder, sig.args[0], args[0], at, vt), align=align))
        lo = ir.Constant(ir.VectorType(ir.IntType(32), n), [k // 2 + (n if k % 2 else 0) for k in range(n)])
        hi = ir.Constant(ir.VectorType(ir.IntType(32), n), [n // 2 + k // 2 + (n if k % 2 else 0) for k in range(n)])
        for _ in range(n.bit_length() - 1):
            pairs = [(rows[r], rows[r + n // 2]) for r in range(n // 2)]
            rows = [builder.shuffle_vector(a, b, mask) for a, b in pairs for mask in (lo, hi)]
        for c in range(n):
            at = builder.add(do, builder.mul(ds, ir.Constant(intp, c)))
            builder.store(rows[c], _vec_ptr(context, builder, sig.args[3], args[3], at, vt), align=align)
        return context.get_dummy_value()

    return types.void(src, s_off, s_stride, dst, d_off, d_stride, lanes), codegen


@intrinsic
def vstore_n(typingctx, arr, i, v, count):
    """arr[i : i + count] = v[:count] (0 <= count <= lanes; a masked store)."""
    if not (isinstance(v, Vec) and _is_array(arr) and arr.dtype == v.dtype and isinstance(count, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        check_range(context, builder, sig.args[0], args[0], args[1], args[3])
        vty = context.get_value_type(v)
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], v)
        fnty = ir.FunctionType(ir.VoidType(), [vty, ptr.type, ir.IntType(32), _mask_type(v.lanes)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.{_vname(v)}.p0")
        align = ir.Constant(ir.IntType(32), v.dtype.bitwidth // 8)
        builder.call(fn, [args[2], ptr, align, _mask(builder, args[3], v.lanes)])
        return context.get_dummy_value()

    return types.void(arr, i, v, count), codegen


@intrinsic(prefer_literal=True)
def vsplat(typingctx, x, lanes):
    """A vector with x in every lane."""
    n = _literal(lanes)
    if n is None or not isinstance(x, types.Float):
        return None
    vt = Vec(x, n)

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        v = builder.insert_element(ir.Constant(vty, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n)
        return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), zeros)

    return vt(x, lanes), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, fused (one rounding), lane by lane."""
    if not (isinstance(a, Vec) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(a)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.{_vname(a)}")
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def vadd(typingctx, a, b):
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def ld(typingctx, arr, i):
    """arr[i], unchecked."""
    if not (_is_array(arr) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        check_range(context, builder, sig.args[0], args[0], args[1], ir.Constant(_I64, 1))
        return builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1]))

    return arr.dtype(arr, i), codegen


@intrinsic
def st(typingctx, arr, i, x):
    """arr[i] = x, unchecked (x is converted to the array's dtype)."""
    if not (_is_array(arr) and isinstance(i, types.Integer) and isinstance(x, (types.Float, types.Integer))):
        return None

    def codegen(context, builder, sig, args):
        check_range(context, builder, sig.args[0], args[0], args[1], ir.Constant(_I64, 1))
        val = context.cast(builder, args[2], sig.args[2], arr.dtype)
        builder.store(val, _element_ptr(context, builder, sig.args[0], args[0], args[1]))
        return context.get_dummy_value()

    return types.void(arr, i, x), codegen


@intrinsic
def prefetch(typingctx, arr, i):
    """Hint: bring the cache line of arr[i] into L1 for writing (`prefetchw`); never faults."""
    if not (_is_array(arr) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_element_ptr(context, builder, sig.args[0], args[0], args[1]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, i), codegen


@intrinsic
def align_skip(typingctx, arr):
    """Elements to skip from arr[0] to the next 64-byte boundary (a zmm load from there does not
    straddle two cache lines)."""
    if not _is_array(arr):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        addr = builder.ptrtoint(data, ir.IntType(64))
        pad = builder.and_(builder.sub(ir.Constant(ir.IntType(64), 0), addr), ir.Constant(ir.IntType(64), 63))
        return builder.udiv(pad, ir.Constant(ir.IntType(64), arr.dtype.bitwidth // 8))

    return types.int64(arr), codegen


@intrinsic
def num_threads(typingctx):
    """numba's thread count for parallel regions (`numba.get_num_threads()`), read through the
    threading layer's C symbol: `numba.get_num_threads` goes through a ctypes pointer, which keeps
    numba from caching the kernel on disk."""
    from numba.np.ufunc.parallel import _launch_threads

    _launch_threads()  # registers the threading layer's symbols with LLVM

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(cgutils.intp_t, []), "get_num_threads")
        return builder.call(fn, [])

    return types.intp(), codegen
