"""Scans: cumulative_sum.

The backward of a running sum is the running sum of the gradient taken from the other end,
so the rule is a scan itself: written with ``flip`` and ``cumulative_sum`` on ``xp``, it can be
differentiated again.
"""

from ..registry import defop


def _axis(ndim, axis):
    if axis is None:
        if ndim != 1:
            raise ValueError(
                f"cumulative_sum: axis is required for a {ndim}-d array (only 1-d arrays may "
                "omit it)"
            )
        return 0
    return axis % ndim if ndim else axis


@defop("cumulative_sum")
def cumulative_sum(xp, x, *, axis=None, include_initial=False):
    """running sum of x along axis (optional for 1-d x), starting with 0 if include_initial;
    d/dx: g summed from the end, out_i = sum_{j<=i} x_j => dx_j = sum_{i>=j} g_i"""
    ax = _axis(x.ndim, axis)
    return xp.cumulative_sum(x, axis=ax, include_initial=include_initial), x.ndim


def _cumulative_sum_vjp(xp, g, ndim, *, axis=None, include_initial=False):
    ax = _axis(ndim, axis)
    if include_initial:  # out[0] = 0 has no input; out[i + 1] sums x[:i + 1]
        g = g[(slice(None),) * ax + (slice(1, None), ...)]
    return (xp.flip(xp.cumulative_sum(xp.flip(g, axis=ax), axis=ax), axis=ax),)


cumulative_sum.defvjp(_cumulative_sum_vjp)
