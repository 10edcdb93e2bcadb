"""vdeblur::CorrelationArgmax: the reference's semantics and the fused kernel's near-ties.

The generic checks (kernel vs reference, custom op, lowerings, AOT): test_ops.py.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import kernel_device
from tests.plugins._export import exported
from vdeblur.errors import UsageError
from vdeblur.plugins import correlation_argmax
from vdeblur.plugins.correlation_argmax import reference
from vdeblur.plugins.correlation_argmax.spec import SPEC
from vdeblur.plugins.torchop import launch

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


def kernel(f1: torch.Tensor, f2: torch.Tensor, d: int, pool: int) -> torch.Tensor:
    dev = kernel_device()
    return launch(SPEC, f1.to(dev), f2.to(dev), max_displacement=d, pool=pool).cpu()


def test_fused_kernel_choices_differ_only_at_near_ties() -> None:
    # A moving pair over several 16 x 16 tiles: the choice is clear almost everywhere.
    f1, f2 = moving_pair((1, 3, 17, 18), (1, 2), seed=40)
    assert_same_choice(kernel(f1, f2, 2, 3), f1, f2, 2, 3)


def test_fused_kernel_with_zero_features() -> None:
    # All-zero regions: normalisation by max(|f|, eps) keeps the cost at 0 (no NaN), ties -> index 0.
    f1 = torch.zeros(1, 3, 8, 8)
    f1[:, :, :4] = torch.randn(1, 3, 4, 8)
    f2 = f1.clone()
    flow = kernel(f1, f2, 2, 3)
    assert torch.isfinite(flow).all()
    assert_same_choice(flow, f1, f2, 2, 3)


def test_even_pool_is_refused() -> None:
    f1 = torch.randn(1, 3, 8, 8)
    with pytest.raises(UsageError, match="pool=4 is even"):
        correlation_argmax(f1, f1, 2, 4)


def test_portable_lowering_is_a_search_in_standard_ops() -> None:
    ops = {n.op_type for n in exported("correlation_argmax", "portable").graph.node}
    assert {"ArgMax", "AveragePool", "MatMul"} <= ops
