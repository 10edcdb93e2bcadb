"""Shared building blocks of the model families, the base class of our reference modules, and the
model-agnostic clip runner behind :func:`vdeblur.models.run_clip`.

Layers keep the official submodule names (``dense_layers.{i}.conv``, ``conv1x1``...) so that the
families built from them produce the official state_dict keys.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vdeblur.errors import ShapeError, UsageError
from vdeblur.plugins import flow_warp

# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------

ACTIVATIONS = ("relu", "relu6", "leakyrelu", "prelu", "selu", "celu", "elu", "gelu", "tanh")


def activation(name: str) -> nn.Module:
    """An activation module by name, as the ESTRNN/MMP-RNN ``actFunc`` (LeakyReLU slope 0.1)."""
    table: dict[str, Any] = {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "leakyrelu": lambda: nn.LeakyReLU(0.1),
        "prelu": nn.PReLU,
        "selu": nn.SELU,
        "celu": nn.CELU,
        "elu": nn.ELU,
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
    }
    key = str(name).lower()
    if key not in table:
        raise UsageError(f"activation: {name!r} is unknown. Expected one of {', '.join(ACTIVATIONS)}.")
    return table[key]()


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """A biased convolution with 'same' padding (kernel_size // 2)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


class DenseLayer(nn.Module):
    """conv 3x3 -> activation, concatenated to its input: (N, C, H, W) -> (N, C + growth, H, W)."""

    def __init__(self, in_channels: int, growth_rate: int, act: str = "gelu") -> None:
        super().__init__()
        self.conv = conv(in_channels, growth_rate, 3)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.act(self.conv(x))), 1)


