"""Helpers shared by the deployment tests of the families built from their papers (AHFNet, ARVo):
PNG frame folders, run_clip on numpy clips, and Stream on ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def write_png_folder(folder: Path, frames: np.ndarray) -> Path:
    """frames (T, 3, H, W) float in [0, 1] -> folder/0000.png ... (uint8, rounded), as a user passes one."""
    from vdeblur.runtime.video import encode_png

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames.transpose(0, 2, 3, 1)):
        (folder / f"{i:04d}.png").write_bytes(encode_png((f * 255 + 0.5).astype(np.uint8)))
    return folder


def run_clip_np(model: Any, video: np.ndarray) -> np.ndarray:
    """vdeblur.models.run_clip on one clip (T, 3, H, W) float32 -> (T, 3, H, W)."""
    from vdeblur.models import run_clip

    return run_clip(model, torch.from_numpy(video)[None])[0].numpy()


def stream_onnxruntime(artifact: Path, video: np.ndarray, **options: Any) -> np.ndarray:
    """Push every frame of (T, 3, H, W) through a Stream on ONNX Runtime, flush, and check that one
    output came per input, in order; returns (T, 3, H, W)."""
    from vdeblur.runtime.stream import Stream

    outs: list[tuple[int, np.ndarray]] = []
    with Stream(artifact, backend="onnxruntime", **options) as s:
        for f in video.transpose(0, 2, 3, 1):
            outs += s.push(f)
        outs += s.flush()
    assert [i for i, _ in outs] == list(range(len(video)))
    return np.stack([o for _, o in outs]).transpose(0, 3, 1, 2)
