"""vdeblur::Correlation: reference semantics, Triton kernel, custom op, autograd, ONNX lowerings."""

from __future__ import annotations

import onnx
import pytest
import torch

from tests.conftest import kernel_device, spy_on
from tests.plugins._export import export, run_ort
from vdeblur.errors import ShapeError, UsageError
from vdeblur.plugins import correlation
from vdeblur.plugins.correlation import kernel, reference
from vdeblur.plugins.lowering import plugin_nodes

SHAPES = [  # (N, C, H, W), max_displacement, stride
    ((1, 5, 7, 9), 3, 1),
    ((2, 3, 13, 11), 4, 2),
    ((1, 7, 6, 17), 5, 1),
    ((1, 4, 9, 8), 4, 3),  # d not a multiple of the stride: rounds down to 3
]


def naive(f1: torch.Tensor, f2: torch.Tensor, d: int, s: int) -> torch.Tensor:
    """Definition by loops over every displacement and pixel (independent of reference.py)."""
    n, c, h, w = f1.shape
    disp = list(range(-(d // s) * s, (d // s) * s + 1, s))
    out = torch.zeros(n, len(disp) ** 2, h, w, dtype=torch.float64)
    for i, dy in enumerate(disp):
        for j, dx in enumerate(disp):
            for y in range(h):
                for x in range(w):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        prod = f1[:, :, y, x].double() * f2[:, :, y + dy, x + dx].double()
                        out[:, i * len(disp) + j, y, x] = prod.sum(1)
    return out


def test_reference_matches_definition() -> None:
    torch.manual_seed(0)
    f1, f2 = torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    for d, s in [(2, 1), (3, 2)]:
        got = reference.correlation(f1, f2, d, s).double()
        torch.testing.assert_close(got, naive(f1, f2, d, s), rtol=1e-5, atol=1e-5)


def test_channel_order_is_row_major_over_dy_dx() -> None:
    f1 = torch.zeros(1, 1, 7, 7)
    f2 = torch.zeros(1, 1, 7, 7)
    f1[0, 0, 3, 3] = 1.0
    f2[0, 0, 1, 4] = 1.0  # dy = -2, dx = +1
    out = reference.correlation(f1, f2, 3)
    k = 7
    assert out[0, :, 3, 3].nonzero().flatten().tolist() == [(-2 + 3) * k + (1 + 3)]


@pytest.mark.parametrize("shape,d,s", SHAPES)
def test_kernel_matches_reference(shape: tuple[int, ...], d: int, s: int) -> None:
    torch.manual_seed(1)
    dev = kernel_device()
    f1, f2 = torch.randn(*shape, device=dev), torch.randn(*shape, device=dev)
    torch.testing.assert_close(kernel.correlation(f1, f2, d, s), reference.correlation(f1, f2, d, s),
                               rtol=1e-5, atol=1e-5 * shape[1])


def test_kernel_half_precision() -> None:
    torch.manual_seed(2)
    dev = kernel_device()
    f1, f2 = torch.randn(1, 6, 9, 10, device=dev).half(), torch.randn(1, 6, 9, 10, device=dev).half()
    out = kernel.correlation(f1, f2, 2)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), reference.correlation(f1.float(), f2.float(), 2), rtol=2e-3, atol=1e-2)


@pytest.mark.usefixtures("kernels_on_cpu")
def test_custom_op_dispatches_to_kernel_and_differentiates(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(3)
    f1 = torch.randn(1, 3, 6, 7, requires_grad=True)
    f2 = torch.randn(1, 3, 6, 7, requires_grad=True)
    calls = spy_on(monkeypatch, kernel, "correlation")
    out = correlation(f1, f2, 2)
    assert len(calls) == 1  # the kernel ran, not the reference
    torch.testing.assert_close(out, reference.correlation(f1, f2, 2), rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    out.backward(g)
    r1, r2 = f1.detach().requires_grad_(), f2.detach().requires_grad_()
    reference.correlation(r1, r2, 2).backward(g)
    torch.testing.assert_close(f1.grad, r1.grad)
    torch.testing.assert_close(f2.grad, r2.grad)


def test_gradcheck_through_custom_op() -> None:
    f1 = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    f2 = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: correlation(a, b, 1), (f1, f2))


def test_fake_tensor_shape() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = correlation(torch.empty(2, 8, 30, 40), torch.empty(2, 8, 30, 40), 4, 2)
    assert tuple(out.shape) == (2, 25, 30, 40)


def test_bad_inputs_fail_clearly() -> None:
    a = torch.randn(1, 3, 8, 8)
    with pytest.raises(ShapeError, match="correlation: f1 has shape"):
        correlation(a[0], a, 2)
    with pytest.raises(ShapeError, match="do not match"):
        correlation(a, torch.randn(1, 3, 8, 9), 2)
    with pytest.raises(UsageError, match="stride=0 is invalid"):
        correlation(a, a, 2, 0)
    with pytest.raises(ShapeError, match="dtype torch.int64"):
        correlation(a.long(), a.long(), 2)


class _Corr(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return correlation(a, b, 3, 1)


def test_portable_onnx_in_onnxruntime_matches_reference() -> None:
    torch.manual_seed(4)
    model = export(_Corr(), (torch.randn(1, 6, 12, 16), torch.randn(1, 6, 12, 16)), "portable")
    onnx.checker.check_model(model, full_check=True)
    assert not any(n.domain == "vdeblur" for n in model.graph.node)
    a, b = torch.randn(1, 6, 11, 19), torch.randn(1, 6, 11, 19)  # another size: dynamic H, W
    torch.testing.assert_close(run_ort(model, a, b), reference.correlation(a, b, 3), rtol=1e-5, atol=1e-5)


def test_trt_lowering_emits_one_typed_plugin_node() -> None:
    model = export(_Corr(), (torch.randn(1, 6, 12, 16), torch.randn(1, 6, 12, 16)), "trt")
    onnx.checker.check_model(model, full_check=True)
    (node,) = model.graph.node
    assert (node.op_type, node.domain) == ("Correlation", "vdeblur")
    attrs = {a.name: a for a in node.attribute}
    assert attrs["plugin_namespace"].s == b"vdeblur" and attrs["plugin_namespace"].type == onnx.AttributeProto.STRING
    assert attrs["plugin_version"].s == b"1" and attrs["plugin_version"].type == onnx.AttributeProto.STRING
    assert attrs["aot"].i == 1 and attrs["aot"].type == onnx.AttributeProto.INT
    assert attrs["max_displacement"].i == 3 and attrs["max_displacement"].type == onnx.AttributeProto.INT
    assert attrs["stride"].i == 1 and attrs["stride"].type == onnx.AttributeProto.INT
    from vdeblur.plugins._onnx import check_plugin_nodes

    assert check_plugin_nodes(model, plugin_nodes()) == []