class ResidualDenseBlock(nn.Module):
    """Residual dense block (RDB): ``num_layers`` dense layers, a 1x1 fusion conv, a residual add.

    (N, C, H, W) -> (N, C, H, W). Keys: ``dense_layers.{i}.conv.*``, ``conv1x1.*``.
    """

    def __init__(self, in_channels: int, growth_rate: int, num_layers: int, act: str = "gelu") -> None:
        super().__init__()
        layers = [DenseLayer(in_channels + i * growth_rate, growth_rate, act) for i in range(num_layers)]
        self.dense_layers = nn.Sequential(*layers)
        self.conv1x1 = conv(in_channels + num_layers * growth_rate, in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(self.dense_layers(x)) + x


# --------------------------------------------------------------------------------------------
# Frames: validation, padding to a multiple, cropping back
# --------------------------------------------------------------------------------------------


class ResidualBlockNoBN(nn.Module):
    """BasicSR's ``ResidualBlockNoBN`` (also SRN's ResBlock without normalisation):
    x + conv2(relu(conv1(x))), 3x3 convs with bias; keys ``conv1.*``, ``conv2.*``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv(channels, channels, 3)
        self.conv2 = conv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def check_frames(frames: torch.Tensor, subject: str = "frames") -> None:
    """Frames must be (N, T, 3, H, W) floating point (RGB in [0, 1])."""
    if not isinstance(frames, torch.Tensor):
        raise ShapeError(f"{subject}: got a {type(frames).__name__}. Expected a tensor (N, T, 3, H, W).")
    if frames.dim() != 5 or frames.shape[2] != 3:
        raise ShapeError(
            f"{subject}: shape {tuple(frames.shape)}. Expected (N, T, 3, H, W): RGB frames in [0, 1]."
        )
    if not frames.is_floating_point():
        raise ShapeError(f"{subject}: dtype {frames.dtype}. Expected floating-point RGB in [0, 1].")
    if frames.shape[1] < 1:
        raise ShapeError(f"{subject}: the clip is empty (T = 0). Expected at least one frame.")


def check_padded_frames(frames: torch.Tensor, family: str, multiple: int, min_size: int) -> None:
    """:func:`check_frames`, then H and W multiples of ``multiple`` and at least ``min_size``
    (what a model's forward takes; :func:`run_clip` pads to it)."""
    check_frames(frames, f"{family}: frames")
    h, w = frames.shape[-2], frames.shape[-1]
    if h % multiple or w % multiple or min(h, w) < min_size:
        raise ShapeError(
            f"{family}: frames are {h}x{w}. Expected multiples of {multiple}, at least "
            f"{min_size}x{min_size} (pad them: vdeblur.models.run_clip does)."
        )


def padded_size(size: int, multiple: int) -> int:
    """``size`` rounded up to a multiple of ``multiple``."""
    return -(-size // multiple) * multiple


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "replicate") -> torch.Tensor:
    """Pad the last two dimensions (H, W) at the bottom and right up to a multiple of ``multiple``.

    x: (..., H, W) with at least 3 dimensions. ``mode`` "replicate" (edge pixels repeated; works for
    any size) or "reflect". Returns x itself when nothing needs padding.
    """
    h, w = x.shape[-2], x.shape[-1]
    ph, pw = padded_size(h, multiple) - h, padded_size(w, multiple) - w
    if ph == 0 and pw == 0:
        return x
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    out = F.pad(flat, (0, pw, 0, ph), mode=mode)
    return out.reshape(*lead, *out.shape[-3:])


def crop_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The top-left (height, width) window of x (..., H, W): undoes :func:`pad_to_multiple`."""
    return x[..., :height, :width]


# --------------------------------------------------------------------------------------------
# Base class of the reference modules
# --------------------------------------------------------------------------------------------


class VideoModel(nn.Module):
    """Base of the PyTorch reference architectures.

    Class attributes every family sets: ``family`` (registry name), ``kind`` ("step" | "clip"),
    ``pad_multiple`` (frame sizes the architecture accepts), ``lookahead`` (future frames needed
    per output). Methods: :meth:`clip_forward` (the :func:`run_clip` semantics on frames whose size
    is already a multiple of ``pad_multiple``) and, for step models, :meth:`make_step`.
    """

    family: str = ""
    kind: str = "step"
    pad_multiple: int = 1
    lookahead: int = 0

    def clip_forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, T, 3, H, W) in [0, 1], H and W multiples of ``pad_multiple`` -> (N, T, 3, H, W)."""
        raise NotImplementedError

    def make_step(self) -> tuple[nn.Module, Any]:
        """The step module and its :class:`vdeblur.contract.interface.StepSpec` (step models only)."""
        raise NotImplementedError(f"{self.family}: not a step model")

    def checkpoint_drop(self) -> dict[str, str]:
        """Checkpoint keys (regular expressions) this family drops on purpose, with the reason."""
        return {}

    def config(self) -> dict[str, Any]:
        """The constructor keywords (named like the official ones) that rebuild this module."""
        return dict(getattr(self, "_config", {}))


def run_clip(model: nn.Module, frames: torch.Tensor, pad_mode: str = "replicate") -> torch.Tensor:
    """The reference result of the deployment path for a whole clip.

    frames: (N, T, 3, H, W) float RGB in [0, 1], any H and W. The frames are padded at the bottom
    and right to the model's ``pad_multiple`` (``pad_mode``: "replicate" by default), run through
    ``model.clip_forward`` in eval mode (the model's mode is restored afterwards) without gradients,
    and the outputs are cropped back. Returns (N, T, 3, H, W) in [0, 1], one output per input frame.
    """
    if not isinstance(model, VideoModel):
        raise UsageError(
            f"run_clip: got a {type(model).__name__}. Expected a model built by vdeblur.models.create()."
        )
    check_frames(frames)
    h, w = frames.shape[-2], frames.shape[-1]
    x = pad_to_multiple(frames.float(), model.pad_multiple, pad_mode)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.clip_forward(x)
    finally:
        model.train(training)
    return crop_to(out, h, w)


# --------------------------------------------------------------------------------------------
# Optical flow: SPyNet
# --------------------------------------------------------------------------------------------


class SPyNetBasicModule(nn.Module):
    """One SPyNet level: five 7x7 convs 8 -> 32 -> 64 -> 32 -> 16 -> 2 with ReLUs between them.

    (N, 8, H, W) = (reference, warped supporting frame, upsampled flow) -> flow residual (N, 2, H, W).
    Keys ``basic_module.{0,2,4,6,8}.*`` as BasicSR's ``spynet_arch.BasicModule``.
    """

    def __init__(self) -> None:
        super().__init__()
        widths = (8, 32, 64, 32, 16, 2)
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Conv2d(cin, cout, 7, padding=3))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SPyNet(nn.Module):
    """SPyNet (Ranjan & Black, CVPR 2017) as in BasicSR (``basicsr/archs/spynet_arch.py``): six levels,
    ImageNet normalisation, coarse to fine; keys ``basic_module.{level}.basic_module.{i}.*`` and the
    buffers ``mean``, ``std``, so BasicSR / BasicVSR SPyNet weights load as they are.

    :meth:`forward`: ref, supp (B, 3, H, W) RGB in [0, 1] -> flow (B, 2, H, W) in pixels (channel 0 = x,
    1 = y) such that ``flow_warp(supp, flow)`` approximates ``ref``. Export-safe for any H, W >= 1: the
    frames are replicate-padded at the bottom and right to a multiple of 32 inside the graph (BasicSR
    resizes them instead) and the flow is cropped back. Level 0 starts from a zero flow, where BasicSR's
    warp by the zero flow is the identity: it is skipped (the level is 1/32 of the size, down to 1x1,
    below the 2x2 that :func:`vdeblur.plugins.flow_warp` needs). Warps use "border" padding, as BasicSR.
    """

    levels = 6

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(SPyNetBasicModule() for _ in range(self.levels))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        h, w = ref.shape[-2], ref.shape[-1]
        multiple = 2 ** (self.levels - 1)
        pad = (0, (-w) % multiple, 0, (-h) % multiple)
        refs = [F.pad((ref - self.mean) / self.std, pad, mode="replicate")]
        supps = [F.pad((supp - self.mean) / self.std, pad, mode="replicate")]
        for _ in range(self.levels - 1):
            refs.insert(0, F.avg_pool2d(refs[0], 2, 2, count_include_pad=False))
            supps.insert(0, F.avg_pool2d(supps[0], 2, 2, count_include_pad=False))
        # Level 0: the zero initial flow as two zero channels (a Pad, whose dtype follows its input in
        # reduced-precision graphs).
        flow = self.basic_module[0](F.pad(torch.cat((refs[0], supps[0]), 1), (0, 0, 0, 0, 0, 2)))
        for level in range(1, self.levels):
            up = F.interpolate(flow, scale_factor=2.0, mode="bilinear", align_corners=True) * 2.0
            warped = flow_warp(supps[level], up, "border")
            flow = up + self.basic_module[level](torch.cat((refs[level], warped, up), 1))
        return flow[..., :h, :w]
