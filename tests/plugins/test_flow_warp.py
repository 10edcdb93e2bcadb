"""vdeblur::FlowWarp: the reference's semantics, the kernel at the image edges, input errors.

The generic checks (kernel vs reference, autograd, lowerings, AOT): test_ops.py.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import kernel_device
from tests.plugins._export import exported
from vdeblur.errors import ShapeError, UsageError
from vdeblur.plugins import flow_warp
from vdeblur.plugins.flow_warp import reference
from vdeblur.plugins.flow_warp.spec import SPEC
from vdeblur.plugins.torchop import launch

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


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (2, 3, 13, 11)])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_kernel_at_the_exact_image_edges(shape: tuple[int, ...], padding_mode: str) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g)
    flow = torch.randn(shape[0], 2, *shape[2:], generator=g) * 4
    flow[0, 0, 0, 0], flow[0, 1, 0, 0] = shape[3] - 1.0, shape[2] - 1.0  # exactly the far corner
    flow[0, :, -1, -1] = 0.0  # exactly the last pixel
    dev = kernel_device()
    out = launch(SPEC, x.to(dev), flow.to(dev), padding_mode=padding_mode).cpu()
    torch.testing.assert_close(out, reference.flow_warp(x, flow, padding_mode), atol=ATOL, rtol=0)


def test_bad_inputs_fail_clearly() -> None:
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ShapeError, match="flow has 3 channels"):
        flow_warp(x, torch.randn(1, 3, 8, 8))
    with pytest.raises(ShapeError, match="do not match"):
        flow_warp(x, torch.randn(1, 2, 8, 9))
    with pytest.raises(ShapeError, match=r"do not match. Expected equal sizes in N, H, W"):
        flow_warp(x, torch.randn(2, 2, 8, 8))
    with pytest.raises(UsageError, match="padding_mode='reflection'"):
        flow_warp(x, torch.randn(1, 2, 8, 8), "reflection")
    with pytest.raises(ShapeError, match="Expected H, W >= 2"):
        flow_warp(torch.randn(1, 3, 1, 8), torch.randn(1, 2, 1, 8))


def test_portable_lowering_is_gridsample() -> None:
    # export/precision.py keeps GridSample and the cone of its grid in float32: the warp must be one.
    ops = [n.op_type for n in exported("flow_warp", "portable").graph.node]
    assert ops.count("GridSample") == 1
