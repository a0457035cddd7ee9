"""Comparisons: boolean results, no gradient (they are constants for the engine)."""

from ..registry import defop


def _cmp(name, fn, symbol):
    def forward(xp, a, b):
        return fn(a, b), None

    forward.__doc__ = f"a {symbol} b (boolean; no gradient)"
    forward.__name__ = name
    return defop(name, differentiable=False, scalar_ok=(0, 1))(forward)


equal = _cmp("equal", lambda a, b: a == b, "==")
not_equal = _cmp("not_equal", lambda a, b: a != b, "!=")
less = _cmp("less", lambda a, b: a < b, "<")
less_equal = _cmp("less_equal", lambda a, b: a <= b, "<=")
greater = _cmp("greater", lambda a, b: a > b, ">")
greater_equal = _cmp("greater_equal", lambda a, b: a >= b, ">=")
