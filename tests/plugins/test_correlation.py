"""vdeblur::Correlation: the reference against the definition, and the entry point's errors.

Kernel, custom op, autograd, fake implementation, lowerings and AOT: the battery in test_ops.py.
"""

from __future__ import annotations

import pytest
import torch

from vdeblur.errors import ShapeError, UsageError
from vdeblur.plugins import correlation
from vdeblur.plugins.correlation import reference


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
