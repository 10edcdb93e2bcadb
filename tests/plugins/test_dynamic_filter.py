"""vdeblur::DynamicFilter: the reference and the kernel against a literal-loop definition, the
contiguous channel-to-group map, zero padding at the borders, gradients, the entry point's errors.

Kernel vs reference on the spec's examples, custom op, fake implementation, lowerings and AOT: the
battery in test_ops.py; inside an exported Scan: test_scan.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import kernel_device
from vdeblur.errors import ShapeError
from vdeblur.plugins import dynamic_filter
from vdeblur.plugins.dynamic_filter import reference
from vdeblur.plugins.dynamic_filter.spec import SPEC
from vdeblur.plugins.torchop import launch


def literal(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The definition, one output value at a time (float64; independent of reference.py)."""
    xs, ws = x.double().numpy(), weight.double().numpy()
    n_, c_, h_, w_ = xs.shape
    g_, k = ws.shape[1], ws.shape[2]
    out = np.zeros_like(xs)
    for n in range(n_):
        for c in range(c_):
            g = c // (c_ // g_)
            for y in range(h_):
                for x in range(w_):
                    total = 0.0
                    for i in range(k):
                        for j in range(k):
                            yy, xx = y + i - k // 2, x + j - k // 2
                            if 0 <= yy < h_ and 0 <= xx < w_:
                                total += ws[n, g, i, j, y, x] * xs[n, c, yy, xx]
                    out[n, c, y, x] = total
    return torch.from_numpy(out)


# (N, C, G, k, H, W): odd sizes, G < C and G == C, k = 1, 3, 5, a kernel wider than the image.
CASES = [(2, 6, 3, 3, 5, 7), (1, 4, 4, 3, 4, 5), (1, 6, 2, 5, 5, 3), (2, 3, 1, 1, 3, 5), (1, 2, 2, 5, 2, 3),
         (1, 6, 6, 5, 6, 5)]


def _inputs(case: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    n, c, g, k, h, w = case
    gen = torch.Generator().manual_seed(seed + sum(case))
    return torch.randn(n, c, h, w, generator=gen), torch.randn(n, g, k, k, h, w, generator=gen)


@pytest.mark.parametrize("case", CASES, ids=["N{}C{}G{}k{}H{}W{}".format(*c) for c in CASES])
def test_reference_and_kernel_match_the_definition(case: tuple[int, ...]) -> None:
    x, weight = _inputs(case)
    want = literal(x, weight)
    torch.testing.assert_close(reference.dynamic_filter(x, weight).double(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dynamic_filter(x, weight).double(), want, atol=1e-5, rtol=1e-5)
    dev = kernel_device()
    got = launch(SPEC, x.to(dev), weight.to(dev)).cpu()
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_channels_use_contiguous_groups() -> None:
    """Group g holds a centre tap of g + 1: channel c is scaled by c // (C // G) + 1 (blocks of
    C/G channels), not by c % G + 1."""
    n, c, g, h, w = 1, 6, 3, 4, 5
    x = torch.randn(n, c, h, w)
    weight = torch.zeros(n, g, 3, 3, h, w)
    for group in range(g):
        weight[:, group, 1, 1] = group + 1.0
    out = dynamic_filter(x, weight)
    scale = torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0]).view(1, c, 1, 1)
    torch.testing.assert_close(out, x * scale)
    dev = kernel_device()
    torch.testing.assert_close(launch(SPEC, x.to(dev), weight.to(dev)).cpu(), x * scale)


@pytest.mark.parametrize("k", [3, 5])
def test_zero_padding_counts_the_taps_inside_the_image(k: int) -> None:
    """x and weight all ones: each output is the number of taps that fall inside the image."""
    h, w = 6, 7
    x = torch.ones(1, 2, h, w)
    weight = torch.ones(1, 1, k, k, h, w)
    r = k // 2
    rows = torch.tensor([min(y + r, h - 1) - max(y - r, 0) + 1 for y in range(h)], dtype=torch.float32)
    cols = torch.tensor([min(x + r, w - 1) - max(x - r, 0) + 1 for x in range(w)], dtype=torch.float32)
    want = (rows[:, None] * cols[None, :]).expand(1, 2, h, w)
    assert want[0, 0, 0, 0] == (r + 1) ** 2 and want[0, 0, r, r] == k * k
    torch.testing.assert_close(dynamic_filter(x, weight), want)
    dev = kernel_device()
    torch.testing.assert_close(launch(SPEC, x.to(dev), weight.to(dev)).cpu(), want)


@pytest.mark.parametrize("case", [(1, 4, 2, 3, 4, 5), (2, 3, 3, 1, 3, 4)])
def test_gradients(case: tuple[int, ...]) -> None:
    """gradcheck through the entry point, and the gradients equal those of the definition written
    with torch ops (autograd through an independent unfold formula)."""
    x, weight = (t.double().requires_grad_() for t in _inputs(case, seed=7))
    assert torch.autograd.gradcheck(dynamic_filter, (x, weight))
    n, c, g, k, h, w = case
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    dx, dw = torch.autograd.grad(dynamic_filter(x, weight), (x, weight), grad)
    patches = torch.nn.functional.unfold(x, k, padding=k // 2).view(n, c, k, k, h, w)  # x at every tap
    per_channel = weight.repeat_interleave(c // g, dim=1)  # (N, C, k, k, H, W)
    unfolded = (per_channel * patches).sum((2, 3))
    ex, ew = torch.autograd.grad(unfolded, (x, weight), grad)
    torch.testing.assert_close(dx, ex)
    torch.testing.assert_close(dw, ew)


def test_bad_inputs_fail_clearly() -> None:
    x = torch.randn(1, 6, 5, 7)
    with pytest.raises(ShapeError, match=r"^dynamic_filter: weight has G=4 groups, which do not divide the C=6 "
                                         r"channels of x\. Expected G dividing C"):
        dynamic_filter(x, torch.randn(1, 4, 3, 3, 5, 7))
    with pytest.raises(ShapeError, match=r"^dynamic_filter: weight has an even kernel size k=2\. Expected an odd k"):
        dynamic_filter(x, torch.randn(1, 3, 2, 2, 5, 7))
    with pytest.raises(ShapeError, match=r"^dynamic_filter: weight has a 3x5 kernel\. Expected a square"):
        dynamic_filter(x, torch.randn(1, 3, 3, 5, 5, 7))
    with pytest.raises(ShapeError, match=r"do not match\. Expected equal sizes in N, H, W"):
        dynamic_filter(x, torch.randn(1, 3, 3, 3, 5, 8))
    with pytest.raises(ShapeError, match=r"do not match\. Expected equal sizes in N, H, W"):
        dynamic_filter(x, torch.randn(2, 3, 3, 3, 5, 7))
    with pytest.raises(ShapeError, match=r"^dynamic_filter: weight has shape \(1, 3, 3, 5, 7\)\. Expected 6 dimensions "
                                         r"\(N, G, K, L, H, W\)"):
        dynamic_filter(x, torch.randn(1, 3, 3, 5, 7))
    with pytest.raises(ShapeError, match=r"weight has dtype torch.int64"):
        dynamic_filter(x, torch.ones(1, 3, 3, 3, 5, 7, dtype=torch.int64))
