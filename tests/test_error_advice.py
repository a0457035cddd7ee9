"""Errors that name what the user passed and say what to do (issue 21, item 10): a habit
from PyTorch or NumPy (a torch tensor, ``.backward()`` on a graph, a feed keyed by name, a
loss turned into a number) gets a message about that habit, not about gpugrad's internals."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg

HERE = r".*called at test_error_advice\.py:\d+$"  # the caller's own line, last


class Tensor:
    """Another library's array class named Tensor (torch's name), a DLPack producer whose
    dtype NumPy lacks: what eager dispatch and from_dlpack see of a torch bfloat16 tensor."""

    __module__ = "otherlib"
    shape = (3,)
    dtype = "otherlib.bfloat16"

    def __dlpack__(self, **kwargs):
        raise BufferError("Unsupported dtype in DLTensor.")

    def __dlpack_device__(self):
        return (1, 0)


def test_another_librarys_tensor_is_named_with_its_library(numpy_backend):
    with pytest.raises(TypeError, match=r"^exp: argument 0 is a otherlib\.Tensor, not a gpugrad "
                       r"Tensor; convert it first with gg\.from_dlpack\(x\).*x\.numpy\(\)" + HERE):
        gg.exp(Tensor())
    with pytest.raises(TypeError, match=r"^add: argument 1 is a list; pass Tensors"):
        gg.add(gg.asarray(np.ones(2)), [1.0, 2.0])


def test_torch_tensor_is_named_and_bfloat16_is_told_to_convert(numpy_backend):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"^exp: argument 0 is a torch\.Tensor, not a gpugrad "
                       r"Tensor; convert it first with gg\.from_dlpack" + HERE):
        gg.exp(torch.ones(3))
    np.testing.assert_array_equal(gg.to_numpy(gg.exp(gg.from_dlpack(torch.zeros(3)))), 1.0)
    for convert in (gg.asarray, gg.from_dlpack):
        with pytest.raises(gg.BackendError, match=r"has dtype bfloat16, which NumPy and backend "
                           r"numpy have no dtype for; convert it to float32 .*x\.float\(\)"):
            convert(torch.ones(3, dtype=torch.bfloat16))
    assert gg.asarray(torch.ones(3, dtype=torch.bfloat16).float()).dtype == np.float32


def test_bfloat16_without_a_numpy_dtype_is_not_told_to_copy_to_the_host(numpy_backend):
    with pytest.raises(gg.BackendError, match=r"^from_dlpack: a otherlib array \(3,\) .* has "
                       r"dtype bfloat16.*convert it to float32 in its own library first" + HERE
                       ) as info:
        gg.from_dlpack(Tensor())
    assert "copy it to the host" not in str(info.value)


def test_to_numpy_inside_compile_speaks_of_the_traced_value(numpy_backend):
    f = gg.compile(lambda x: gg.to_numpy(x * 2.0))
    with pytest.raises(TypeError, match=r"^gg\.compile\(<lambda>\): gg\.to_numpy\(\) \(or "
                       r"np\.asarray\) needs the value of a traced array.*return it from the "
                       r"compiled function.*or compute it outside" + HERE) as info:
        f(gg.asarray(np.ones(3)))
    assert "Placeholder" not in str(info.value) and "sym.eval" not in str(info.value)
    x = gg.Placeholder((3,), "float64", name="x")  # outside gg.compile: the graph's advice
    with pytest.raises(TypeError, match=r"call gg\.to_numpy\(sym\.eval\(feed\)\)"):
        gg.to_numpy(x * 2.0)


def test_a_feed_keyed_by_name_names_the_placeholder(numpy_backend):
    x = gg.Placeholder((3,), "float64", name="x")
    y = x * 2.0
    with pytest.raises(gg.FeedError, match=r"^Placeholder 'x' was not fed: the feed is keyed by "
                       r"its name 'x', but feeds are keyed by the Placeholder object itself"
                       + HERE):
        y.eval({"x": np.ones(3)})
    w = gg.Variable(np.ones(3), name="w")
    with pytest.raises(gg.FeedError, match=r"^Placeholder 'x' was not fed.*keyed by the "
                       r"Placeholder objects, not by names such as 'z'" + HERE):
        gg.gradients(gg.sum(y * w), [w], feed={"z": np.ones(3)})
    np.testing.assert_array_equal(gg.to_numpy(y.eval({x: np.ones(3)})), 2.0)


def test_symbol_backward_points_to_gradients_and_minimize(numpy_backend):
    x = gg.Placeholder((3,), "float64", name="x")
    w = gg.Variable(np.ones(3), name="w")
    with pytest.raises(TypeError, match=r"is a graph Symbol, which has no \.backward\(\); "
                       r"differentiate a graph with gg\.gradients.*opt\.minimize.*eager "
                       r"Tensors.*have \.backward\(\)" + HERE):
        gg.sum(x * w).backward()

    def step(xb):
        loss = gg.sum(xb * w)
        loss.backward()
        return loss

    with pytest.raises(TypeError, match=r"^gg\.compile\(step\): \.backward\(\) on a traced "
                       r"value.*return the loss from the function and call \.backward\(\) on "
                       r"the result outside it" + HERE):
        gg.compile(step)(gg.asarray(np.ones(3)))


@pytest.mark.parametrize("number", [3.0, np.float64(3.0), np.ones(())],
                         ids=["float", "numpy-scalar", "numpy-0d"])
def test_gradients_of_a_number_names_the_likely_cause(number, numpy_backend):
    w = gg.Variable(np.ones(3), name="w")
    kind = type(number).__name__
    kind = kind if kind == "float" else "numpy." + kind
    for fn, name in [(gg.gradients, "gradients"), (gg.value_and_gradients,
                                                   "value_and_gradients")]:
        with pytest.raises(TypeError, match=rf"^{name}: expected a graph Symbol .*got a "
                           rf"{kind}, a value with no graph behind it, likely made from the "
                           r"loss by float\(\), \.item\(\) or gg\.to_numpy\(\).*pass the loss "
                           r"Symbol itself"):
            fn(number, [w])
