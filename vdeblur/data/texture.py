"""Deterministic synthetic frames (numpy only): textured content under a smooth camera motion.

The one synthetic clip of export validation, build verification, benchmarks and tests (torch-free,
importable from any layer)."""

from __future__ import annotations

import numpy as np


def moving_texture(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(T, 3, H, W) float32 in [0, 1]: smooth random texture plus fine detail, panning ~5 px/frame."""
    rng = np.random.default_rng(seed)
    big_h, big_w = height + 8 * frames + 16, width + 8 * frames + 16
    coarse = rng.random((3, big_h // 8 + 2, big_w // 8 + 2), dtype=np.float32)
    ys = np.linspace(0, coarse.shape[1] - 1.001, big_h)
    xs = np.linspace(0, coarse.shape[2] - 1.001, big_w)
    y0, x0 = ys.astype(int), xs.astype(int)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    c = coarse
    base = ((1 - wy) * (1 - wx) * c[:, y0][:, :, x0] + (1 - wy) * wx * c[:, y0][:, :, x0 + 1]
            + wy * (1 - wx) * c[:, y0 + 1][:, :, x0] + wy * wx * c[:, y0 + 1][:, :, x0 + 1])
    canvas = np.clip(base + 0.15 * rng.random((3, big_h, big_w), dtype=np.float32), 0, 1).astype(np.float32)
    clip = []
    for t in range(frames):
        y, x = 8 + round(3 * t + 2 * np.sin(t)), 8 + round(5 * t)
        clip.append(canvas[:, y : y + height, x : x + width])
    return np.stack(clip)
