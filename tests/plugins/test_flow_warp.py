"""vdeblur::FlowWarp: semantics, Triton kernel, autograd, lowerings."""

from __future__ import annotations

import onnx
import pytest
import torch

from tests.conftest import kernel_device, spy_on
from tests.plugins._export import export, run_ort
from vdeblur.errors import ShapeError, UsageError
from vdeblur.plugins import flow_warp
from vdeblur.plugins.flow_warp import kernel, reference

# Op-card tolerance: grid_sample normalises and unnormalises the sample position, which moves it
# by a few ulps of the coordinate; values differ by at most ~1e-5 per unit of image gradient.
ATOL = 1e-4


def test_integer_flow_is_a_shift_with_zero_fill() -> None:
    x = torch.arange(30.0).view(1, 1, 5, 6)
    flow = torch.zeros(1, 2, 5, 6)
    flow[:, 0] = 2.0  # sample 2 pixels to the right
    flow[:, 1] = -1.0  # and 1 pixel up
    out = reference.flow_warp(x, flow)
    torch.testing.assert_close(out[0, 0, 1:, :4], x[0, 0, :4, 2:], atol=1e-5, rtol=0)
    assert (out[0, 0, 0] == 0).all() and (out[0, 0, :, 4:] == 0).all()


def test_border_padding_clamps() -> None:
    x = torch.arange(12.0).view(1, 1, 3, 4)
    flow = torch.full((1, 2, 3, 4), 10.0)
    out = reference.flow_warp(x, flow, "border")
    assert torch.allclose(out, torch.full_like(out, 11.0))


def test_half_pixel_is_bilinear() -> None:
    x = torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]])
    flow = torch.zeros(1, 2, 2, 2)
    flow[:, :, 0, 0] = 0.5
    assert reference.flow_warp(x, flow)[0, 0, 0, 0].item() == pytest.approx(3.0, abs=1e-6)


@pytest.mark.parametrize("shape", [(1, 5, 7, 9), (2, 3, 13, 11), (1, 8, 20, 35), (1, 1, 2, 2)])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_kernel_matches_reference(shape: tuple[int, ...], padding_mode: str) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g)
    flow = torch.randn(shape[0], 2, *shape[2:], generator=g) * 4
    flow[0, 0, 0, 0], flow[0, 1, 0, 0] = shape[3] - 1.0, shape[2] - 1.0  # exactly the far corner
    flow[0, :, -1, -1] = 0.0  # exactly the last pixel
    dev = kernel_device()
    out = kernel.flow_warp(x.to(dev), flow.to(dev), padding_mode).cpu()
    torch.testing.assert_close(out, reference.flow_warp(x, flow, padding_mode), atol=ATOL, rtol=0)


def test_kernel_half() -> None:
    x = torch.randn(1, 4, 9, 10)
    flow = torch.randn(1, 2, 9, 10) * 3
    dev = kernel_device()
    out = kernel.flow_warp(x.half().to(dev), flow.half().to(dev)).cpu()
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), reference.flow_warp(x.half().float(), flow.half().float()),
                               atol=1e-2, rtol=1e-2)


def test_gradients_in_x_and_flow() -> None:
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    flow = (torch.rand(1, 2, 5, 6, dtype=torch.float64) * 3 - 1.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, f: flow_warp(a, f, "border"), (x, flow))
    assert torch.autograd.gradcheck(lambda a, f: flow_warp(a, f, "zeros"), (x, flow))


@pytest.mark.usefixtures("kernels_on_cpu")
def test_custom_op_uses_kernel_forward_and_reference_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(1, 3, 6, 7, requires_grad=True)
    flow = (torch.randn(1, 2, 6, 7) * 2).requires_grad_()
    calls = spy_on(monkeypatch, kernel, "flow_warp")
    out = flow_warp(x, flow)
    assert len(calls) == 1  # the kernel ran forward, not the reference
    torch.testing.assert_close(out, reference.flow_warp(x, flow), atol=ATOL, rtol=0)
    out.square().sum().backward()
    x2, f2 = x.detach().requires_grad_(), flow.detach().requires_grad_()
    reference.flow_warp(x2, f2).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(flow.grad, f2.grad, atol=1e-4, rtol=1e-4)


def test_bad_inputs_fail_clearly() -> None:
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ShapeError, match="flow has 3 channels"):
        flow_warp(x, torch.randn(1, 3, 8, 8))
    with pytest.raises(ShapeError, match="do not match"):
        flow_warp(x, torch.randn(1, 2, 8, 9))
    with pytest.raises(UsageError, match="padding_mode='reflection'"):
        flow_warp(x, torch.randn(1, 2, 8, 8), "reflection")
    with pytest.raises(ShapeError, match="Expected H, W >= 2"):
        flow_warp(torch.randn(1, 3, 1, 8), torch.randn(1, 2, 1, 8))


class _Warp(torch.nn.Module):
    def __init__(self, padding_mode: str) -> None:
        super().__init__()
        self.padding_mode = padding_mode

    def forward(self, x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return flow_warp(x, flow, self.padding_mode)


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_portable_onnx_is_gridsample_and_matches(padding_mode: str) -> None:
    model = export(_Warp(padding_mode), (torch.randn(1, 4, 12, 16), torch.randn(1, 2, 12, 16)), "portable")
    onnx.checker.check_model(model, full_check=True)
    assert "GridSample" in {n.op_type for n in model.graph.node}
    x, flow = torch.randn(1, 4, 9, 23), torch.randn(1, 2, 9, 23) * 3
    torch.testing.assert_close(run_ort(model, x, flow), reference.flow_warp(x, flow, padding_mode), atol=ATOL, rtol=0)


def test_trt_lowering_string_attribute() -> None:
    model = export(_Warp("border"), (torch.randn(1, 4, 12, 16), torch.randn(1, 2, 12, 16)), "trt")
    onnx.checker.check_model(model, full_check=True)
    (node,) = model.graph.node
    assert (node.op_type, node.domain) == ("FlowWarp", "vdeblur")
    (attr,) = [a for a in node.attribute if a.name == "padding_mode"]
    assert attr.type == onnx.AttributeProto.STRING and attr.s == b"border"
