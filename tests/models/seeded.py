"""Deterministic weights for a state_dict template, independent of module construction order.

The parity fixtures of the official implementations were generated with these weights (the
official reconstructions have exactly our keys), so tests can rebuild them from a seed instead of
storing megabytes of parameters.
"""

from __future__ import annotations

import math

import torch


def seeded_state_dict(template: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Weights for every key of ``template`` (a state_dict), drawn in sorted key order.

    Convolution/linear weights ~ N(0, 1/fan_in), biases ~ N(0, 0.05^2), batch-norm weights
    1 + N(0, 0.1^2), running means N(0, 0.1^2), running variances U(0.5, 1.5).
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(template):
        ref = template[key]
        shape = tuple(ref.shape)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("running_mean"):
            out[key] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            out[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        elif key.endswith("weight"):
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[key] = 0.05 * torch.randn(shape, generator=g)
    return out


def moving_texture(n: int, t: int, h: int, w: int, seed: int, step: tuple[int, int] = (2, 1)) -> torch.Tensor:
    """(n, t, 3, h, w) frames in [0, 1]: a smooth random texture translating by ``step`` px a frame."""
    g = torch.Generator().manual_seed(seed)
    pad = max(abs(step[0]), abs(step[1])) * t + 2
    big = torch.rand(n, 3, (h + 2 * pad) // 4 + 2, (w + 2 * pad) // 4 + 2, generator=g)
    big = torch.nn.functional.interpolate(big, size=(h + 2 * pad, w + 2 * pad), mode="bilinear")
    frames = [big[..., pad + i * step[1] : pad + i * step[1] + h, pad + i * step[0] : pad + i * step[0] + w]
              for i in range(t)]
    noise = 0.02 * torch.randn(n, t, 3, h, w, generator=g)
    return (torch.stack(frames, 1) + noise).clamp(0, 1)
