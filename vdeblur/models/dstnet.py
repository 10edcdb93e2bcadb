"""DSTNet: "Deep Discriminative Spatial and Temporal Network for Efficient Video Deblurring" (Pan et al., CVPR 2023).

Official code: xuboming8/DSTNet (basicsr/archs/deblur_arch.py ``Deblur``, deblurL_arch.py ``Deblur_L``,
ChanDynamic_GMLP.py ``CWGDN``, kpn_channel.py ``DynamicDWConv``, kpn_pixel.py ``IDynamicDWConv``,
wave_tf.py ``HaarDownsampling``, blocks.py ``ResBlock``, arch_util.py ``ResidualBlockNoBN``). This is our
own implementation of the same math with the official parameter names (misspellings included:
``kerner_conv_channel``, ``resblock_bcakward2d``), so released BasicSR checkpoints (``{'params': ...}``,
``{'params_ema': ...}``) load strictly.

Per clip (N, T, 3, H, W) in [0, 1], H and W multiples of 16: a per-frame 3x3 feature conv; a Haar
wavelet split to 1/2 and 1/4 resolution (``wave.haar_weights``: the fixed Haar filters, a parameter as in
the official state_dict); 1x1 grouped convs on the high bands; five CWGDN blocks on the 1/4 low band
(channel layer norm, a temporal-3 Conv3d, a channel-wise dynamic depthwise 3x3 conv whose kernels are
predicted per frame — ``vdeblur::DynamicDepthwise`` — gating, a temporal-3 Conv3d; zero temporal padding
at the clip ends); the inverse wavelet to 1/2 resolution; a backward then a forward recurrent
propagation over the clip at 1/2 resolution (gated fusion of frame and state, a per-pixel dynamic 3x3
filter whose kernels are predicted at 1/16 of the frame size and upsampled x8 — ``vdeblur::DynamicFilter``
— and ``num_block`` residual blocks); the inverse wavelet to full resolution; a 3x3 reconstruction conv
added to the input. ``dstnet_L`` (official ``Deblur_L``) runs the propagation 1.5x wider between two 1x1
convs ``up``/``down``.

Every output depends on the whole clip (bidirectional recurrence, temporal convs): DSTNet is a clip
model (``kind = "clip"``). The official test runs 30-frame clips without overlap; :meth:`DSTNet.make_clip`
gives the export-safe clip module and its :class:`~vdeblur.contract.interface.ClipSpec`. Both recurrences
are ``torch._higher_order_ops.scan`` (the backward one with ``reverse=True``), not Python loops over T, so
one exported graph (an ONNX ``Scan`` per direction) serves every clip length T, and H, W (multiples of 16).
In eager mode ``scan`` runs through ``torch.compile(fullgraph=True, backend="eager")``: the first call of
a model for a new class of input shapes pays a Dynamo trace of the step (measured: 2 to 4 s for
``dstnet``, 2 threads; a new T or size recompiles until Dynamo marks the dimension dynamic, a handful of
times per process); afterwards it runs as fast as a Python loop over the same step (measured within 2%, equal
outputs). Inside the step the dynamic ops go through the plugin entry points, which Dynamo must trace without
graph breaks (vdeblur.plugins registers its custom ops and resolves its references at import for that).

Outputs are clamped to [0, 1] (:meth:`DSTNet.clip_forward`; the official test clamps when it saves the
images); :meth:`DSTNet.forward` is the official forward (unclamped). Frame sizes must be multiples of 16
(the per-pixel kernels are predicted at 1/16); :func:`vdeblur.models.run_clip` pads with edge
replication and crops back (the official test sets are multiples of 16 and are not padded).

Cost per 1280x720 frame. The model runs 1280x736 (the next multiple of 16 in height); the numbers are
counted at 1280x736 (in brackets: scaled to 1280x720, every term is linear in the frame area).

================  ===========  ==============================================  =================
preset            params       GMACs per frame (convs + dynamic ops)           CPU, 2 threads
================  ===========  ==============================================  =================
dstnet (64, 15)   7.4508 M     689.6 (674.6) = 688.67 + 0.27 filter + 0.68 dw  0.27 s @128x128,
                                                                               1.1 s @256x256
dstnet_L (96,30)  38.0873 M    5973.3 (5843.4) = 5971.68 + 0.61 + 1.02         1.34 s @128x128,
                                                                               5.2 s @256x256
================  ===========  ==============================================  =================

Method: ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2) over one 1280x736 frame (T = 1;
every per-frame conv, the temporal-3 Conv3d taps included as they are at the inside of a clip, the 1x1
convs, the Haar conv/conv-transpose), with the two scans replaced by a Python loop over the same step
(FlopCounterMode cannot enter ``scan``); cross-checked by forward hooks on every conv (equal). The dynamic
ops run as elementwise code that FlopCounterMode does not count: added as k*k*C*H*W MACs per call
(per-pixel filter: 2 calls at 1/2 resolution; depthwise: 5 calls at 1/4 resolution). Not counted:
elementwise gates, layer norms, pooling, bilinear upsampling (well under 1%). Params include the fixed
Haar filters (1024 / 1536 values). The two propagations are 92% of dstnet's MACs (316.8 GMACs per
direction: 15 residual blocks per step at 64 channels, 1/2 resolution), 98% of dstnet_L's; the CWGDN
blocks 6.4% (44.1 GMACs). CPU latency: ``clip_forward`` of
10-frame clips (5 for dstnet_L at 256x256) after the first call, torch 2.13, 2 threads of a shared
2-core VM (noisy, +-15%); about 45 (dstnet) to 78 (dstnet_L) GMAC/s, so a 720p frame takes ~15 s
(dstnet) and ~75 s (dstnet_L) there. The paper's 7.45 M params for dstnet match; its 16.96 M for
DSTNet-L does not match the code (38.09 M), which is what released checkpoints fit.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch._higher_order_ops import scan

from vdeblur.errors import ShapeError, UsageError
from vdeblur.models.blocks import VideoModel, check_frames
from vdeblur.models.registry import Preset, register_family
from vdeblur.plugins import dynamic_depthwise, dynamic_filter

LRELU_SLOPE = 0.1  # every LeakyReLU of the official code

# --------------------------------------------------------------------------------------------
# Blocks: wavelet, CWGDN (channel-wise dynamic gated network)
# --------------------------------------------------------------------------------------------


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


def haar_filters(channels: int) -> torch.Tensor:
    """(4 * channels, 1, 2, 2): per channel the Haar filters LL, then the x, y and diagonal differences."""
    base = torch.tensor([[[1.0, 1.0], [1.0, 1.0]],
                         [[1.0, -1.0], [1.0, -1.0]],
                         [[1.0, 1.0], [-1.0, -1.0]],
                         [[1.0, -1.0], [-1.0, 1.0]]]).unsqueeze(1)
    return base.repeat(channels, 1, 1, 1)


class HaarWavelet(nn.Module):
    """The official ``HaarDownsampling``: an orthogonal 2x2 Haar transform per channel.

    :meth:`forward`: (B, C, H, W) -> (low (B, C, H/2, W/2), high (B, 3C, H/2, W/2)), sub-band major
    (channel k*C + c of the 4C bands is band k of channel c; the low band is the 2x2 mean).
    :meth:`inverse`: (B, 4C, H/2, W/2) in that order -> (B, C, H, W), the exact inverse. The filters
    are the parameter ``haar_weights`` (fixed, no gradient), as in the official state_dict.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.haar_weights = nn.Parameter(haar_filters(channels), requires_grad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.channels
        out = F.conv2d(x, self.haar_weights, stride=2, groups=c) / 4.0
        out = out.unflatten(1, (c, 4)).transpose(1, 2).flatten(1, 2)
        return out[:, :c], out[:, c:]

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        c = self.channels
        out = x.unflatten(1, (4, c)).transpose(1, 2).flatten(1, 2)
        return F.conv_transpose2d(out, self.haar_weights, stride=2, groups=c)


class _Affine(nn.Module):
    """Holds the per-channel ``weight`` and ``bias`` of :class:`ChannelLayerNorm` (official ``body``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))


class ChannelLayerNorm(nn.Module):
    """The official ``LayerNorm(dim, 'WithBias')``: per pixel over the channels (biased variance, eps
    1e-5), then a per-channel affine map. (B, C, H, W) -> (B, C, H, W). Keys ``body.weight``, ``body.bias``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = _Affine(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = x.var(1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + 1e-5) * self.body.weight[:, None, None] + self.body.bias[:, None, None]


class DynamicDepthwiseConv(nn.Module):
    """The official ``DynamicDWConv(channels, 3, 1, channels)``: a depthwise 3x3 conv whose kernels are
    predicted per sample from the sample itself (2x2 average pool, 3 depthwise 3x3 convs, 2x2 max pool, 3
    depthwise 3x3 convs, global average, 1x1 conv to C*9 taps), plus a learnt bias; zero padding.

    (B, C, H, W) -> (B, C, H, W); H and W multiples of 4. The conv is ``vdeblur::DynamicDepthwise``.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        k = kernel_size
        # Registration order = the official state_dict order.
        self.bias = nn.Parameter(torch.zeros(channels))
        self.tokernel = nn.Conv2d(channels, k * k * channels, 1)
        self.Block1 = nn.Sequential(*(nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels)
                                      for _ in range(3)))
        self.Block2 = nn.Sequential(*(nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels)
                                      for _ in range(3)))

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the per-sample kernels (B, C, k, k)."""
        y = self.Block2(F.max_pool2d(self.Block1(F.avg_pool2d(x, 2)), 2))
        w = self.tokernel(y.mean((2, 3), keepdim=True))
        return w.flatten(1).unflatten(1, (self.channels, self.kernel_size, self.kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dynamic_depthwise(x, self.kernels(x), self.bias)


class GatedFeedForward(nn.Module):
    """The official ``FeedForward(dim, 4, bias=False)`` of CWGDN, on (N, dim, T, H, W).

    A temporal-3 Conv3d (zero temporal padding) to 2 * hidden channels; one half through the per-frame
    dynamic depthwise conv, times the other half; a temporal-3 Conv3d back to ``dim``.
    """

    def __init__(self, dim: int, expansion: int = 4) -> None:
        super().__init__()
        hidden = dim * expansion
        self.project_in = nn.Conv3d(dim, hidden * 2, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.project_out = nn.Conv3d(hidden, dim, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.kerner_conv_channel = DynamicDepthwiseConv(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.project_in(x).chunk(2, dim=1)
        n, t = x1.shape[0], x1.shape[2]
        frames = x1.transpose(1, 2).flatten(0, 1)  # (N*T, hidden, H, W)
        x1 = self.kerner_conv_channel(frames).unflatten(0, (n, t)).transpose(1, 2)
        return self.project_out(x1 * x2)


class CWGDN(nn.Module):
    """The official ``CWGDN(dim, 4, False, 'WithBias')``: x + FFN(norm(x)) on (N, T, dim, H, W)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm2 = ChannelLayerNorm(dim)
        self.ffn = GatedFeedForward(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(x.flatten(0, 1)).unflatten(0, (x.shape[0], x.shape[1]))
        return self.ffn(y.transpose(1, 2)).transpose(1, 2) + x


# --------------------------------------------------------------------------------------------
# Blocks: the recurrent propagation
# --------------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """The official ``blocks.ResBlock(C, C, 3)``: x + conv2(lrelu(conv1(x))), 3x3 convs with bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(_lrelu(self.conv1(x))) + x


class ResidualBlockNoBN(ResBlock):
    """The official ``arch_util.ResidualBlockNoBN``: the same math as :class:`ResBlock`."""


class ResidualBlocks2D(nn.Module):
    """``num_block`` residual blocks; keys ``main.0.{i}.conv{1,2}.*`` as the official ``make_layer``."""

    def __init__(self, channels: int, num_block: int) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Sequential(*(ResidualBlockNoBN(channels) for _ in range(num_block))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class PixelDynamicConv(nn.Module):
    """The official ``IDynamicDWConv(C, 3, 1, 4, 1)``: a 3x3 filter per pixel and channel (G = C groups),
    predicted at 1/8 of the input size (4x4 average pool, 3 ResBlocks, 2x2 max pool, 3 ResBlocks, 1x1
    conv to 9 * C taps), upsampled x8 bilinearly (align_corners=False), no normalisation, zero padding.

    (B, C, H, W) -> (B, C, H, W); H and W multiples of 8. The filter is ``vdeblur::DynamicFilter``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, down: int = 4) -> None:
        super().__init__()
        self.channels, self.kernel_size, self.down = channels, kernel_size, down
        self.tokernel = nn.Conv2d(channels, kernel_size ** 2 * channels, 1)
        self.Block1 = nn.Sequential(*(ResBlock(channels) for _ in range(3)))
        self.Block2 = nn.Sequential(*(ResBlock(channels) for _ in range(3)))

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the per-pixel kernels (B, C, k, k, H, W)."""
        y = self.Block2(F.max_pool2d(self.Block1(F.avg_pool2d(x, self.down)), 2))
        w = F.interpolate(self.tokernel(y), scale_factor=float(2 * self.down), mode="bilinear", align_corners=False)
        return w.unflatten(1, (self.channels, self.kernel_size, self.kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dynamic_filter(x, self.kernels(x))


class Propagation(nn.Module):
    """One direction of the official ``manual_conv3d_propagation_{backward,forward}``.

    :meth:`step`: (state s (N, C, H, W), frame features x (N, C, H, W)) -> (s', s'): gated fusion of
    x and s, the per-pixel dynamic filter, ``num_block`` residual blocks. :meth:`forward` scans it
    over a sequence (T, N, C, H, W) from a zero state, backwards in time when ``reverse``; returns the
    states (T, N, C, H, W) in time order.
    """

    def __init__(self, channels: int, num_block: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = nn.Conv2d(channels * 2, channels * 2, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.kernel_conv_pixel = PixelDynamicConv(channels, 3, 4)
        self.resblock_bcakward2d = ResidualBlocks2D(channels, num_block)

    def step(self, s: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = torch.split(_lrelu(self.conv1(torch.cat((x, s), 1))), self.channels, dim=1)
        s = z1 * torch.sigmoid(self.conv2(z1)) + z2 * torch.sigmoid(self.conv3(z2))
        s = self.resblock_bcakward2d(self.kernel_conv_pixel(s))
        return s, s.clone()  # scan: the carry and the output must not alias

    def forward(self, seq: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        # Standard strides (even for size-1 dims), as the other direction's input: eager scan compiles its
        # body with Dynamo, which guards on strides; both directions then share one compiled body.
        seq = seq.clone(memory_format=torch.contiguous_format)
        init = seq.new_zeros(seq.shape[1:])
        _, states = scan(self.step, init, seq, reverse=reverse)
        return states


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class DSTNet(VideoModel):
    """DSTNet reference module (official ``Deblur``; :class:`DSTNetL` is ``Deblur_L``).

    :meth:`forward` is the official forward on a clip (unclamped); :meth:`clip_forward` the
    run_clip semantics (clamped); :meth:`make_clip` the export-safe clip module and its spec.
    """

    family = "dstnet"
    kind = "clip"
    pad_multiple = 16
    large = False  # Deblur_L: the propagation 1.5x wider between 1x1 convs ``up`` and ``down``

    def __init__(self, num_feat: int = 64, num_block: int = 15) -> None:
        super().__init__()
        for name, value, low in (("num_feat", num_feat, 1), ("num_block", num_block, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"{self.family}: {name}={value!r} is invalid. Expected an integer >= {low}.")
        if self.large and num_feat % 2:
            raise UsageError(f"{self.family}: num_feat={num_feat} is invalid. Expected an even integer "
                             "(the propagation runs at num_feat + num_feat // 2 channels).")
        self._config = {"num_feat": num_feat, "num_block": num_block}
        f = num_feat
        self.num_feat = f
        self.prop_channels = f + f // 2 if self.large else f

        # Registration order = the official state_dict order.
        self.feat_extractor = nn.Conv3d(3, f, (1, 3, 3), padding=(0, 1, 1))
        self.recons = nn.Conv3d(f, 3, (1, 3, 3), padding=(0, 1, 1))
        self.wave = HaarWavelet(f)
        self.x_wave_1_conv1 = nn.Conv2d(f * 3, f * 3, 1, groups=3)
        self.x_wave_1_conv2 = nn.Conv2d(f * 3, f * 3, 1, groups=3)
        self.x_wave_2_conv1 = nn.Conv2d(f * 3, f * 3, 1, groups=3)
        self.x_wave_2_conv2 = nn.Conv2d(f * 3, f * 3, 1, groups=3)
        self.transformer_scale4 = nn.Sequential(*(nn.Sequential(CWGDN(f)) for _ in range(5)))
        if self.large:
            self.up = nn.Conv2d(f, self.prop_channels, 1)
            self.down = nn.Conv2d(self.prop_channels, f, 1)
        self.forward_propagation = Propagation(self.prop_channels, num_block)
        self.backward_propagation = Propagation(self.prop_channels, num_block)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """The official forward: frames (N, T, 3, H, W), H and W multiples of 16 -> (N, T, 3, H, W),
        unclamped (input + predicted residual)."""
        self._check(frames)
        n, t = frames.shape[0], frames.shape[1]
        feat = self.feat_extractor(frames.transpose(1, 2)).transpose(1, 2).flatten(0, 1)  # (N*T, F, H, W)
        low1, high1 = self.wave(feat)
        high1 = self.x_wave_1_conv2(_lrelu(self.x_wave_1_conv1(high1)))
        low2, high2 = self.wave(low1)
        low2 = self.transformer_scale4(low2.unflatten(0, (n, t))).flatten(0, 1)
        high2 = self.x_wave_2_conv2(_lrelu(self.x_wave_2_conv1(high2)))
        low1 = self.wave.inverse(torch.cat((low2, high2), 1))  # (N*T, F, H/2, W/2)
        if self.large:
            low1 = self.up(low1)
        seq = low1.unflatten(0, (n, t)).transpose(0, 1)  # (T, N, C, H/2, W/2)
        seq = self.forward_propagation(self.backward_propagation(seq, reverse=True))
        low1 = seq.transpose(0, 1).flatten(0, 1)
        if self.large:
            low1 = self.down(low1)
        feat = self.wave.inverse(torch.cat((low1, high1), 1)).unflatten(0, (n, t))  # (N, T, F, H, W)
        return self.recons(feat.transpose(1, 2)).transpose(1, 2) + frames

    def clip_forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, T, 3, H, W) in [0, 1], H and W multiples of 16 -> (N, T, 3, H, W) clamped to [0, 1].

        Export-safe: no Python loop over T and no branch on tensor values (see the module docstring).
        """
        return torch.clamp(self(frames), 0.0, 1.0)

    def _check(self, frames: torch.Tensor) -> None:
        check_frames(frames, f"{self.family}: frames")
        h, w = frames.shape[-2], frames.shape[-1]
        if h % self.pad_multiple or w % self.pad_multiple:
            raise ShapeError(
                f"{self.family}: frames are {h}x{w}. Expected multiples of {self.pad_multiple} "
                "(pad them: vdeblur.models.run_clip does)."
            )

    def make_clip(self, window: int = 30, overlap: int = 8) -> tuple[nn.Module, Any]:
        """The export-safe clip module ``frames (N, T, 3, H, W) -> outputs (N, T, 3, H, W)`` (H, W
        multiples of 16, any T; the :meth:`clip_forward` code path) and its ClipSpec."""
        from vdeblur.contract.interface import ClipSpec

        spec = ClipSpec(family=self.family, config=self.config(), window=window, overlap=overlap,
                        pad_multiple=self.pad_multiple, latency=window - 1)
        spec.check()
        return DSTNetClip(self), spec


class DSTNetL(DSTNet):
    """The official ``Deblur_L``: :class:`DSTNet` with the propagation at 1.5x width (``up``/``down``)."""

    family = "dstnet_L"
    large = True


class DSTNetClip(nn.Module):
    """``frames (N, T, 3, H, W) -> outputs (N, T, 3, H, W)`` in [0, 1]: :meth:`DSTNet.clip_forward`."""

    def __init__(self, model: DSTNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.clip_forward(frames)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

# Released checkpoints (experiments/GOPRO.pth, GOPRO_Large.pth, BSD.pth, DVD.pth) are BasicSR files,
# {'params': state_dict}, with exactly our keys: nothing to drop (checkpoint_drop() stays empty) and
# ``wave.haar_weights`` is loaded like any other tensor. BasicSR saves 'params_ema' too when trained
# with EMA; DSTNet's training options set no ema_decay, and its test loads 'params'
# (base_model.load_network(param_key='params')). vdeblur.models.load_checkpoint prefers 'params_ema'
# when a file holds both: identical for these releases.

# --------------------------------------------------------------------------------------------
# Configs and presets
# --------------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {"num_feat": 64, "num_block": 15}
DEFAULTS_L: dict[str, Any] = {"num_feat": 96, "num_block": 30}


def _builder(cls: type[DSTNet], defaults: dict[str, Any]) -> Any:
    def build(**config: Any) -> DSTNet:
        unknown = sorted(set(config) - set(defaults))
        if unknown:
            raise UsageError(f"{cls.family}: unknown option(s) {', '.join(unknown)}. "
                             f"Expected: {', '.join(defaults)}.")
        return cls(**{**defaults, **config}).eval()

    build.__doc__ = f"The {cls.family} reference module (eval mode); keywords as the official constructor."
    return build


build = _builder(DSTNet, DEFAULTS)
build_L = _builder(DSTNetL, DEFAULTS_L)

PRESETS = [Preset("dstnet", "dstnet", {"num_feat": 64, "num_block": 15},
                  "DSTNet (official Deblur(64, 15)), 7.45 M params (CVPR 2023)")]
PRESETS_L = [Preset("dstnet_L", "dstnet_L", {"num_feat": 96, "num_block": 30},
                    "DSTNet-L (official Deblur_L(96, 30)), 38.09 M params")]

# The official reference (official_state_dicts.json) names Deblur_L's configuration family "dstnet_L"
# with the same keywords as Deblur: two families, so (family, config) always rebuilds the module.
register_family("dstnet", build, "clip", DEFAULTS, PRESETS)
register_family("dstnet_L", build_L, "clip", DEFAULTS_L, PRESETS_L)
