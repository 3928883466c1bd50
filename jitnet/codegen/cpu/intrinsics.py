"""LLVM intrinsics that numba does not expose. `llvm.maximum` / `llvm.minimum` are numpy's
maximum / minimum (NaN wins) in one instruction sequence that LLVM vectorises, also as a
reduction, where a compare-and-select loop stays scalar."""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


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
