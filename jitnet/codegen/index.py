"""Symbolic integer index arithmetic for views.

Reshapes, transposes, broadcasts and slices are compiled into the index expressions of the loads
inside a kernel. Index expressions are affine sums over loop variables and opaque `//` and `%`
terms, simplified with what is known of each term's range, so that, say, splitting and re-merging a
dimension gives back the plain loop variable and a contiguous load stays contiguous.
"""

from __future__ import annotations


class Atom:
    """A non-affine building block of an index: a loop variable, or `x // k`, `x % k`."""

    __slots__ = ("_key", "arg", "hi", "k", "kind", "lo", "name")

    def __init__(self, kind: str, lo: int, hi: int, name: str = "", arg: "Idx | None" = None, k: int = 0):
        self.kind, self.name, self.arg, self.k, self.lo, self.hi = kind, name, arg, k, lo, hi
        self._key = (kind, name, arg.key() if arg is not None else None, k)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, Atom) and self._key == other._key

    def render(self) -> str:
        if self.kind == "var":
            return self.name
        op = "//" if self.kind == "div" else "%"
        arg = self.arg.render()
        simple = not self.arg.const and len(self.arg.terms) == 1 and next(iter(self.arg.terms.values())) == 1
        return f"({arg if simple else f'({arg})'} {op} {self.k})"


class Idx:
    """sum(coef * atom) + const, immutable."""

    __slots__ = ("const", "terms")

    def __init__(self, terms: dict | None = None, const: int = 0):
        self.terms = {a: c for a, c in (terms or {}).items() if c != 0}
        self.const = int(const)
        _merge_div_mod(self)

    @staticmethod
    def var(name: str, extent: int) -> "Idx":
        return Idx({Atom("var", 0, max(extent - 1, 0), name=name): 1})

    def key(self):
        return (tuple(sorted((a._key, c) for a, c in self.terms.items())), self.const)

    def is_const(self) -> bool:
        return not self.terms

    def bounds(self) -> tuple[int, int]:
        lo = hi = self.const
        for a, c in self.terms.items():
            lo += c * (a.lo if c > 0 else a.hi)
            hi += c * (a.hi if c > 0 else a.lo)
        return lo, hi

    def __add__(self, other: "IdxLike") -> "Idx":
        other = as_idx(other)
        terms = dict(self.terms)
        for a, c in other.terms.items():
            terms[a] = terms.get(a, 0) + c
        return Idx(terms, self.const + other.const)

    __radd__ = __add__

    def __sub__(self, other: "IdxLike") -> "Idx":
        return self + as_idx(other) * -1

    def __mul__(self, k: int) -> "Idx":
        return Idx({a: c * k for a, c in self.terms.items()}, self.const * k)

    __rmul__ = __mul__

    def _split(self, k: int) -> tuple["Idx", "Idx"]:
        """self = k * q + r, with every coefficient of r not a multiple of k and 0 <= r.const < k."""
        q = {a: c // k for a, c in self.terms.items() if c % k == 0}
        r = {a: c for a, c in self.terms.items() if c % k != 0}
        return Idx(q, self.const // k), Idx(r, self.const % k)

    def __floordiv__(self, k: int) -> "Idx":
        if k == 1:
            return self
        q, r = self._split(k)
        lo, hi = r.bounds()
        if lo >= 0 and hi < k:
            return q
        if lo >= 0 and hi // k == lo // k:
            return q + lo // k
        return q + Idx({Atom("div", lo // k, hi // k, arg=r, k=k): 1})

    def __mod__(self, k: int) -> "Idx":
        if k == 1:
            return Idx()
        _, r = self._split(k)
        lo, hi = r.bounds()
        if lo >= 0 and hi < k:
            return r
        return Idx({Atom("mod", 0, k - 1, arg=r, k=k): 1})

    def reads(self, var: str) -> bool:
        """Whether loop variable `var` occurs in this index."""
        return any((a.kind == "var" and a.name == var) or (a.arg is not None and a.arg.reads(var)) for a in self.terms)

    def divides(self, var: str) -> bool:
        """Whether a // or % term of this index depends on loop variable `var`: a division per
        iteration of its loop, and no contiguous (vectorisable) access along it."""
        return any(a.kind != "var" and a.arg.reads(var) for a in self.terms)

    def render(self) -> str:
        parts = []
        for a, c in sorted(self.terms.items(), key=lambda t: t[0].render()):
            s = a.render()
            parts.append(s if c == 1 else f"{s} * {c}")
        if self.const or not parts:
            parts.append(str(self.const))
        return " + ".join(parts).replace("+ -", "- ")

    def __repr__(self) -> str:
        return f"Idx({self.render()})"


IdxLike = Idx | int


def as_idx(x: IdxLike) -> Idx:
    return x if isinstance(x, Idx) else Idx({}, int(x))


def _merge_div_mod(e: Idx) -> None:
    """a*(x // d) + b*(x % d) with a == b*d is b*x: undo a split of x into (x // d, x % d)."""
    changed = True
    while changed:
        changed = False
        for atom, a in list(e.terms.items()):
            if atom.kind != "div":
                continue
            mod = Atom("mod", 0, atom.k - 1, arg=atom.arg, k=atom.k)
            b = e.terms.get(mod)
            if b is not None and a == b * atom.k:
                del e.terms[atom], e.terms[mod]
                for t, c in atom.arg.terms.items():
                    e.terms[t] = e.terms.get(t, 0) + b * c
                    if e.terms[t] == 0:
                        del e.terms[t]
                e.const += b * atom.arg.const
                changed = True
                break


def flat_index(idx: list[Idx], shape: tuple) -> Idx:
    """Row-major offset of a multi-index into a contiguous array of `shape`."""
    flat, stride = Idx(), 1
    for i, n in zip(reversed(idx), reversed(shape)):
        flat = flat + i * stride
        stride *= n
    return flat


def unflatten_index(flat: Idx, shape: tuple) -> list[Idx]:
    """The multi-index of row-major offset `flat` in `shape` (by successive division, so that
    `flat_index` of the result simplifies back to `flat`)."""
    if 0 in shape:  # an empty loop: the index is never used
        return [Idx() for _ in shape]
    out = []
    for n in reversed(shape):
        out.append(flat % n)
        flat = flat // n
    return out[::-1]
