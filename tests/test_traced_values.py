"""float(), .item() and gg.to_numpy of a differentiated value inside a transform warn once,
naming the user's line (issue: a result cut from the graph is not differentiated to zeros)."""

import warnings

import numpy as np
import pytest

import gpugrad as gg


def _line_of(marker: str) -> int:
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if marker in line and "_line_of" not in line)


@pytest.mark.parametrize("how", ["float", "item", "to_numpy"])
def test_taking_a_traced_value_out_warns_at_the_users_line(how):
    def f(x):
        s = gg.sum(x * x)
        if how == "float":
            scale = float(s)  # user-line-float
        elif how == "item":
            scale = s.item()  # user-line-item
        else:
            scale = gg.to_numpy(s)  # user-line-to_numpy
        return s * float(np.asarray(scale) * 0.0 + 1.0)

    with pytest.warns(gg.TracedValueWarning, match="depends on a differentiated input") as rec:
        g = gg.grad(f)(np.array([1.0, 2.0]))
    np.testing.assert_allclose(gg.to_numpy(g), [2.0, 4.0])
    assert rec[0].filename == __file__
    assert rec[0].lineno == _line_of(f"user-line-{how}")


def test_no_warning_outside_a_transform_or_for_constants():
    x = gg.Variable([1.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", gg.TracedValueWarning)
        float(gg.sum(x * x))  # eager code outside a transform: an ordinary read
        gg.to_numpy(x)

        def f(x):
            c = gg.asarray([3.0, 4.0])
            return gg.sum(x * float(gg.sum(c)))  # a constant, not differentiated: no warning

        np.testing.assert_allclose(gg.to_numpy(gg.grad(f)(np.array([1.0, 2.0]))), [7.0, 7.0])
