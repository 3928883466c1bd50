"""Symbolic index arithmetic: simplification, and rendered expressions checked by brute force."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from jitnet.codegen.index import Idx, as_idx, flat_index, unflatten_index

SHAPES = [(7,), (2, 3, 4), (1, 5), (5, 1), (3, 1, 2), (4, 4), (2, 1, 1, 3), (6, 10)]


def value(e: Idx, **env) -> int:
    """The integer a rendered index expression evaluates to with the loop variables bound."""
    return eval(e.render(), {}, dict(env))


def var(name: str, extent: int) -> Idx:
    return Idx.var(name, extent)


# ---- simplification ----


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_flat_of_unflatten_is_the_variable(shape):
    i = var("i", math.prod(shape))
    back = flat_index(unflatten_index(i, shape), shape)
    assert back.key() == i.key()
    assert back.render() == "i"


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_split_and_merge_of_one_dim(shape):
    """Splitting a loop variable by `shape` and merging the pieces with the row-major strides."""
    n = math.prod(shape)
    i = var("i", n)
    parts = unflatten_index(i, shape)
    strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    merged = sum((p * s for p, s in zip(parts, strides)), Idx())
    assert merged.render() == "i"


def test_unflatten_by_the_variable_extent():
    i = var("i", 12)
    assert [p.render() for p in unflatten_index(i, (12,))] == ["i"]
    assert [p.render() for p in unflatten_index(i, (1, 12, 1))] == ["0", "i", "0"]


def test_two_level_loop_merges_to_flat():
    o, i = var("o", 6), var("i", 20)
    idx = unflatten_index(o, (2, 3)) + unflatten_index(i, (4, 5))
    assert flat_index(idx, (2, 3, 4, 5)).render() == "i + o * 20"


@pytest.mark.parametrize(
    "expr, want",
    [
        (lambda i, j: i // 4, "0"),
        (lambda i, j: i % 4, "i"),
        (lambda i, j: (i + j * 4) // 4, "j"),
        (lambda i, j: (i + j * 4) % 4, "i"),
        (lambda i, j: (i + 8) // 4, "2"),
        (lambda i, j: (i + 8) % 4, "i"),
        (lambda i, j: (i * 2 + 1) // 2, "i"),
        (lambda i, j: (i * 2 + 1) % 2, "1"),
        (lambda i, j: (j * 12 + i * 3) // 3, "i + j * 4"),
        (lambda i, j: (j * 12 + i * 3) % 3, "0"),
        (lambda i, j: (i + 4) // 1, "i + 4"),
        (lambda i, j: (i + 4) % 1, "0"),
        (lambda i, j: ((i + j * 4) // 2) * 2 + (i + j * 4) % 2, "i + j * 4"),
    ],
)
def test_floordiv_mod_with_known_ranges(expr, want):
    i, j = var("i", 4), var("j", 5)
    assert expr(i, j).render() == want


def test_bounds():
    i, j = var("i", 4), var("j", 5)
    assert (i * 3 - j + 2).bounds() == (2 - 4, 9 + 2)
    assert ((i + j * 4) // 3).bounds() == (0, 6)
    assert ((i * -1 + 10) % 3).bounds()[0] >= 0


def test_constants():
    assert as_idx(7).is_const() and as_idx(7).render() == "7"
    assert (as_idx(7) // 2).render() == "3" and (as_idx(-7) // 2).render() == "-4"
    assert (as_idx(-7) % 3).render() == "2"
    assert Idx().render() == "0"


def test_render_of_negative_terms_is_python():
    i = var("i", 10)
    e = i * -1 + 9
    assert [value(e, i=v) for v in range(10)] == list(range(9, -1, -1))
    assert value(i - 3, i=1) == -2


# ---- brute force: rendered expressions evaluate to the right integers ----


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_unflatten_evaluates_like_numpy(shape):
    n = math.prod(shape)
    parts = unflatten_index(var("i", n), shape)
    for v in range(n):
        assert tuple(value(p, i=v) for p in parts) == np.unravel_index(v, shape)


@pytest.mark.parametrize("outer, inner", [((2, 3), (4, 5)), ((6,), (1, 7)), ((3, 1), (2,))])
def test_two_level_loop_evaluates_like_numpy(outer, inner):
    o, i = var("o", math.prod(outer)), var("i", math.prod(inner))
    parts = unflatten_index(o, outer) + unflatten_index(i, inner)
    for vo, vi in itertools.product(range(math.prod(outer)), range(math.prod(inner))):
        want = np.unravel_index(vo * math.prod(inner) + vi, outer + inner)
        assert tuple(value(p, o=vo, i=vi) for p in parts) == want


def view_offsets(chain, shape):
    """The flat source offset of every element of a chain of views, symbolically and with numpy.

    chain: ("reshape", shape) / ("permute", axes) / ("slice", per-dim slices) / ("pad", widths), applied
    to a contiguous source of `shape` in order; returns (rendered Idx per output element, numpy answer).
    """
    src = np.arange(math.prod(shape)).reshape(shape)
    arr, shapes = src, [shape]
    for op, arg in chain:
        if op == "reshape":
            arr = arr.reshape(arg)
        elif op == "permute":
            arr = arr.transpose(arg)
        elif op == "slice":
            arr = arr[arg]
        else:
            arr = np.pad(arr, arg, constant_values=-1)
        shapes.append(arr.shape)
    out_shape = arr.shape
    # Walk the index back from the output through the views, as the code generator does.
    idx = unflatten_index(var("i", math.prod(out_shape)), out_shape)
    for (op, arg), in_shape, out in zip(reversed(chain), reversed(shapes[:-1]), reversed(shapes[1:])):
        if op == "reshape":
            idx = unflatten_index(flat_index(idx, out), in_shape)
        elif op == "permute":
            back = [None] * len(arg)
            for d, a in enumerate(arg):
                back[a] = idx[d]
            idx = back
        elif op == "slice":
            idx = [d * s.indices(n)[2] + s.indices(n)[0] for d, s, n in zip(idx, arg, in_shape)]
        else:
            idx = [d - lo for d, (lo, _) in zip(idx, arg)]
    return flat_index(idx, shape), arr.reshape(-1)


def _check_view_chain(chain, shape):
    offset, want = view_offsets(chain, shape)
    for v, w in enumerate(want):
        if w >= 0:  # -1: a padded element, never loaded
            assert value(offset, i=v) == w, (v, offset.render())


VIEW_CHAINS = {
    "reshape": ([("reshape", (4, 3))], (3, 4)),
    "transpose_reshape": ([("permute", (1, 0)), ("reshape", (12,))], (3, 4)),
    "reshape_transpose_reshape": ([("reshape", (2, 6)), ("permute", (1, 0)), ("reshape", (3, 4))], (3, 4)),
    "slice_then_reshape": ([("slice", (slice(None, None, -1), slice(1, 4))), ("reshape", (9,))], (3, 4)),
    "permute3d_reshape": ([("permute", (2, 0, 1)), ("reshape", (4, 6))], (2, 3, 4)),
    "strided_slice": ([("slice", (slice(None, None, 2), slice(3, None, -2)))], (5, 6)),
    "reshape_of_reversed": ([("slice", (slice(None, None, -1),)), ("reshape", (3, 4))], (12,)),
}

OFFSET_CHAINS = {
    "reshape_then_reverse": ([("reshape", (12,)), ("slice", (slice(None, None, -1),))], (3, 4)),
    "transpose_reshape_slice": ([("permute", (1, 0)), ("reshape", (12,)), ("slice", (slice(1, None),))], (3, 4)),
    "transpose_reshape_reverse": (
        [("permute", (1, 0)), ("reshape", (12,)), ("slice", (slice(None, None, -1),))],
        (3, 4),
    ),
    "transpose_reshape_pad": ([("permute", (1, 0)), ("reshape", (12,)), ("pad", ((2, 1),))], (3, 4)),
    "reshape_transpose_reshape_slice": (
        [("reshape", (4, 6)), ("permute", (1, 0)), ("reshape", (24,)), ("slice", (slice(5, 20, 3),))],
        (2, 3, 4),
    ),
}


@pytest.mark.parametrize("chain, shape", list(VIEW_CHAINS.values()), ids=list(VIEW_CHAINS))
def test_view_chains_evaluate_like_numpy(chain, shape):
    _check_view_chain(chain, shape)


@pytest.mark.parametrize("chain, shape", list(OFFSET_CHAINS.values()), ids=list(OFFSET_CHAINS))
def test_view_chains_with_offsets_before_a_split(chain, shape):
    """A slice or pad after a reshape puts an offset inside the // and % of the split."""
    _check_view_chain(chain, shape)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_floordiv_mod_of_a_sum_evaluate_right(k):
    i = var("i", 12)
    e = i * -1 + 11
    for v in range(12):
        assert value(e // k, i=v) == (11 - v) // k
        assert value(e % k, i=v) == (11 - v) % k


@pytest.mark.parametrize("k", [2, 3, 7])
def test_floordiv_mod_of_scaled_variable_evaluate_right(k):
    i = var("i", 30)
    for e, f in [(i * 2, lambda v: 2 * v), (i * -3, lambda v: -3 * v), (i, lambda v: v)]:
        for v in range(30):
            assert value(e // k, i=v) == f(v) // k
            assert value(e % k, i=v) == f(v) % k


def test_random_affine_expressions_evaluate_right():
    """Random affine sums of two loop variables, divided and reduced by random constants, nested."""
    r = random.Random(0)
    for _ in range(300):
        ni, nj = r.randint(1, 6), r.randint(1, 6)
        ci, cj, c0 = r.randint(-6, 6), r.randint(-6, 6), r.randint(-20, 20)
        k1, k2 = r.randint(1, 7), r.randint(1, 7)
        i, j = var("i", ni), var("j", nj)
        e = i * ci + j * cj + c0
        nested = (e // k1) * k2 + e % k2 + (e % k1) // k2
        for vi, vj in itertools.product(range(ni), range(nj)):
            ev = ci * vi + cj * vj + c0
            want = (ev // k1) * k2 + ev % k2 + (ev % k1) // k2
            assert value(nested, i=vi, j=vj) == want, nested.render()


def test_divides_finds_a_division_over_the_loop_variable():
    i, o = var("i", 4096), var("o", 64)
    contiguous = flat_index(unflatten_index(i, (128, 32)), (128, 32)) + o * 4096
    head_split = flat_index(unflatten_index(i, (128, 32))[::-1], (32, 128))  # (l, d) read as (d, l)
    assert not contiguous.divides("i") and contiguous.reads("i") and contiguous.reads("o")
    assert head_split.divides("i") and not head_split.divides("o")
    assert (o // 4 + i).divides("o") and not (o // 4 + i).divides("i")
