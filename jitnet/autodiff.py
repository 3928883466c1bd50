"""`jn.vjp`, `jn.grad`, `jn.value_and_grad`: function transformations over traced IR.

Inside a trace (under `jn.compile`, or nested in another transformation) they differentiate the
graph being built, so forward and backward end up in one program that the fuser sees whole.
Called on concrete arrays, they compile themselves first: `grad(f)(x)` is `compile(grad(f))(x)`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from jitnet import ops
from jitnet.errors import TraceShapeError, TraceTypeError
from jitnet.ir import dtypes, pytree, trace
from jitnet.ir.backward import backward
from jitnet.ir.trace import Tracer, apply, trace_error

_tag_ids = itertools.count()


def _in_trace(args) -> bool:
    return trace.current() is not None or any(isinstance(x, Tracer) for x in pytree.flatten(args)[0])


def _tag(x) -> Tracer:
    """A fresh identity node per differentiated value: two arguments holding one value still get
    separate gradients."""
    t = ops.lift(x)
    return apply("tag", (t,), t.weak, id=next(_tag_ids)) if dtypes.is_float(t.dtype) else t


def _traced_vjp(fn: Callable, primals: Sequence, has_aux: bool):
    leaves, treedef = pytree.flatten(tuple(primals))
    tagged = [_tag(x) for x in leaves]
    out = fn(*pytree.unflatten(treedef, tagged))
    aux = None
    if has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise trace_error(TraceTypeError, "has_aux", "with has_aux=True the function must return (output, aux)")
        out, aux = out
    out_leaves, out_tree = pytree.flatten(out)
    out_tracers = [ops.lift(o) for o in out_leaves]

    def vjp_fn(cotangent) -> tuple:
        ct_leaves, ct_tree = pytree.flatten(cotangent)
        if ct_tree != out_tree:
            raise trace_error(TraceShapeError, "vjp", "the cotangent must have the structure of the output")
        cts = []
        for c, o in zip(ct_leaves, out_tracers):
            c = ops.lift(c)
            if c.shape != o.shape:
                raise trace_error(TraceShapeError, "vjp", f"cotangent shape {c.shape} != output shape {o.shape}")
            cts.append(ops.astype(c, o.dtype) if dtypes.is_float(o.dtype) else c)
        grads = backward([o.node for o in out_tracers], cts, [t.node for t in tagged], ops)
        grads = [ops.zeros(t.shape, t.dtype) if g is None else g for g, t in zip(grads, tagged)]
        return tuple(pytree.unflatten(treedef, grads))

    value = pytree.unflatten(out_tree, out_tracers)
    return (value, aux) if has_aux else value, vjp_fn


def vjp(fn: Callable, *primals, has_aux: bool = False):
    """(fn(*primals), vjp_fn) where vjp_fn(cotangent) returns one gradient per primal."""
    if _in_trace(primals):
        return _traced_vjp(fn, primals, has_aux)
    from jitnet.compiler import compile as _compile

    forward = _compile(fn)(*primals)
    backward_fn = _compile(lambda p, c: _traced_vjp(fn, p, has_aux)[1](c))
    return forward, lambda cotangent: backward_fn(primals, cotangent)


def _argnums(argnums, n_args: int) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for i in nums:
        if not -n_args <= i < n_args:
            raise trace_error(TraceShapeError, "grad", f"argnums {argnums} out of range for {n_args} arguments")
    return tuple(i % n_args for i in nums)


def value_and_grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """A function returning (fn(*args), gradient of fn's scalar output with respect to args[argnums]),
    or ((value, aux), grads) with has_aux. Gradients have the pytree structure of the arguments."""
    compiled = None

    def value_and_grad_fn(*args):
        nonlocal compiled
        if not _in_trace(args):
            if compiled is None:
                from jitnet.compiler import compile as _compile

                compiled = _compile(value_and_grad_fn)
            return compiled(*args)
        nums = _argnums(argnums, len(args))
        for i in nums:
            for leaf in pytree.flatten(args[i])[0]:
                dt = ops.lift(leaf).dtype
                if not dtypes.is_float(dt):
                    raise trace_error(
                        TraceTypeError,
                        "grad",
                        f"argument {i} has dtype {dt.name}; only float inputs can be differentiated",
                    )

        def partial(*diff_args):
            full = list(args)
            for i, a in zip(nums, diff_args):
                full[i] = a
            return fn(*full)

        out, vjp_fn = _traced_vjp(partial, [args[i] for i in nums], has_aux)
        value = out[0] if has_aux else out
        if not isinstance(value, Tracer) or value.shape != () or not dtypes.is_float(value.dtype):
            got = f"shape {value.shape} dtype {value.dtype.name}" if isinstance(value, Tracer) else type(value).__name__
            raise trace_error(TraceShapeError, "grad", f"the function must return a float scalar, got {got}")
        grads = vjp_fn(ops.ones((), value.dtype))
        return out, grads[0] if isinstance(argnums, int) else grads

    value_and_grad_fn.__qualname__ = f"value_and_grad({_name(fn)})"  # what retrace messages call it
    return value_and_grad_fn


def _name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """The gradient of fn's scalar output with respect to args[argnums] (with has_aux: (grads, aux))."""
    vg = value_and_grad(fn, argnums, has_aux)
    vg.__qualname__ = f"grad({_name(fn)})"

    def grad_fn(*args) -> Any:
        out, grads = vg(*args)
        return (grads, out[1]) if has_aux else grads

    return grad_fn
