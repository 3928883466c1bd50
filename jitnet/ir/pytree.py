"""Nested tuples, lists and dicts of leaves, flattened to a list and a hashable structure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LEAF = None


def flatten(tree: Any, leaves: list | None = None) -> tuple[list, Any]:
    """(leaves, treedef); dicts are walked in sorted key order, as JAX does."""
    if leaves is None:
        leaves = []
    if isinstance(tree, (tuple, list)):
        defs = tuple(flatten(t, leaves)[1] for t in tree)
        return leaves, (type(tree), defs)
    if isinstance(tree, dict):
        keys = tuple(sorted(tree))
        defs = tuple(flatten(tree[k], leaves)[1] for k in keys)
        return leaves, (dict, keys, defs)
    leaves.append(tree)
    return leaves, LEAF


def unflatten(treedef: Any, leaves: list) -> Any:
    it = iter(leaves)
    return _build(treedef, it)


def _build(treedef, it):
    if treedef is LEAF:
        return next(it)
    if treedef[0] is dict:
        _, keys, defs = treedef
        return {k: _build(d, it) for k, d in zip(keys, defs)}
    kind, defs = treedef
    return kind(_build(d, it) for d in defs)


def tree_map(fn: Callable, tree: Any) -> Any:
    leaves, treedef = flatten(tree)
    return unflatten(treedef, [fn(x) for x in leaves])
