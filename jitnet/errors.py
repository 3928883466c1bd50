"""Errors raised to users. Tracing errors name the op, the shapes and the user's source line."""

from __future__ import annotations


class TraceError(Exception):
    """A mistake found while tracing: shape mismatch, bad dtype, unsupported op."""


class TraceShapeError(TraceError, ValueError):
    pass


class TraceTypeError(TraceError, TypeError):
    pass
