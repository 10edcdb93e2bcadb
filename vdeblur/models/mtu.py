"""MTU: "Real-Time Video Deblurring via Lightweight Motion Compensation" (Son et al., PG 2022).

Official code: codeslake/RealTime_VDBLR (models/archs/MTU.py ``Network`` with ``is_distill=None``,
models/utils.py ``FM`` and ``warp``, eval.py). This is our own implementation of the same math with
the official parameter names, so released checkpoints load strictly.

Per frame j the network sees the frames clip(j-2 .. j+2) (replicated at both ends), the previous
output clamped to [0, 1] (frame j itself when j == 0), and its own state from frame j-1: the motion
features of every stack that computes motion and the features of the last stack. A stack either
searches motion (correlation -> 5x5 average -> argmax between its motion features and the previous
frame's, at 1/4 resolution: ``vdeblur::CorrelationArgmax``) or reuses the flow of the last stack
that did (``skip_corr_index``); it then warps the previous frame's last-stack features by that
flow (``vdeblur::FlowWarp``). On the first frame the "previous" features are the current ones.

Frame sizes must be multiples of 4 (``pad_multiple``); :func:`vdeblur.models.run_clip` pads with
edge replication and crops back (the official evaluation instead crops the frames to a multiple
of 4: on such sizes both agree).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vdeblur.errors import ShapeError, UsageError
from vdeblur.models.blocks import VideoModel
from vdeblur.models.registry import Preset, register_family
from vdeblur.plugins import correlation_argmax, flow_warp

# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


def _conv_relu(cin: int, cout: int, k: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=padding), nn.ReLU())


def _deconv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.ReLU())


class HG(nn.Module):
    """One MTU stack (hourglass): encoder to 1/4 resolution, ``rb_num`` residual blocks, decoder.

    (N, ch_in, H, W) -> (N, ch_out, H, W), H and W multiples of 4; ch_out must equal ch.
    """

    def __init__(self, ch_in: int, ch_out: int, ch: int, rb_num: int) -> None:
        super().__init__()
        self.enc1 = _conv_relu(ch_in, ch, 5, 1, 2)
        self.enc2 = _conv_relu(ch, ch, 3, 2, 1)
        self.enc3 = _conv_relu(ch, ch * 2, 3, 2, 1)
        self.RBs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(ch * 2, ch * 2, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(ch * 2, ch * 2, 3, padding=1),
                nn.ReLU(),
            )
            for _ in range(rb_num)
        )
        self.RB_end = _conv_relu(ch * 2, ch * 2, 3, 1, 1)
        self.dec1 = _deconv_relu(ch * 2, ch)
        self.dec2 = _deconv_relu(ch, ch_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.enc1(x)
        f2 = self.enc2(f1)
        n0 = self.enc3(f2)
        n = n0
        for rb in self.RBs:
            n = n + rb(n)
        n = n0 + self.RB_end(n)
        return self.dec2(self.dec1(n) + f2) + f1


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class MTU(VideoModel):
    """MTU reference module (inference graph of the official ``Network``, is_distill=None).

    :meth:`forward` is one frame of the official evaluation loop with its state made explicit;
    :meth:`clip_forward` runs that loop over a clip; :meth:`make_step` gives the streaming step.
    """

    family = "mtu"
    kind = "step"
    pad_multiple = 4
    lookahead = 2
    window = 5

    def __init__(
        self,
        hg_num: int = 2,
        rb_num: int = 8,
        ch: int = 26,
        max_displacement: int = 10,
        skip_corr_index: list[int] | tuple[int, ...] = (1,),
    ) -> None:
        super().__init__()
        skip = sorted({int(i) for i in skip_corr_index})
        for name, value, low in (("hg_num", hg_num, 1), ("rb_num", rb_num, 0), ("ch", ch, 1),
                                 ("max_displacement", max_displacement, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"mtu: {name}={value!r} is invalid. Expected an integer >= {low}.")
        if any(i < 1 or i >= hg_num for i in skip):
            raise UsageError(
                f"mtu: skip_corr_index={list(skip_corr_index)} is invalid for hg_num={hg_num}. "
                f"Expected stack indices in 1..{hg_num - 1} (stack 0 always searches motion)."
            )
        self._config = {"hg_num": hg_num, "rb_num": rb_num, "ch": ch, "max_displacement": max_displacement,
                        "skip_corr_index": skip}
        self.hg_num, self.ch, self.max_displacement = hg_num, ch, max_displacement
        self.skip_corr_index = skip
        self.motion_stacks = [i for i in range(hg_num) if i not in skip]

        # Registration order = the official state_dict order.
        self.base_conv = _conv_relu(3, ch, 3, 1, 1)
        self.inp_prev_conv = _conv_relu(15, ch, 3, 1, 1)
        self.HGs = nn.ModuleList(HG(ch * 2, ch, ch, rb_num) for _ in range(hg_num))
        self.motion_layer = nn.ModuleList(_conv_relu(ch, ch * 2, 5, 4, 1) for _ in self.motion_stacks)
        self.out = nn.Conv2d(ch, 3, 3, padding=1)

    @property
    def motion_channels(self) -> int:
        """Channels of the motion-feature state: 2 * ch per motion-searching stack."""
        return 2 * self.ch * len(self.motion_stacks)

    def forward(
        self,
        window: torch.Tensor,
        r_prev: torch.Tensor,
        motion_prev: torch.Tensor,
        feat_prev: torch.Tensor,
        first: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One frame of the official evaluation loop.

        window: (N, 5, 3, H, W) frames j-2..j+2 in [0, 1] (H, W multiples of 4); r_prev: (N, 3, H, W)
        the previous output (ignored where ``first``); motion_prev: (N, motion_channels, H/4, W/4)
        the previous frame's motion features of the motion-searching stacks, concatenated;
        feat_prev: (N, ch, H, W) the previous frame's last-stack features; first: bool (N,) or
        (N, 1, 1, 1), true on the first frame of a stream (the "previous" inputs are then the
        current ones). Returns (output (N, 3, H, W) clamped to [0, 1], motion (N, motion_channels,
        H/4, W/4), feat (N, ch, H, W)): the output and the state for frame j+1.
        """
        if window.dim() != 5 or window.shape[1] != self.window or window.shape[2] != 3:
            raise ShapeError(f"mtu: window has shape {tuple(window.shape)}. Expected (N, 5, 3, H, W).")
        if window.shape[-2] % 4 or window.shape[-1] % 4:
            raise ShapeError(
                f"mtu: frames are {window.shape[-2]}x{window.shape[-1]}. Expected multiples of 4 "
                "(pad them: vdeblur.models.run_clip does)."
            )
        first = first.reshape(-1, 1, 1, 1).to(torch.bool)
        cur = window[:, 2]
        r_prev = torch.where(first, cur, r_prev)
        prev_stack = (window[:, 0], window[:, 1], r_prev, window[:, 3], window[:, 4])

        base = self.base_conv(cur)
        n = torch.cat((base, self.inp_prev_conv(torch.cat(prev_stack, 1))), 1)
        motion_prev_l = torch.split(motion_prev, 2 * self.ch, dim=1)
        motion_l: list[torch.Tensor] = []
        flow = n_ = cur  # rebound in the loop (stack 0 always searches motion)
        for i, hg in enumerate(self.HGs):
            n_ = hg(n)
            if i not in self.skip_corr_index:
                k = len(motion_l)
                pre_f = self.motion_layer[k](base + n_)
                pre_f_prev = torch.where(first, pre_f, motion_prev_l[k])
                motion_l.append(pre_f)
                flow = correlation_argmax(pre_f, pre_f_prev, self.max_displacement, 5)
                flow = F.interpolate(flow, scale_factor=4.0, mode="nearest") * 4.0
            post_f_prev = torch.where(first, n_, feat_prev)
            n = torch.cat((n_, flow_warp(post_f_prev, flow, "zeros")), 1)
        result = torch.clamp(cur + self.out(n_), 0.0, 1.0)
        return result, torch.cat(motion_l, 1), n_

    def initial_state(self, n: int, h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Zero (r_prev, motion, feat) for frames of (h, w): ignored on the first frame."""
        return (
            like.new_zeros(n, 3, h, w),
            like.new_zeros(n, self.motion_channels, h // 4, w // 4),
            like.new_zeros(n, self.ch, h, w),
        )

    def clip_forward(self, frames: torch.Tensor) -> torch.Tensor:
        """The official evaluation loop over a clip (run_clip semantics).

        frames: (N, T, 3, H, W) in [0, 1], H and W multiples of 4 -> (N, T, 3, H, W) in [0, 1].
        """
        n, t_len, _, h, w = frames.shape
        r_prev, motion, feat = self.initial_state(n, h, w, frames)
        outs = []
        for j in range(t_len):
            idx = [min(max(k, 0), t_len - 1) for k in range(j - 2, j + 3)]
            first = torch.full((n,), j == 0, dtype=torch.bool, device=frames.device)
            r_prev, motion, feat = self(frames[:, idx], r_prev, motion, feat, first)
            outs.append(r_prev)
        return torch.stack(outs, 1)

    def checkpoint_drop(self) -> dict[str, str]:
        return dict(CHECKPOINT_DROP)

    def make_step(self) -> tuple[nn.Module, Any]:
        from vdeblur.contract.interface import FlushSpec, StateSpec, StepSpec

        hist = self.window - 1
        states = [
            StateSpec("counter", "counter_next", ["N"], "int32", 0.0,
                      f"frames pushed so far, saturating at {self.lookahead + 1}"),
            StateSpec("frames", "frames_next", ["N", hist, 3, "Hp", "Wp"], "float32", 0.0,
                      f"the last {hist} input frames, oldest first (replicated from the first frame)"),
            StateSpec("r_prev", "r_prev_next", ["N", 3, "Hp", "Wp"], "float32", 0.0,
                      "the previous output, clamped to [0, 1]"),
            StateSpec("motion", "motion_next", ["N", self.motion_channels, "Hp/4", "Wp/4"], "float32", 0.0,
                      f"previous motion features of stacks {self.motion_stacks}, concatenated"),
            StateSpec("feat", "feat_next", ["N", self.ch, "Hp", "Wp"], "float32", 0.0,
                      "previous last-stack features"),
        ]
        spec = StepSpec(
            family=self.family, config=self.config(), lookahead=self.lookahead,
            pad_multiple=self.pad_multiple, states=states,
            flush=FlushSpec(steps=self.lookahead, frame="repeat_last", flag_input=None),
        )
        return MTUStep(self), spec


class MTUStep(nn.Module):
    """Streaming MTU: ``(frame_t, counter, frames, r_prev, motion, feat) -> (output_{t-2}, *state')``.

    frame: (N, 3, H, W) in [0, 1], H and W multiples of 4; counter: int32 (N,); frames:
    (N, 4, 3, H, W) inputs t-4..t-1; r_prev (N, 3, H, W); motion (N, motion_channels, H/4, W/4);
    feat (N, ch, H, W); all zeros at the start. At counter 0 the frame history is filled with the
    current frame (the official loop replicates the first frame); the network state is only updated
    from counter 2 on (the first real output, which is also the "first frame" of the official
    loop). Flush: feed the last frame twice more (replication at the end).
    """

    def __init__(self, model: MTU) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        frame: torch.Tensor,
        counter: torch.Tensor,
        frames: torch.Tensor,
        r_prev: torch.Tensor,
        motion: torch.Tensor,
        feat: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        lookahead = self.model.lookahead
        start = (counter == 0).reshape(-1, 1, 1, 1, 1)
        cur = frame.unsqueeze(1)
        window = torch.cat((torch.where(start, cur, frames), cur), 1)
        first = (counter == lookahead).reshape(-1, 1, 1, 1)
        valid = (counter >= lookahead).reshape(-1, 1, 1, 1)
        out, motion_new, feat_new = self.model(window, r_prev, motion, feat, first)
        return (
            out,
            torch.clamp(counter + 1, max=lookahead + 1),
            window[:, 1:],
            torch.where(valid, out, r_prev),
            torch.where(valid, motion_new, motion),
            torch.where(valid, feat_new, feat),
        )


# --------------------------------------------------------------------------------------------
# Checkpoint key mapping
# --------------------------------------------------------------------------------------------

# Released training checkpoints carry the auxiliary deblurring heads of the distillation stage;
# the inference graph has none: they are dropped, and reported as dropped.
CHECKPOINT_DROP = {r"^deblur_layer\.\d+\.(weight|bias)$": "training-only auxiliary head (is_distill=False)"}

# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    "hg_num": 2, "rb_num": 8, "ch": 26, "max_displacement": 10, "skip_corr_index": [1],
}


def build(**config: Any) -> MTU:
    """The MTU reference module (eval mode); keywords as the official config (hg_num, rb_num, ...)."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise UsageError(f"mtu: unknown option(s) {', '.join(unknown)}. Expected: {', '.join(DEFAULTS)}.")
    return MTU(**{**DEFAULTS, **config}).eval()


# --------------------------------------------------------------------------------------------
# Presets (the released configurations)
# --------------------------------------------------------------------------------------------


def _mtu(hg: int, rb: int, ch: int, skip: list[int]) -> dict[str, Any]:
    return {"hg_num": hg, "rb_num": rb, "ch": ch, "max_displacement": 10, "skip_corr_index": skip}


PRESETS = [
    Preset("mtu1", "mtu", _mtu(1, 8, 26, []), "MTU, 1 stack, 0.54 M params (PG 2022)"),
    Preset("mtu2", "mtu", _mtu(2, 8, 26, [1]), "MTU, 2 stacks, 1.04 M params: the 30 fps model"),
    Preset("mtu4", "mtu", _mtu(4, 8, 26, [1, 2, 3]), "MTU, 4 stacks, 2.04 M params"),
    Preset("mtu10", "mtu", _mtu(10, 8, 26, list(range(1, 10))), "MTU, 10 stacks, 5.03 M params"),
    Preset("mtu10_L", "mtu", _mtu(10, 6, 48, list(range(1, 10))), "MTU, 10 wide stacks, 13.80 M params"),
]

register_family("mtu", build, "step", DEFAULTS, PRESETS)
