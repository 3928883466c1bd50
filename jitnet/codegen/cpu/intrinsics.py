"""LLVM intrinsics that numba does not expose. `llvm.maximum` / `llvm.minimum` are numpy's
maximum / minimum (NaN wins) in one instruction sequence that LLVM vectorises, also as a
reduction, where a compare-and-select loop stays scalar."""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


def _binary_float_intrinsic(llvm_name: str):
    @intrinsic
    def call(typingctx, a, b):
        if a != b or not isinstance(a, types.Float):
            return None

        def codegen(context, builder, signature, args):
            t = context.get_value_type(a)
            fn = builder.module.declare_intrinsic(llvm_name, [t], ir.FunctionType(t, [t, t]))
            return builder.call(fn, args)

        return a(a, b), codegen

    return call


fmaximum = _binary_float_intrinsic("llvm.maximum")
fminimum = _binary_float_intrinsic("llvm.minimum")
