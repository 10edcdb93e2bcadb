"""Backward warping by a flow field in plain PyTorch: the spec of the op and its portable lowering
(it traces to ONNX GridSample)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Sample x at (px + flow_x, py + flow_y), bilinearly.

    x: (N, C, H, W); flow: (N, 2, H, W) in pixels, channel 0 = x, channel 1 = y. Pixel centres
    are at integer coordinates (``align_corners=True``); outside the image ``padding_mode``
    "zeros" reads 0 and "border" clamps to the edge. H and W must be >= 2.
    """
    n, _, h, w = x.shape
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(1, h, 1)
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, 1, w)
    gx = (xs + flow[:, 0]) * (2.0 / (w - 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / (h - 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
