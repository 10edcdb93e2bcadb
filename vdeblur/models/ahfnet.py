"""AHFNet: "Adaptive High-Pass Kernel Prediction for Efficient Video Deblurring" (Ji & Yao).

Built from the paper (sections 3.3, 3.4, 4.1): there is no official code (the repository jibo27/AHFNet holds
only a README) and no official weights. This is our implementation and our parameter names; a checkpoint
must come from training it (the paper trains with a Charbonnier loss, Adam 2e-4 with cosine restarts,
10-frame 256x256 crops). Nothing here reproduces the paper's GoPro 33.25 dB / DVD 33.19 dB.

Per clip (N, T, 3, H, W) in [0, 1], H and W multiples of 4 (at least 8):

- H, adaptive high-frequency extraction: M = 4 fixed 3-D basis kernels (T_k x H_k x W_k = 3 x 3 x 3,
  :func:`high_pass_basis`): the normalised 3x3 Sobel x and y on frame t, the temporal differences
  [0, -1, 1] = x_{t+1} - x_t and [1, -1/2, -1/2] = x_{t-1} - x_t/2 - x_{t+1}/2. Each of N = 6 paths has a
  coefficient generator G that predicts M non-negative coefficients alpha_t per frame; the path's kernel
  k_t = sum_j alpha_tj k~_j and its 90-degree anticlockwise rotation give h = k_t * x and h' = rot(k_t) * x,
  and the path outputs |h| + |h'| (one channel).
- P, one per path plus an identity path (the RGB frame): one conv and two residual dense blocks, each
  followed by a stride-2 conv: 4 x path_feat channels at H/4 x W/4.
- R, per direction: one conv and ``num_block`` residual blocks without normalisation over the
  concatenated paths and the previous frame's state warped by SPyNet flow (``vdeblur.plugins.flow_warp``,
  zero padding); one pass backward and one forward over the clip (independent, as in BasicVSR), each from
  a zero state.
- U: BasicVSR's upsampling of the backward and forward states (1x1 fusion, two x2 pixel shuffles, a
  full-resolution conv, the output conv); y_t = x_t + U(r_b, r_f).

SPyNet (BasicSR's, :class:`vdeblur.models.blocks.SPyNet`) is part of the model: its weights come with
the checkpoint and its cost is counted. Outputs are clamped to [0, 1] in :meth:`AHFNet.clip_forward`
(:meth:`AHFNet.forward` is unclamped).

Chosen where the paper is silent (each is a constructor default or a line of code here):

- widths: R at num_feat = 64 with num_block = 30 residual blocks per direction (separate weights, as
  BasicVSR's trunks), P at path_feat = 8 (8 -> 16 -> 32 channels; dense growth 8 then 12, 3 layers per
  block, 5x5 convs as ESTRNN's ``RDB_DS``), G at gen_feat = 16; they land on the paper's size (table below).
- the Sobel kernels are divided by 8 (the gradient in units per pixel, the scale of the temporal ones);
  kernels are applied as cross-correlation to the mean of the RGB channels (one output channel per path),
  with replicate padding in space (so a constant video gives exactly h = 0, borders included).
- clip ends: frames t-1 and t+1 are replicated at the first and last frame, for the temporal kernels, for
  G and for the flows (the flow from an end frame to itself warps a zero state, so it changes nothing).
- G: the frames (t-1, t, t+1) as 9 channels at 1/4 resolution (4x4 means), two 3x3 stride-2 convs with
  LeakyReLU 0.1, a global average, a linear layer to M, softplus (non-negative for every input).
- flows: SPyNet runs on the 1/4-resolution frames (4x4 means), where R's features live (as BasicVSR++
  does for deblurring): the flow from frame t to t-1 warps the forward state, to t+1 the backward state.
  SPyNet pads its input to a multiple of 32 inside the graph (BasicSR resizes it instead).
- activations: LeakyReLU 0.1 in P, R's first conv and U; ReLU inside the residual blocks (BasicSR's
  ``ResidualBlockNoBN``).
- pad multiple 4 (the two stride-2 stages; SPyNet pads for itself): 1280x720 and 1920x1080 run unpadded.

Export. The per-frame dynamic kernel is lowered as a fixed-basis decomposition: by linearity
(sum_j alpha_j k~_j) * x = sum_j alpha_j (k~_j * x), so one ordinary conv with the 2M fixed kernels (the
basis and its rotation, a constant buffer) gives the basis responses once per frame, shared by every path,
and a per-frame matmul with the coefficients mixes them. No data-dependent Python, no per-sample weights
(a conv whose kernel is a tensor computed in the graph), no plugin: standard ONNX ops (Conv, MatMul) that
every backend, lowering and precision runs unchanged; it is also cheaper than filtering each path (0.4
GMACs per 720p frame for all of H). Both recurrences are ``torch._higher_order_ops.scan`` (backward with
``reverse=True``), as in DSTNet: one exported graph (one ONNX ``Scan`` per direction) serves every T and
every H, W (multiples of 4). The warps are ``vdeblur::FlowWarp`` in the ``trt`` lowering (7 per frame:
5 in SPyNet, 1 per direction), GridSample in the portable one. :meth:`AHFNet.make_clip` gives the clip
module and its :class:`~vdeblur.contract.interface.ClipSpec` (windows of 30 overlapping by 8 by default).

Cost per 1280x720 frame (720 is a multiple of 4: no padding; SPyNet runs 320x192 inside):

==================  =================  ================================================  ====================
                    params             GMACs per frame                                   CPU s/frame, 2 thr.
==================  =================  ================================================  ====================
ahfnet (ours)       6.7782 M (+0.4%)   444.0 (-3.7%) = R 273.9 (2 x 137.0) + U 78.5      14.4 @1280x720,
                    (SPyNet 1.4403 M)  + P 51.9 + SPyNet 39.3 (2 flows) + H 0.4          0.65 @256, 0.15 @128
paper               6.75 M             461                                               0.144 (its setup)
==================  =================  ================================================  ====================

Method: ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2) over ``forward`` on one 1280x720
frame (T = 1: every per-frame cost, two SPyNet flows per frame, both directions of R), with the two scans
replaced by a Python loop over the same step (FlopCounterMode cannot enter ``scan``). Counted: every conv
and the coefficient matmuls. Not counted: the bilinear warps (about 0.03 GMACs), pooling, elementwise ops,
pixel shuffle. CPU latency: :func:`vdeblur.models.run_clip` of 4-frame clips (3 at 1280x720) after the
first call (the scans' Dynamo trace), torch 2.13, 2 threads of an otherwise idle 2-core AMD EPYC VM (AVX2,
AVX-512 VNNI); one thread: 0.26 s at 128x128 and 1.0-1.1 s at 256x256. With another job on the second
core, two threads were 10x slower (OpenMP waits on the busy core): use one thread then. ONNX Runtime
figures: benchmarks/results/README.md.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch._higher_order_ops import scan

from vdeblur.errors import UsageError
from vdeblur.models.blocks import (
    ResidualBlockNoBN,
    ResidualDenseBlock,
    SPyNet,
    VideoModel,
    check_padded_frames,
    conv,
)
from vdeblur.models.registry import Preset, register_family
from vdeblur.plugins import flow_warp

LRELU_SLOPE = 0.1
NUM_BASIS = 4  # M: Sobel x, Sobel y, [0, -1, 1], [1, -1/2, -1/2]

# --------------------------------------------------------------------------------------------
# Blocks: adaptive high-frequency extraction H
# --------------------------------------------------------------------------------------------


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


def high_pass_basis() -> torch.Tensor:
    """The M = 4 fixed 3-D basis kernels, (4, T_k = 3, 3, 3) over (frames t-1, t, t+1; rows; columns).

    0: Sobel x / 8 on frame t; 1: Sobel y / 8 on frame t; 2: [0, -1, 1] = x_{t+1} - x_t at the centre
    pixel; 3: [1, -1/2, -1/2] = x_{t-1} - x_t / 2 - x_{t+1} / 2 at the centre pixel (Gram-Schmidt of
    [1, -1, 0] against kernel 2). Every kernel sums to zero (high-pass). Applied as cross-correlation
    (``conv2d``), the time axis as the input channels.
    """
    basis = torch.zeros(NUM_BASIS, 3, 3, 3)
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    basis[0, 1] = sobel_x
    basis[1, 1] = sobel_x.t()  # Sobel y: [[-1, -2, -1], [0, 0, 0], [1, 2, 1]] / 8
    basis[2, :, 1, 1] = torch.tensor([0.0, -1.0, 1.0])
    basis[3, :, 1, 1] = torch.tensor([1.0, -0.5, -0.5])
    return basis


def rotate90(kernels: torch.Tensor) -> torch.Tensor:
    """Kernels (..., k, k) rotated by 90 degrees anticlockwise in their spatial plane (``torch.rot90``,
    rows towards columns). Sobel x -> -Sobel y, Sobel y -> Sobel x; the temporal kernels are unchanged."""
    return torch.rot90(kernels, 1, dims=(-2, -1))


class CoefficientGenerator(nn.Module):
    """G of one path: the per-frame mixing coefficients alpha_t (M non-negative numbers).

    (B, 9, h, w) = frames (t-1, t, t+1) RGB at 1/4 resolution -> (B, M) >= 0: two 3x3 stride-2 convs
    with LeakyReLU, a global average, a linear layer, softplus. Keys ``body.{0,2}.*``, ``linear.*``.
    """

    def __init__(self, feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(9, feat, 3, stride=2), nn.LeakyReLU(LRELU_SLOPE),
                                  conv(feat, feat, 3, stride=2), nn.LeakyReLU(LRELU_SLOPE))
        self.linear = nn.Linear(feat, NUM_BASIS)

    def forward(self, low3: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.linear(self.body(low3).mean((2, 3))))


class HighFrequencyExtraction(nn.Module):
    """H: ``num_paths`` adaptive high-pass filters of the clip, one output channel each.

    Path n, frame t: k_t = sum_j alpha_tj k~_j (the basis of :func:`high_pass_basis`, alpha from the
    path's :class:`CoefficientGenerator`), h = k_t * x, h' = rot90(k_t) * x, output |h| + |h'|; x is the
    mean of the RGB channels of frames (t-1, t, t+1) (the clip's end frames replicated), replicate
    padding in space. Lowered as a fixed-basis decomposition (see the module docstring): one conv with
    the 2M fixed kernels, then the per-frame weighted sum.

    The basis is a non-persistent buffer (``basis``: the M kernels then their rotations, (2M, 3, 3, 3)):
    constants, not in checkpoints. Keys ``generators.{n}.*``.
    """

    def __init__(self, num_paths: int, gen_feat: int) -> None:
        super().__init__()
        basis = high_pass_basis()
        self.register_buffer("basis", torch.cat((basis, rotate90(basis))), persistent=False)
        self.generators = nn.ModuleList(CoefficientGenerator(gen_feat) for _ in range(num_paths))

    def coefficients(self, low3: torch.Tensor) -> torch.Tensor:
        """(B, 9, h, w) -> alpha (B, num_paths, M), non-negative."""
        return torch.stack([g(low3) for g in self.generators], 1)

    def responses(self, gray3: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) gray frames (t-1, t, t+1) -> (B, 2M, H, W): the basis, then the rotated basis."""
        return F.conv2d(F.pad(gray3, (1, 1, 1, 1), mode="replicate"), self.basis)

    def forward(self, gray3: torch.Tensor, low3: torch.Tensor) -> torch.Tensor:
        """gray3 (B, 3, H, W), low3 (B, 9, H/4, W/4) -> (B, num_paths, H, W) = |h| + |h'| per path."""
        alpha = self.coefficients(low3)  # (B, P, M)
        r = self.responses(gray3).flatten(2)  # (B, 2M, H*W)
        h = torch.matmul(alpha, r[:, :NUM_BASIS])
        h_rot = torch.matmul(alpha, r[:, NUM_BASIS:])
        out = h.abs() + h_rot.abs()  # (B, P, H*W)
        return out.unflatten(2, gray3.shape[-2:])


# --------------------------------------------------------------------------------------------
# Blocks: preprocessing P, recurrent module R
# --------------------------------------------------------------------------------------------


class RDBDown(nn.Module):
    """Residual dense block then a 5x5 stride-2 conv: (B, cin, H, W) -> (B, cout, H/2, W/2) (ESTRNN's
    ``RDB_DS``). Keys ``rdb.*``, ``down_sampling.*``."""

    def __init__(self, cin: int, growth: int, cout: int) -> None:
        super().__init__()
        self.rdb = ResidualDenseBlock(cin, growth, 3, "leakyrelu")
        self.down_sampling = conv(cin, cout, 5, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_sampling(self.rdb(x))


class PathEncoder(nn.Module):
    """P of one path: one 5x5 conv then two residual dense blocks, each followed by a stride-2 conv.

    (B, cin, H, W) -> (B, 4c, H/4, W/4): c channels at H, 2c at H/2 (growth c), 4c at H/4 (growth
    3c/2), 3 dense layers per block, LeakyReLU 0.1. Keys ``conv_first.*``, ``down1.*``, ``down2.*``.
    """

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.conv_first = conv(cin, c, 5)
        self.down1 = RDBDown(c, c, 2 * c)
        self.down2 = RDBDown(2 * c, 3 * c // 2, 4 * c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down2(self.down1(self.conv_first(x)))


class Propagation(nn.Module):
    """R in one direction: one 3x3 conv + LeakyReLU, then ``num_block`` residual blocks (BasicVSR's
    ``ConvResidualBlocks``; keys ``main.0.*``, ``main.2.{i}.conv{1,2}.*``).

    :meth:`step`: (state s (N, C, h, w), (features p (N, Cp, h, w), flow (N, 2, h, w))) -> (s', s'),
    s' = R(cat(p, flow_warp(s, flow))) (zero padding outside). :meth:`forward` scans it over
    sequences (T, N, ...) from a zero state, backwards in time when ``reverse``; returns the states
    (T, N, C, h, w) in time order.
    """

    def __init__(self, cin: int, channels: int, num_block: int) -> None:
        super().__init__()
        self.channels = channels
        self.main = nn.Sequential(nn.Conv2d(cin + channels, channels, 3, padding=1), nn.LeakyReLU(LRELU_SLOPE),
                                  nn.Sequential(*(ResidualBlockNoBN(channels) for _ in range(num_block))))

    def step(self, s: torch.Tensor, xs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        p, flow = xs
        s = self.main(torch.cat((p, flow_warp(s, flow, "zeros")), 1))
        return s, s.clone()  # scan: the carry and the output must not alias

    def forward(self, seq: torch.Tensor, flows: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        seq = seq.clone(memory_format=torch.contiguous_format)
        flows = flows.clone(memory_format=torch.contiguous_format)
        init = seq.new_zeros(seq.shape[1], self.channels, seq.shape[3], seq.shape[4])
        _, states = scan(self.step, init, (seq, flows), reverse=reverse)
        return states


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class AHFNet(VideoModel):
    """AHFNet reference module (built from the paper; see the module docstring).

    :meth:`forward` maps a clip to input + residual (unclamped); :meth:`clip_forward` is the run_clip
    semantics (clamped); :meth:`make_clip` the export-safe clip module and its spec.
    """

    family = "ahfnet"
    kind = "clip"
    pad_multiple = 4
    min_size = 8  # the 1/4-resolution features must be at least 2x2 (bilinear warping)

    def __init__(self, num_feat: int = 64, num_block: int = 30, num_paths: int = 6, path_feat: int = 8,
                 gen_feat: int = 16) -> None:
        super().__init__()
        options = (("num_feat", num_feat, 1), ("num_block", num_block, 0), ("num_paths", num_paths, 1),
                   ("path_feat", path_feat, 2), ("gen_feat", gen_feat, 1))
        for name, value, low in options:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"{self.family}: {name}={value!r} is invalid. Expected an integer >= {low}.")
        self._config = {"num_feat": num_feat, "num_block": num_block, "num_paths": num_paths,
                        "path_feat": path_feat, "gen_feat": gen_feat}
        f, c = num_feat, path_feat
        self.num_feat, self.num_paths = f, num_paths

        self.spynet = SPyNet()
        self.hfe = HighFrequencyExtraction(num_paths, gen_feat)
        # paths.0: the identity path (the RGB frame); paths.1..N: the high-frequency maps.
        self.paths = nn.ModuleList([PathEncoder(3, c), *(PathEncoder(1, c) for _ in range(num_paths))])
        cin = (num_paths + 1) * 4 * c
        self.backward_trunk = Propagation(cin, f, num_block)
        self.forward_trunk = Propagation(cin, f, num_block)
        # U (BasicVSR's): fusion 1x1, two x2 pixel-shuffle stages, a full-resolution conv, the output conv.
        self.fusion = nn.Conv2d(2 * f, f, 1)
        self.upconv1 = nn.Conv2d(f, 4 * f, 3, padding=1)
        self.upconv2 = nn.Conv2d(f, 4 * f, 3, padding=1)
        self.conv_hr = nn.Conv2d(f, f, 3, padding=1)
        self.conv_last = nn.Conv2d(f, 3, 3, padding=1)

    # -- the stages, each on frames flattened to (N*T, ...) --------------------------------------

    def neighbours(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (N, T, 3, H, W) -> (previous, next) frames of every frame, (N, T, 3, H, W) each, the
        first and the last frame replicated at the clip's ends."""
        ext = torch.cat((frames[:, :1], frames, frames[:, -1:]), 1)
        return ext[:, :-2], ext[:, 2:]

    def high_frequency(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (N, T, 3, H, W) -> (hf (N*T, num_paths, H, W), low (N*T, 3, 3, H/4, W/4)): the
        high-frequency maps and the frames (t-1, t, t+1) at 1/4 resolution (4x4 means)."""
        prev, nxt = self.neighbours(frames)
        three = torch.stack((prev, frames, nxt), 2).flatten(0, 1)  # (N*T, 3 frames, 3, H, W)
        low = F.avg_pool2d(three.flatten(1, 2), 4).unflatten(1, (3, 3))
        return self.hfe(three.mean(2), low.flatten(1, 2)), low

    def features(self, frames: torch.Tensor, hf: torch.Tensor) -> torch.Tensor:
        """P on every path: -> (N*T, (num_paths + 1) * 4 path_feat, H/4, W/4)."""
        x = frames.flatten(0, 1)
        return torch.cat([self.paths[0](x), *(p(hf[:, i:i + 1]) for i, p in enumerate(self.paths[1:]))], 1)

    def flows(self, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """low (N*T, 3, 3, h, w) -> (forward, backward) flows (N*T, 2, h, w): SPyNet from frame t to frame
        t-1 (warps the forward state) and to t+1 (the backward state), one batched call."""
        cur = low[:, 1]
        flows = self.spynet(torch.cat((cur, cur)), torch.cat((low[:, 0], low[:, 2]))).unflatten(0, (2, -1))
        return flows[0], flows[1]

    def upsample(self, back: torch.Tensor, fwd: torch.Tensor) -> torch.Tensor:
        """U: backward and forward states (B, C, h, w) -> the residual (B, 3, 4h, 4w)."""
        x = _lrelu(self.fusion(torch.cat((back, fwd), 1)))
        x = _lrelu(F.pixel_shuffle(self.upconv1(x), 2))
        x = _lrelu(F.pixel_shuffle(self.upconv2(x), 2))
        return self.conv_last(_lrelu(self.conv_hr(x)))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, T, 3, H, W), H and W multiples of 4 (>= 8) -> (N, T, 3, H, W), input + residual,
        unclamped."""
        self._check(frames)
        n, t = frames.shape[0], frames.shape[1]
        hf, low = self.high_frequency(frames)
        feats = self.features(frames, hf)
        flow_f, flow_b = self.flows(low)

        def seq(x: torch.Tensor) -> torch.Tensor:  # (N*T, ...) -> (T, N, ...)
            return x.unflatten(0, (n, t)).transpose(0, 1)

        back = self.backward_trunk(seq(feats), seq(flow_b), reverse=True)
        fwd = self.forward_trunk(seq(feats), seq(flow_f))
        flat = [s.transpose(0, 1).flatten(0, 1) for s in (back, fwd)]
        return self.upsample(*flat).unflatten(0, (n, t)) + frames

    def clip_forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, T, 3, H, W) in [0, 1], H and W multiples of 4 (>= 8) -> (N, T, 3, H, W) clamped
        to [0, 1]. Export-safe: no Python loop over T and no branch on tensor values."""
        return torch.clamp(self(frames), 0.0, 1.0)

    def _check(self, frames: torch.Tensor) -> None:
        check_padded_frames(frames, self.family, self.pad_multiple, self.min_size)

    def make_clip(self, window: int = 30, overlap: int = 8) -> tuple[nn.Module, Any]:
        """The export-safe clip module ``frames (N, T, 3, H, W) -> outputs (N, T, 3, H, W)`` (H, W
        multiples of 4, any T; the :meth:`clip_forward` code path) and its ClipSpec."""
        from vdeblur.contract.interface import ClipSpec

        spec = ClipSpec(family=self.family, config=self.config(), window=window, overlap=overlap,
                        pad_multiple=self.pad_multiple, latency=window - 1)
        spec.check()
        return AHFNetClip(self), spec


class AHFNetClip(nn.Module):
    """``frames (N, T, 3, H, W) -> outputs (N, T, 3, H, W)`` in [0, 1]: :meth:`AHFNet.clip_forward`."""

    def __init__(self, model: AHFNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.clip_forward(frames)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

# No official code or weights exist: the format is ours. A checkpoint is a state_dict of this module,
# raw or under 'params' / 'params_ema' / 'state_dict' (BasicSR / Lightning style), with or without a
# DataParallel "module." prefix (vdeblur.models.load_checkpoint; loaded strictly, nothing dropped).
# Keys: spynet.basic_module.{0-5}.basic_module.{0,2,4,6,8}.{weight,bias} and spynet.{mean,std} (BasicSR's
# SpyNet, so its pretrained weights transfer); hfe.generators.{n}.{body.0,body.2,linear}.*; paths.{0..N}
# .{conv_first, down1.rdb.dense_layers.{0-2}.conv, down1.rdb.conv1x1, down1.down_sampling, down2.*}.*
# (paths.0 = the identity path); {backward,forward}_trunk.main.0.* and .main.2.{i}.conv{1,2}.*;
# fusion, upconv1, upconv2, conv_hr, conv_last (BasicVSR's names). The fixed basis kernels (hfe.basis) are
# constants, not stored.

# --------------------------------------------------------------------------------------------
# Configs and presets
# --------------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {"num_feat": 64, "num_block": 30, "num_paths": 6, "path_feat": 8, "gen_feat": 16}


def build(**config: Any) -> AHFNet:
    """The ahfnet reference module (eval mode); keywords as :class:`AHFNet`."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise UsageError(f"ahfnet: unknown option(s) {', '.join(unknown)}. Expected: {', '.join(DEFAULTS)}.")
    return AHFNet(**{**DEFAULTS, **config}).eval()


PRESETS = [Preset("ahfnet", "ahfnet", dict(DEFAULTS),
                  "AHFNet (Ji & Yao), built from the paper (no official code or weights), 6.78 M params")]

register_family("ahfnet", build, "clip", DEFAULTS, PRESETS)
