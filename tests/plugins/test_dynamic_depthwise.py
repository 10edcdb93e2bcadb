"""vdeblur::DynamicDepthwise: the reference and the kernel against a literal-loop definition and
against per-sample conv2d, the optional bias, zero padding at the borders, gradients, the entry
point's errors.

Kernel vs reference on the spec's examples, custom op, fake implementation, lowerings and AOT: the
battery in test_ops.py; inside an exported Scan: test_scan.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import kernel_device
from vdeblur.errors import ShapeError
from vdeblur.plugins import dynamic_depthwise
from vdeblur.plugins.dynamic_depthwise import reference
from vdeblur.plugins.dynamic_depthwise.spec import SPEC
from vdeblur.plugins.torchop import launch


def literal(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The definition, one output value at a time (float64; independent of reference.py)."""
    xs, ws, bs = x.double().numpy(), weight.double().numpy(), bias.double().numpy()
    n_, c_, h_, w_ = xs.shape
    k = ws.shape[2]
    out = np.zeros_like(xs)
    for n in range(n_):
        for c in range(c_):
            for y in range(h_):
                for x in range(w_):
                    total = bs[c]
                    for i in range(k):
                        for j in range(k):
                            yy, xx = y + i - k // 2, x + j - k // 2
                            if 0 <= yy < h_ and 0 <= xx < w_:
                                total += ws[n, c, i, j] * xs[n, c, yy, xx]
                    out[n, c, y, x] = total
    return torch.from_numpy(out)


# (N, C, k, H, W): odd sizes, k = 1, 3, 5, a kernel wider than the image.
CASES = [(2, 3, 3, 5, 7), (1, 4, 5, 6, 5), (3, 2, 1, 3, 4), (1, 2, 5, 2, 3)]


def _inputs(case: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, c, k, h, w = case
    gen = torch.Generator().manual_seed(seed + sum(case))
    return (torch.randn(n, c, h, w, generator=gen), torch.randn(n, c, k, k, generator=gen),
            torch.randn(c, generator=gen))


@pytest.mark.parametrize("case", CASES, ids=["N{}C{}k{}H{}W{}".format(*c) for c in CASES])
def test_reference_and_kernel_match_the_definition(case: tuple[int, ...]) -> None:
    x, weight, bias = _inputs(case)
    want = literal(x, weight, bias)
    torch.testing.assert_close(reference.dynamic_depthwise(x, weight, bias).double(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dynamic_depthwise(x, weight, bias).double(), want, atol=1e-5, rtol=1e-5)
    dev = kernel_device()
    got = launch(SPEC, x.to(dev), weight.to(dev), bias.to(dev)).cpu()
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    # DSTNet's formulation: the batch folded into the channels, conv2d with groups = N * C.
    n, c, k, h, w = case
    folded = F.conv2d(x.reshape(1, n * c, h, w), weight.reshape(n * c, 1, k, k), padding=k // 2, groups=n * c)
    torch.testing.assert_close((folded.view(n, c, h, w) + bias.view(1, c, 1, 1)).double(), want, atol=1e-5, rtol=1e-5)


def test_bias_none_is_zero_bias() -> None:
    x, weight, _ = _inputs((2, 3, 3, 5, 7), seed=3)
    zero = torch.zeros(3)
    torch.testing.assert_close(dynamic_depthwise(x, weight), dynamic_depthwise(x, weight, zero), rtol=0, atol=0)
    torch.testing.assert_close(dynamic_depthwise(x, weight).double(), literal(x, weight, zero), atol=1e-5, rtol=1e-5)
    half = dynamic_depthwise(x.half(), weight.half())
    assert half.dtype == torch.float16


@pytest.mark.parametrize("k", [3, 5])
def test_zero_padding_counts_the_taps_inside_the_image(k: int) -> None:
    h, w = 6, 7
    x = torch.ones(2, 3, h, w)
    weight = torch.ones(2, 3, k, k)
    r = k // 2
    rows = torch.tensor([min(y + r, h - 1) - max(y - r, 0) + 1 for y in range(h)], dtype=torch.float32)
    cols = torch.tensor([min(x + r, w - 1) - max(x - r, 0) + 1 for x in range(w)], dtype=torch.float32)
    want = (rows[:, None] * cols[None, :]).expand(2, 3, h, w)
    assert want[0, 0, 0, 0] == (r + 1) ** 2 and want[0, 0, r, r] == k * k
    torch.testing.assert_close(dynamic_depthwise(x, weight), want)
    dev = kernel_device()
    torch.testing.assert_close(launch(SPEC, x.to(dev), weight.to(dev), torch.zeros(3, device=dev)).cpu(), want)


def test_gradients() -> None:
    """gradcheck in x, weight and bias through the entry point; the gradients equal conv2d's."""
    x, weight, bias = (t.double().requires_grad_() for t in _inputs((2, 3, 3, 4, 5), seed=5))
    assert torch.autograd.gradcheck(dynamic_depthwise, (x, weight, bias))
    grad = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    got = torch.autograd.grad(dynamic_depthwise(x, weight, bias), (x, weight, bias), grad)
    folded = F.conv2d(x.reshape(1, 6, 4, 5), weight.reshape(6, 1, 3, 3), padding=1, groups=6).view(2, 3, 4, 5)
    want = torch.autograd.grad(folded + bias.view(1, 3, 1, 1), (x, weight, bias), grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_bad_inputs_fail_clearly() -> None:
    x = torch.randn(2, 4, 5, 7)
    with pytest.raises(ShapeError, match=r"^dynamic_depthwise: weight has an even kernel size k=4\. Expected an odd k"):
        dynamic_depthwise(x, torch.randn(2, 4, 4, 4))
    with pytest.raises(ShapeError, match=r"^dynamic_depthwise: weight has a 3x1 kernel\. Expected a square"):
        dynamic_depthwise(x, torch.randn(2, 4, 3, 1))
    with pytest.raises(ShapeError, match=r"do not match\. Expected equal sizes in N, C"):
        dynamic_depthwise(x, torch.randn(2, 3, 3, 3))
    with pytest.raises(ShapeError, match=r"do not match\. Expected equal sizes in N, C"):
        dynamic_depthwise(x, torch.randn(1, 4, 3, 3))
    with pytest.raises(ShapeError, match=r"x \(2, 4, 5, 7\) and bias \(3,\) do not match\. Expected equal sizes in C"):
        dynamic_depthwise(x, torch.randn(2, 4, 3, 3), torch.randn(3))
    with pytest.raises(ShapeError, match=r"^dynamic_depthwise: weight has shape \(4, 3, 3\)\. Expected 4 dimensions"):
        dynamic_depthwise(x, torch.randn(4, 3, 3))
    with pytest.raises(ShapeError, match=r"^dynamic_depthwise: x has shape \(4, 5, 7\)\. Expected 4 dimensions"):
        dynamic_depthwise(x[0], torch.randn(2, 4, 3, 3))
