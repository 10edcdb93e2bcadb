"""MMP-RNN: "Efficient Video Deblurring Guided by Motion Magnitude" (Wang et al., ECCV 2022).

Official code: sollynoay/MMP-RNN (MMP-RNN/MMP-RNN/model/MMPRNN.py ``Model``, ``RDBCell``,
``Reconstructor``, ``CAT``, ``MMAMLayer``; model/UNet.py the MMP-Net prior; train/test.py the
evaluation; data/utils.py ``normalize``). This is our own implementation of the same math with the
official parameter names, so released checkpoints load strictly.

Per frame t the recurrent cell maps (x_t, s_{t-1}, mid_{t-1}) to (h_t, s_t, mid_t) at 1/4
resolution (zero s and mid before the first frame); the motion-magnitude prior (a UNet, MMP-Net)
modulates the cell's first features. Output t = recons(fusion(h_{t-2} .. h_{t+2})) + skip(x_t)
(past_frames before, future_frames after), on inputs normalised as x - 0.5 (the official
``normalize(centralize=True, normalize=True)``), and + 0.5, clamped to [0, 1], on the way out.

Where the official evaluation gives frames P..T-F-1 of a clip (P = past_frames, F = future_frames),
ours gives every frame: the history of per-frame features h is replicated at both ends of the clip
(the recurrent cell is never re-run on repeated frames). Frame sizes must be multiples of 16 (the
prior downsamples by 16); :func:`vdeblur.models.run_clip` pads with edge replication and crops back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vdeblur.errors import CheckpointError, ShapeError, UsageError
from vdeblur.models.blocks import ResidualDenseBlock, VideoModel, activation, check_frames, conv
from vdeblur.models.registry import Preset, register_family

# --------------------------------------------------------------------------------------------
# Blocks: the MMP-Net prior (UNet)
# --------------------------------------------------------------------------------------------


class DoubleConv(nn.Module):
    """(conv 3x3 -> batch norm -> ReLU) x 2. Keys: ``double_conv.{0,1,3,4}.*``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """2x2 max pool then DoubleConv: (N, cin, H, W) -> (N, cout, H/2, W/2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Bilinear x2 upsampling (align_corners=True), concatenation after the skip, DoubleConv.

    x (N, c1, H/2, W/2), skip (N, c2, H, W) -> (N, cout, H, W). Sizes are exact here (frames are
    multiples of 16), so the official size-fixing pad is always empty and omitted.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = DoubleConv(cin, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return self.conv(torch.cat((skip, x), 1))


class OutConv(nn.Module):
    """1x1 conv to the prior's single channel. Key: ``conv.*``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MMPNet(nn.Module):
    """The motion-magnitude prior (official ``UNet``): (N, 3, H, W) normalised -> (N, 1, H, W) in (0, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv9x9 = nn.Conv2d(3, 16, 9, padding=4)
        self.inc = DoubleConv(16, 16)
        self.down1 = Down(16, 32)
        self.down2 = Down(32, 64)
        self.down3 = Down(64, 128)
        self.down4 = Down(128, 128)
        self.up1 = Up(256, 64)
        self.up2 = Up(128, 32)
        self.up3 = Up(64, 16)
        self.up4 = Up(32, 16)
        self.refine = ResidualDenseBlock(16, 8, 3, "gelu")
        self.outc = OutConv(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(self.conv9x9(x))
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.up1(self.down4(x4), x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return torch.sigmoid(self.outc(self.refine(x)))


# --------------------------------------------------------------------------------------------
# Blocks: cell, fusion, reconstructor
# --------------------------------------------------------------------------------------------


class MMAMLayer(nn.Module):
    """Motion-magnitude attention: x * (1 + conv(leaky_relu(conv(mmp), 0.1))).

    x (N, C, H, W), mmp (N, 1, H, W) -> (N, C, H, W).
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.MMAM_conv0 = nn.Conv2d(1, n_features // 2, 1)
        self.MMAM_conv1 = nn.Conv2d(n_features // 2, n_features, 1)

    def forward(self, x: torch.Tensor, mmp: torch.Tensor) -> torch.Tensor:
        return x * (self.MMAM_conv1(F.leaky_relu(self.MMAM_conv0(mmp), 0.1)) + 1)


class RDBDown(nn.Module):
    """Residual dense block then a 5x5 stride-2 conv: (N, cin, H, W) -> (N, cout, H/2, W/2)."""

    def __init__(self, cin: int, growth: int, cout: int, num_layers: int, act: str) -> None:
        super().__init__()
        self.rdb = ResidualDenseBlock(cin, growth, num_layers, act)
        self.down_sampling = conv(cin, cout, 5, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_sampling(self.rdb(x))


class RDNet(nn.Module):
    """Residual dense blocks, all outputs concatenated, 1x1 then 3x3 conv (no activation after them).

    (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, growth: int, num_layers: int, num_blocks: int, act: str) -> None:
        super().__init__()
        self.RDBs = nn.ModuleList(
            ResidualDenseBlock(channels, growth, num_layers, act) for _ in range(num_blocks)
        )
        self.conv1x1 = conv(num_blocks * channels, channels, 1)
        self.conv3x3 = conv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for rdb in self.RDBs:
            x = rdb(x)
            outs.append(x)
        return self.conv3x3(self.conv1x1(torch.cat(outs, 1)))


class RDBCell(nn.Module):
    """The recurrent cell: (x (N, 3, H, W) normalised, s (N, C, H/4, W/4), mid (N, 2C, H/4, W/4))
    -> (h (N, 5C, H/4, W/4), s', mid')."""

    def __init__(self, n_features: int, n_blocks: int, act: str) -> None:
        super().__init__()
        c = n_features
        self.F_B0 = conv(3, c, 5)
        self.MMAM1 = MMAMLayer(c)
        self.F_B1 = RDBDown(c, c, 2 * c, 3, act)
        self.F_B2 = RDBDown(2 * c, int(c * 3 / 2), 2 * c, 3, act)
        self.F_R = RDNet(5 * c, 2 * c, 3, n_blocks, act)
        self.F_h = nn.Sequential(conv(5 * c, c, 3), ResidualDenseBlock(c, c, 3, act), conv(c, c, 3))
        self.prior = MMPNet()

    def forward(
        self, x: torch.Tensor, s_last: torch.Tensor, mid_last: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.MMAM1(self.F_B0(x), self.prior(x))
        mid = self.F_B2(self.F_B1(out))
        h = self.F_R(torch.cat((mid, mid_last, s_last), 1))
        return h, self.F_h(h), mid


class ChannelAttention(nn.Module):
    """Official ``CALayer``; its parameters are in the checkpoints but the forward never uses it."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid(),
        )


class CAT(nn.Module):
    """Temporal fusion: 1x1 conv over the concatenated window (N, frames*5C, h, w) -> (N, 5C, h, w)."""

    def __init__(self, n_features: int, frames: int) -> None:
        super().__init__()
        self.fusion = conv(frames * 5 * n_features, 5 * n_features, 1)
        self.ca = ChannelAttention(frames * 5 * n_features)  # unused (as in the official forward)

    def forward(self, hs: torch.Tensor) -> torch.Tensor:
        return self.fusion(hs)


class Reconstructor(nn.Module):
    """(N, 5C, H/4, W/4) -> (N, 3, H, W): RDNet (GELU, as the official default) and two x2 deconvs."""

    def __init__(self, n_features: int, n_blocks: int) -> None:
        super().__init__()
        c = n_features
        self.D_Net = RDNet(5 * c, 2 * c, 3, n_blocks, "gelu")
        self.model = nn.Sequential(
            nn.ConvTranspose2d(5 * c, 2 * c, 3, stride=2, padding=1, output_padding=1),
            nn.ConvTranspose2d(2 * c, c, 3, stride=2, padding=1, output_padding=1),
            conv(c, 3, 5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.D_Net(x))


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class MMPRNN(VideoModel):
    """MMP-RNN reference module (official ``Model``).

    :meth:`cell_step` runs the recurrent cell on one frame, :meth:`decode` makes one output from a
    window of per-frame features, :meth:`forward` runs a whole clip (run_clip semantics),
    :meth:`make_step` gives the streaming step.
    """

    family = "mmprnn"
    kind = "step"
    pad_multiple = 16

    def __init__(
        self,
        n_features: int = 16,
        n_blocks_a: int = 7,
        n_blocks_b: int = 8,
        future_frames: int = 2,
        past_frames: int = 2,
        activation: str = "gelu",
        do_skip: bool = True,
        prior_checkpoint: str | Path | None = None,
    ) -> None:
        super().__init__()
        for name, value, low in (("n_features", n_features, 2), ("n_blocks_a", n_blocks_a, 1),
                                 ("n_blocks_b", n_blocks_b, 1), ("future_frames", future_frames, 1),
                                 ("past_frames", past_frames, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"mmprnn: {name}={value!r} is invalid. Expected an integer >= {low}.")
        _check_activation(activation)
        self._config = {"n_features": n_features, "n_blocks_a": n_blocks_a, "n_blocks_b": n_blocks_b,
                        "future_frames": future_frames, "past_frames": past_frames,
                        "activation": activation, "do_skip": bool(do_skip)}
        self.n_features, self.past_frames, self.future_frames = n_features, past_frames, future_frames
        self.lookahead = future_frames
        self.do_skip = bool(do_skip)

        # Registration order = the official state_dict order.
        self.cell = RDBCell(n_features, n_blocks_a, activation)
        self.recons = Reconstructor(n_features, n_blocks_b)
        self.fusion = CAT(n_features, past_frames + 1 + future_frames)
        if self.do_skip:
            self.skip = nn.Conv2d(3, 3, 9, padding=4)
        if prior_checkpoint is not None:
            load_prior(self, prior_checkpoint)

    @property
    def h_channels(self) -> int:
        """Channels of one frame's features h: 5 * n_features."""
        return 5 * self.n_features

    def cell_step(
        self, frame: torch.Tensor, s: torch.Tensor, mid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """frame (N, 3, H, W) in [0, 1] (H, W multiples of 16); s (N, C, H/4, W/4); mid (N, 2C, H/4, W/4)
        -> (h (N, 5C, H/4, W/4), s', mid')."""
        if frame.shape[-2] % 16 or frame.shape[-1] % 16:
            raise ShapeError(
                f"mmprnn: frames are {frame.shape[-2]}x{frame.shape[-1]}. Expected multiples of 16 "
                "(pad them: vdeblur.models.run_clip does)."
            )
        return self.cell(frame - 0.5, s, mid)

    def decode_normalized(self, hs: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """hs (N, (P+1+F)*5C, H/4, W/4): features of frames t-P..t+F concatenated; frame (N, 3, H, W)
        in [0, 1]: frame t. Returns output t (N, 3, H, W) normalised (- 0.5), unclamped: what the
        official ``Model.forward`` returns for that frame."""
        out = self.recons(self.fusion(hs))
        if self.do_skip:
            out = out + self.skip(frame - 0.5)
        return out

    def decode(self, hs: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """As :meth:`decode_normalized`, back to RGB: output t (N, 3, H, W) clamped to [0, 1]."""
        return torch.clamp(self.decode_normalized(hs, frame) + 0.5, 0.0, 1.0)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """A whole clip from zero states: (N, T, 3, H, W) in [0, 1] -> (N, T, 3, H, W) in [0, 1].

        Frames P..T-F-1 equal the official forward; at the ends the features h are replicated. Keeps
        only the P+F+1 feature maps a window needs (memory does not grow with T beyond the outputs).
        """
        check_frames(frames)
        n, t_len, _, h, w = frames.shape
        p, f = self.past_frames, self.future_frames
        s = frames.new_zeros(n, self.n_features, h // 4, w // 4)
        mid = frames.new_zeros(n, 2 * self.n_features, h // 4, w // 4)
        window: list[torch.Tensor] = []  # h_{t-P-F} .. h_t, the first frame's replicated at the start
        outs = []
        for t in range(t_len + f):
            if t < t_len:
                h_t, s, mid = self.cell_step(frames[:, t], s, mid)
            else:
                h_t = window[-1]  # past the end: replicate the last features, never re-run the cell
            window = ([h_t] * (p + f) if t == 0 else window[1:]) + [h_t]
            if t >= f:
                outs.append(self.decode(torch.cat(window, 1), frames[:, t - f]))
        return torch.stack(outs, 1)

    def clip_forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self(frames)

    def make_step(self) -> tuple[nn.Module, Any]:
        from vdeblur.contract.interface import FlushSpec, StateSpec, StepSpec

        c, hist, lookahead = self.n_features, self.past_frames + self.future_frames, self.lookahead
        states = [
            StateSpec("counter", "counter_next", ["N"], "int32", 0.0,
                      f"frames pushed so far, saturating at {lookahead + 1}"),
            StateSpec("frames", "frames_next", ["N", lookahead, 3, "Hp", "Wp"], "float32", 0.0,
                      f"the last {lookahead} input frames, oldest first (for the skip conv)"),
            StateSpec("s", "s_next", ["N", c, "Hp/4", "Wp/4"], "float32", 0.0, "recurrent state s"),
            StateSpec("mid", "mid_next", ["N", 2 * c, "Hp/4", "Wp/4"], "float32", 0.0, "recurrent state mid"),
            StateSpec("hist", "hist_next", ["N", hist * self.h_channels, "Hp/4", "Wp/4"], "float32", 0.0,
                      f"per-frame features h of the last {hist} frames, oldest first, concatenated"),
        ]
        spec = StepSpec(
            family=self.family, config=self.config(), lookahead=lookahead, pad_multiple=self.pad_multiple,
            states=states, flush=FlushSpec(steps=lookahead, frame="repeat_last", flag_input="flush"),
        )
        return MMPRNNStep(self), spec


class MMPRNNStep(nn.Module):
    """Streaming MMP-RNN: ``(frame_t, flush, counter, frames, s, mid, hist) -> (output_{t-F}, *state')``.

    frame: (N, 3, H, W) in [0, 1], H and W multiples of 16; flush: int32 (N,), 1 on the F flush
    steps after the last frame (the frame input is then ignored and the last features h are
    replicated instead of running the cell), else 0; counter: int32 (N,); frames: (N, F, 3, H, W)
    inputs t-F..t-1 (for the skip conv; carried even without do_skip, so the signature is fixed);
    s, mid, hist: see :meth:`MMPRNN.make_step`. All zeros at the start; at counter 0 the histories
    are filled with the current frame and its features.
    """

    def __init__(self, model: MMPRNN) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        frame: torch.Tensor,
        flush: torch.Tensor,
        counter: torch.Tensor,
        frames: torch.Tensor,
        s: torch.Tensor,
        mid: torch.Tensor,
        hist: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        m = self.model
        flushing = (flush != 0).reshape(-1, 1, 1, 1)
        start = (counter == 0).reshape(-1, 1, 1, 1)
        h_new, s_new, mid_new = m.cell_step(frame, s, mid)
        h_t = torch.where(flushing, hist[:, -m.h_channels :], h_new)
        hist = torch.where(start, h_t.repeat(1, m.past_frames + m.future_frames, 1, 1), hist)
        window = torch.cat((hist, h_t), 1)
        cur = frame.unsqueeze(1)
        frames = torch.cat((torch.where(start.unsqueeze(1), cur, frames), cur), 1)
        return (
            m.decode(window, frames[:, 0]),
            torch.clamp(counter + 1, max=m.lookahead + 1),
            frames[:, 1:],
            torch.where(flushing, s, s_new),
            torch.where(flushing, mid, mid_new),
            window[:, m.h_channels :],
        )


def _check_activation(name: str) -> None:
    activation(name)  # raises UsageError on unknown names


# --------------------------------------------------------------------------------------------
# Checkpoint key mapping
# --------------------------------------------------------------------------------------------

# Released checkpoints ({'state_dict': {...}, 'optimizer', 'scheduler', 'epoch', ...}) hold every key of
# the model, the prior included (cell.prior.*): nothing is dropped. Their keys carry DataParallel's
# "module." and, since train/dp.py saves DataParallel(ESTRNN-style Wrapper) whose network is
# ``self.model``, most likely "module.model."; load_checkpoint strips both. The separate MMP-Net checkpoint
# that the official RDBCell loads from a hard-coded path is ``prior_checkpoint`` here.


def load_prior(model: MMPRNN, path: str | Path) -> None:
    """Load an MMP-Net checkpoint ({'state_dict': UNet state_dict}, raw or 'module.'-prefixed)
    strictly into ``model.cell.prior``."""
    from vdeblur.models.checkpoints import read_state_dict

    state, _ = read_state_dict(path, model.cell.prior.state_dict().keys())
    try:
        model.cell.prior.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: does not fit the MMP-Net prior ({str(e).splitlines()[0]}). "
            "Expected the MMP-Net checkpoint {'state_dict': UNet state_dict} of sollynoay/MMP-RNN."
        ) from None


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {"n_features": 16, "n_blocks_a": 7, "n_blocks_b": 8, "future_frames": 2,
                            "past_frames": 2, "activation": "gelu", "do_skip": True}


def build(**config: Any) -> MMPRNN:
    """The MMP-RNN reference module; keywords as the official parameters (+ ``prior_checkpoint``).

    Returned in eval mode: the prior's batch norms use their running statistics.
    """
    known = {*DEFAULTS, "prior_checkpoint"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise UsageError(
            f"mmprnn: unknown option(s) {', '.join(unknown)}. Expected: {', '.join(sorted(known))}."
        )
    return MMPRNN(**{**DEFAULTS, **config}).eval()


# --------------------------------------------------------------------------------------------
# Presets (the released configurations)
# --------------------------------------------------------------------------------------------


def _mmprnn(a: int, b: int, c: int) -> dict[str, Any]:
    return {"n_features": c, "n_blocks_a": a, "n_blocks_b": b, "future_frames": 2, "past_frames": 2,
            "activation": "gelu", "do_skip": True}


PRESETS = [
    Preset("mmprnn_a3b4c16", "mmprnn", _mmprnn(3, 4, 16), "MMP-RNN A3B4C16, 1.97 M params (ECCV 2022)"),
    Preset("mmprnn_a7b8c16", "mmprnn", _mmprnn(7, 8, 16), "MMP-RNN A7B8C16, 3.05 M params"),
    Preset("mmprnn_a9b10c18", "mmprnn", _mmprnn(9, 10, 18), "MMP-RNN A9B10C18, 4.05 M params"),
]

register_family("mmprnn", build, "step", DEFAULTS, PRESETS)
