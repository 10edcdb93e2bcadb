"""vdeblur::CorrelationArgmax: fused kernel vs reference (with near-tie analysis), lowerings."""

from __future__ import annotations

import onnx
import pytest
import torch

from tests.conftest import kernel_device, spy_on
from tests.plugins._export import export, run_ort
from vdeblur.errors import UsageError
from vdeblur.plugins import correlation_argmax
from vdeblur.plugins.correlation_argmax import kernel, reference
from vdeblur.plugins.lowering import plugin_nodes

# Tolerance of the op card: a displacement may differ from the reference only at a near-tie,
# where the pooled cost of the kernel's choice is within TIE_TOL of the reference maximum.
TIE_TOL = 1e-5


def moving_pair(shape: tuple[int, ...], shift: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    f1 = torch.randn(*shape, generator=g)
    f2 = torch.roll(f1, shifts=shift, dims=(2, 3)) + 0.3 * torch.randn(*shape, generator=g)
    return f1, f2


def assert_same_choice(flow: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor, d: int, pool: int) -> None:
    ref = reference.correlation_argmax(f1, f2, d, pool)
    cost = reference.pooled_cost(f1, f2, d, pool)
    k = 2 * d + 1
    idx = ((flow[:, 1] + d) * k + (flow[:, 0] + d)).long().unsqueeze(1)
    chosen = cost.gather(1, idx)
    best = cost.max(dim=1, keepdim=True).values
    assert ((flow == ref).all(dim=1).float().mean()) >= 0.99
    assert (best - chosen).max() <= TIE_TOL


def test_reference_recovers_a_global_shift() -> None:
    f1, f2 = moving_pair((1, 8, 24, 24), (2, -3), seed=0)
    # f2(y, x) = f1(y - 2, x + 3): the content of f1 at (y, x) is found in f2 at (y + 2, x - 3),
    # and flow_warp(f2, flow) brings it back onto f1.
    flow = reference.correlation_argmax(f1, f2, 4)
    inner = flow[:, :, 6:-6, 6:-6]
    assert (inner[:, 0] == -3).float().mean() > 0.95
    assert (inner[:, 1] == 2).float().mean() > 0.95
    from vdeblur.plugins.flow_warp.reference import flow_warp

    aligned = flow_warp(f2, flow)[:, :, 6:-6, 6:-6]
    assert (aligned - f1[:, :, 6:-6, 6:-6]).abs().mean() < 0.3 * (f2 - f1).abs().mean()


def test_first_maximum_wins_on_ties() -> None:
    zeros = torch.zeros(1, 3, 6, 6)
    flow = reference.correlation_argmax(zeros, zeros, 2, 3)  # every displacement ties at 0
    assert (flow[:, 0] == -2).all() and (flow[:, 1] == -2).all()  # index 0 = (dy, dx) = (-d, -d)


@pytest.mark.parametrize(
    "shape,d,pool",
    [((1, 5, 7, 9), 3, 5), ((2, 3, 13, 11), 2, 3), ((1, 4, 17, 18), 3, 5), ((1, 6, 5, 33), 2, 1)],
)
def test_fused_kernel_matches_reference(shape: tuple[int, ...], d: int, pool: int) -> None:
    f1, f2 = moving_pair(shape, (1, 2), seed=sum(shape))
    dev = kernel_device()
    flow = kernel.correlation_argmax(f1.to(dev), f2.to(dev), d, pool).cpu()
    assert flow.shape == (shape[0], 2, shape[2], shape[3]) and flow.dtype == torch.float32
    assert_same_choice(flow, f1, f2, d, pool)


def test_fused_kernel_half_inputs() -> None:
    f1, f2 = moving_pair((1, 6, 10, 12), (0, 1), seed=7)
    dev = kernel_device()
    flow = kernel.correlation_argmax(f1.half().to(dev), f2.half().to(dev), 2, 5).cpu()
    ref = reference.correlation_argmax(f1.half().float(), f2.half().float(), 2, 5)
    assert (flow == ref).all(dim=1).float().mean() >= 0.97


def test_fused_kernel_with_zero_features() -> None:
    # All-zero regions: normalisation by max(|f|, eps) keeps the cost at 0 (no NaN), ties -> index 0.
    f1 = torch.zeros(1, 3, 8, 8)
    f1[:, :, :4] = torch.randn(1, 3, 4, 8)
    f2 = f1.clone()
    flow = kernel.correlation_argmax(f1.to(kernel_device()), f2.to(kernel_device()), 2, 3).cpu()
    assert torch.isfinite(flow).all()
    assert_same_choice(flow, f1, f2, 2, 3)


@pytest.mark.usefixtures("kernels_on_cpu")
def test_custom_op_dispatches_to_fused_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    f1, f2 = moving_pair((1, 4, 9, 10), (1, 1), seed=3)
    calls = spy_on(monkeypatch, kernel, "correlation_argmax")
    assert_same_choice(correlation_argmax(f1, f2, 2, 3), f1, f2, 2, 3)
    assert len(calls) == 1  # the fused kernel ran, not the reference


def test_not_differentiable_and_validates() -> None:
    f1 = torch.randn(1, 3, 8, 8, requires_grad=True)
    assert not correlation_argmax(f1, f1, 2).requires_grad
    with pytest.raises(UsageError, match="pool=4 is even"):
        correlation_argmax(f1, f1, 2, 4)


class _Search(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return correlation_argmax(a, b, 3, 5)


def test_portable_onnx_in_onnxruntime_matches_reference() -> None:
    f1, f2 = moving_pair((1, 6, 12, 16), (1, 1), seed=5)
    model = export(_Search(), (f1, f2), "portable")
    onnx.checker.check_model(model, full_check=True)
    assert {"ArgMax", "AveragePool"} <= {n.op_type for n in model.graph.node}
    a, b = moving_pair((1, 6, 13, 21), (-1, 2), seed=6)
    flow = run_ort(model, a, b)
    assert_same_choice(flow, a, b, 3, 5)


def test_trt_lowering_emits_one_typed_plugin_node() -> None:
    f1, f2 = moving_pair((1, 6, 12, 16), (1, 1), seed=5)
    model = export(_Search(), (f1, f2), "trt")
    onnx.checker.check_model(model, full_check=True)
    (node,) = model.graph.node
    assert (node.op_type, node.domain) == ("CorrelationArgmax", "vdeblur")
    attrs = {a.name: (a.type, onnx.helper.get_attribute_value(a)) for a in node.attribute}
    assert attrs["max_displacement"] == (onnx.AttributeProto.INT, 3)
    assert attrs["pool"] == (onnx.AttributeProto.INT, 5)
    assert attrs["aot"] == (onnx.AttributeProto.INT, 1)
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    from vdeblur.plugins._onnx import check_plugin_nodes

    assert check_plugin_nodes(model, plugin_nodes()) == []
