"""ARVo: "Learning All-Range Volumetric Correspondence for Video Deblurring" (Li et al., CVPR 2021).

Built from the paper (sections 3.1-3.4, 4.1): there is no official code and there are no official
weights. This is our implementation and our parameter names; a checkpoint must come from training it.
Nothing here reproduces the paper's DVD 32.80 dB / HFR-DVD 31.15 dB.

One *stage* maps three frames (t-1, t, t+1) to a deblurred frame t, (B, 3, H, W) each, H and W
multiples of 16 (at least 16):

- alignment: a compact PWC-Net (:class:`PWCNet`) estimates the flow from frame t to each neighbour
  (a 4-level feature pyramid at 1/2..1/16, cost volumes ``vdeblur.plugins.correlation`` with max
  displacement d = 4 at 1/16, 1/8 and 1/4, coarse to fine), upsampled x4 to full resolution; the
  neighbours are backward-warped to frame t (``vdeblur.plugins.flow_warp``, border padding);
- encoder (:class:`Encoder`, shared by the three frames): a conv and 5 residual blocks at full
  resolution, a stride-2 conv and 5 at 1/2, a stride-2 conv and 5 at 1/4: C = ``num_feat`` channels
  at H/4 x W/4 (widths C/4, C/2, C);
- all-range volumetric correspondence: a pyramid of L = ``levels`` = 3 levels by max-pooling ONLY the
  neighbour features (level k pools by 2^k, k = 1..L, ceil mode: the level-1 volume is
  (H/4 W/4) x (H/8 W/8), as MODELS.md states); the correlation C_k = exp(<f_ref(x, y), pool_k(f_nbr)(u, v)>)
  over ALL pairs, normalised over (u, v) (a softmax, no scale factor), aggregates a transform of the
  pooled features: rho_k = C~_k phi_k(pool_k(f_nbr)) (phi_k: a 3x3 conv per level, shared by the three
  neighbours). That is ``vdeblur.plugins.volume_aggregate(f_ref, pool_k(f_nbr), phi_k(pool_k(f_nbr)))``:
  online softmax, the volume is never materialised. The rho_k are concatenated over the levels and over
  the neighbours {previous (warped), self (the reference itself), next (warped)}: 3 L C channels;
- reconstruction, SRN-style (Tao et al. 2018, :class:`SRNDecoder`): the bottleneck fuses the
  reference's encoder features with the aggregated ones (3x3 conv), then ResBlocks and a 4x4 stride-2
  deconv per scale with SRN's additive skips from the reference's encoder (the ARVo encoder is the SRN
  encoder), an output conv: frame t + the residual.

Two progressive stages share all weights (:meth:`ARVo.stage` twice): stage 2 takes the stage-1
outputs of t-1, t, t+1, so each output sees five input frames. At the ends of a clip the missing
input frames are the first / last frame replicated (frames clip(j-2 .. j+2, 0, T-1), as MTU's
evaluation), so stage 1 also runs once on each of the virtual frames -1 and T: the first (last) frame
three times (:meth:`ARVo.forward_clip`).

Streaming (:meth:`ARVo.make_step`, lookahead 2): the step of input frame s runs stage 1 for frame s-1
(frames s-2, s-1, s) once and caches its result as state, and stage 2 for frame s-2 (the cached
stage-1 results of s-3, s-2 and the new one); frame history and a counter are state tensors, the
start (history filled with the first frame) happens in the graph at counter 0. Flush: the last frame
is fed twice more (``repeat_last``, no flag input): that is exactly the end replication above.
:meth:`ARVo.clip_forward` (what :func:`vdeblur.models.run_clip` runs) streams this step frame by frame;
:meth:`ARVo.forward_clip` is the direct whole-clip definition; both agree (tests/models/test_arvo.py).

Chosen where the paper is silent (each is a constructor default or a line of code here):

- widths: num_feat C = 32 at 1/4 (16 at 1/2, 8 at full resolution: SRN's 1:2:4 ratio); phi_k keeps C
  channels; decoder 3 ResBlocks per scale (SRN's EBlock/DBlock depth) with 3x3 convs (SRN uses 5x5:
  2.8x the MACs); ResBlocks x + conv(relu(conv(x))) without normalisation (SRN's).
- PWC-Net: extractor widths f, 2f, 3f, 4f (f = ``flow_feat`` = 16) at 1/2..1/16, two 3x3 convs per level
  (the first stride 2), LeakyReLU 0.1; per estimation level a plain 4-conv estimator (4f, 3f, 2f, 2)
  over (reference features, cost volume / C with LeakyReLU, the upsampled flow); no DenseNet
  connections and no context network (the flow only aligns frames before the all-range correspondence,
  which searches everywhere anyway); bilinear x2 flow upsampling (align_corners=True, x2) between levels.
- reconstruction: one scale, not SRN's three-scale recurrence: the all-range correspondence lives at 1/4
  of the full-resolution frame; a coarse-to-fine SRN would run the encoder, the flow and every volume
  again per scale (about 1.3x the MACs: + 1/4 + 1/16 for the per-pixel layers, less for the volumes,
  which shrink with the square of the pixel count) for coarse inputs whose blur the full-resolution
  volumes already see, and would need its ConvLSTM state across scales. The single-scale SRN encoder-decoder keeps SRN's
  blocks and skips.
- stage outputs are not clamped between the stages (only the final output is clamped to [0, 1]).
- pad multiple 16 (the 1/16 flow level); the pyramid's 1/32 level uses ceil-mode pooling, so 1280x720
  and 1920x1080 run unpadded (720 = 45 x 16).

Export. The step graph holds both stages (stage 2 needs stage 1's result of the same step); per stage:
three ``vdeblur::Correlation`` and three ``vdeblur::FlowWarp`` (two on PWC-Net features, one on the
frames, the two neighbours batched) and one ``vdeblur::VolumeAggregate`` per level (the three neighbours
batched) in the ``trt`` lowering; in the portable one the correlation is MatMuls and the aggregation is
one ONNX ``Scan`` over key chunks (online softmax) per level, which fp16 graphs keep in float32 as a whole
(vdeblur/export/precision.py, rule 5), as they keep the plugin nodes of the ``trt`` graph. Export at an
example size of at least 64 rows and columns: at 32 the 1/32 pyramid level is one pixel and torch.export
specialises the size (exported at 64, the graph runs for every H, W multiple of 16 from 32 up).

Cost per 1280x720 frame (no padding; one output frame = one step = stage 1 once + stage 2 once):

==================  ================  ==============================================================
                    params            GMACs per output frame (2 stage runs)
==================  ================  ==============================================================
arvo (ours)         0.7986 M          603.1 = volume_aggregate 418.5 + encoder 99.9 + PWC-Net 51.7
                    (M: PWC 0.4678,   + decoder 32.0 + phi 1.0; per stage 301.6 (convs 91.9, the
                    encoder 0.1276,   three correspondences 209.2: level 1 159.3, 2 39.8, 3 10.2)
                    decoder 0.1756,
                    phi 0.0277)
paper               not published     not published
==================  ================  ==============================================================

Method: ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2) over :meth:`ARVo.stage` on one
1280x720 frame triple (on the meta device), times two. It sees the convolutions only; the custom ops are
counted by hand: volume_aggregate = (H/4 W/4) (h_k w_k) (C + Cv) per neighbour and level (logits, then
the weighted sum; C = Cv = 32; h_k w_k = 160x90, 80x45, 40x23 for k = 1, 2, 3), 3 neighbours: 209.2 per
stage; the PWC-Net correlations (81 displacements x C at 1/16, 1/8, 1/4, 2 flows): 0.45 per stage.
Not counted: the exps of the softmax (3 x 57600 x 18,920 = 3.3 G per stage), the bilinear warps,
pooling, elementwise ops. The all-range volume is 69% of the cost; its level 1 alone is 53%.
CPU: one stage at 1280x720 takes 23-25 s (so about 48 s per output frame) with 2.3 GiB peak memory, torch
2.13, 2 threads of a 2-core AMD EPYC VM with another job on the second core (random weights; the eager
volume_aggregate reference: 512-key chunks, never the whole volume).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vdeblur.errors import UsageError
from vdeblur.models.blocks import ResidualBlockNoBN, VideoModel, check_padded_frames, conv
from vdeblur.models.registry import Preset, register_family
from vdeblur.plugins import correlation, flow_warp

LRELU_SLOPE = 0.1

# --------------------------------------------------------------------------------------------
# Blocks: PWC-Net optical flow
# --------------------------------------------------------------------------------------------


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


def upsample_flow(flow: torch.Tensor, factor: int) -> torch.Tensor:
    """A flow field (B, 2, h, w) in pixels -> (B, 2, factor h, factor w), bilinear (align_corners=True),
    the displacements scaled by ``factor``."""
    return F.interpolate(flow, scale_factor=float(factor), mode="bilinear", align_corners=True) * float(factor)


class PWCEstimator(nn.Module):
    """One PWC-Net flow estimator: 3x3 convs cin -> 4f -> 3f -> 2f -> 2, LeakyReLU between them.
    Keys ``body.{0,2,4,6}.*``."""

    def __init__(self, cin: int, f: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(cin, 4 * f, 3), nn.LeakyReLU(LRELU_SLOPE), conv(4 * f, 3 * f, 3),
                                  nn.LeakyReLU(LRELU_SLOPE), conv(3 * f, 2 * f, 3), nn.LeakyReLU(LRELU_SLOPE),
                                  conv(2 * f, 2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PWCNet(nn.Module):
    """Compact PWC-Net (Sun et al., CVPR 2018): feature pyramid, warping, cost volume, coarse to fine.

    :meth:`forward`: ref, supp (B, 3, H, W) in [0, 1], H and W multiples of 16 -> flow (B, 2, H, W) in
    pixels (channel 0 = x, 1 = y) such that ``flow_warp(supp, flow)`` approximates ``ref``. The
    extractor (4 levels, 1/2..1/16, widths f..4f) is shared by both frames; flows are estimated at 1/16
    (from the cost volume alone), then 1/8 and 1/4 (the supporting features warped by the upsampled
    flow first), each level with its own estimator; the 1/4 flow is upsampled x4. Cost volumes:
    ``vdeblur.plugins.correlation`` with ``max_displacement`` (PWC-Net's d = 4), divided by the
    channels and LeakyReLU'd as PWC-Net. Keys ``extractor.{0-3}.{0,2}.*``, ``estimators.{0-2}.body.*``
    (estimators.0 at 1/16).
    """

    pyramid_levels = 4  # 1/2 .. 1/16
    flow_levels = 3  # estimation at 1/16, 1/8, 1/4

    def __init__(self, f: int = 16, max_displacement: int = 4) -> None:
        super().__init__()
        widths = [3, f, 2 * f, 3 * f, 4 * f]
        self.widths = widths[1:]
        self.max_displacement = max_displacement
        self.extractor = nn.ModuleList(
            nn.Sequential(conv(cin, cout, 3, stride=2), nn.LeakyReLU(LRELU_SLOPE), conv(cout, cout, 3),
                          nn.LeakyReLU(LRELU_SLOPE))
            for cin, cout in zip(widths[:-1], widths[1:], strict=True))
        k2 = (2 * max_displacement + 1) ** 2
        # estimators.0 at 1/16 (no flow input), .1 at 1/8, .2 at 1/4
        self.estimators = nn.ModuleList(
            PWCEstimator(self.widths[self.pyramid_levels - 1 - i] + k2 + (2 if i else 0), f)
            for i in range(self.flow_levels))

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> features at 1/2, 1/4, 1/8, 1/16."""
        feats = []
        for level in self.extractor:
            x = level(x)
            feats.append(x)
        return feats

    def cost(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        return _lrelu(correlation(f1, f2, self.max_displacement) / float(f1.shape[1]))

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        b = ref.shape[0]
        feats = self.pyramid(torch.cat((ref, supp)))
        flow = ref  # rebound at the first level
        for i in range(self.flow_levels):
            level = self.pyramid_levels - 1 - i
            f1, f2 = feats[level][:b], feats[level][b:]
            if i == 0:
                x = torch.cat((f1, self.cost(f1, f2)), 1)
                flow = self.estimators[0](x)
            else:
                flow = upsample_flow(flow, 2)
                warped = flow_warp(f2, flow, "border")
                flow = flow + self.estimators[i](torch.cat((f1, self.cost(f1, warped), flow), 1))
        return upsample_flow(flow, 4)


# --------------------------------------------------------------------------------------------
# Blocks: encoder, all-range correspondence, SRN-style reconstruction
# --------------------------------------------------------------------------------------------


def _blocks(channels: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlockNoBN(channels) for _ in range(n)))


class Encoder(nn.Module):
    """The ARVo encoder: (B, 3, H, W) -> features (e1 (B, c1, H, W), e2 (B, c2, H/2, W/2), e3 (B, C, H/4, W/4)).

    ``conv_first`` (3x3, ReLU) and ``num_block`` ResBlocks at full resolution, then per scale a 3x3
    stride-2 conv (ReLU) and ``num_block`` ResBlocks: 2 strided convs, 3 x num_block (= 15) residual
    blocks. Keys ``conv_first.*``, ``blocks1.{i}.conv{1,2}.*``, ``down2.*``, ``blocks2.*``, ``down3.*``,
    ``blocks3.*``.
    """

    def __init__(self, widths: tuple[int, int, int], num_block: int) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.conv_first = conv(3, c1, 3)
        self.blocks1 = _blocks(c1, num_block)
        self.down2 = conv(c1, c2, 3, stride=2)
        self.blocks2 = _blocks(c2, num_block)
        self.down3 = conv(c2, c3, 3, stride=2)
        self.blocks3 = _blocks(c3, num_block)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e1 = self.blocks1(F.relu(self.conv_first(x)))
        e2 = self.blocks2(F.relu(self.down2(e1)))
        e3 = self.blocks3(F.relu(self.down3(e2)))
        return e1, e2, e3


def neighbour_pyramid(f_nbr: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """The pyramid of the neighbour features only: level k = 1..levels max-pools (B, C, h, w) by 2^k
    (ceil mode: a partial window at the bottom / right edge is pooled over what it covers)."""
    return [F.max_pool2d(f_nbr, 2**k, 2**k, ceil_mode=True) for k in range(1, levels + 1)]


def aggregate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``vdeblur.plugins.volume_aggregate``: q (B, C, H, W), k (B, C, h, w), v (B, Cv, h, w) ->
    (B, Cv, H, W) = sum_{(u, v)} softmax_{(u, v)}(sum_c q k) v (all-range, online softmax)."""
    from vdeblur.plugins import volume_aggregate  # lazily: the registry imports this file to list it

    return volume_aggregate(q, k, v)


class VolumetricCorrespondence(nn.Module):
    """All-range volumetric correspondence of ``levels`` levels (paper section 3.2-3.3).

    :meth:`forward`: f_ref (B, C, h, w), f_nbrs (B, J, C, h, w) (the neighbours, in order) ->
    (B, J * levels * C, h, w): for neighbour j and level k (channel block j * levels + k - 1),
    rho_k = volume_aggregate(f_ref, pool_k(f_nbr_j), phi_k(pool_k(f_nbr_j))). One op call per level
    for all neighbours (batched). Keys ``phi.{k-1}.*`` (a 3x3 conv C -> C per level).
    """

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.levels = levels
        self.phi = nn.ModuleList(conv(channels, channels, 3) for _ in range(levels))

    def forward(self, f_ref: torch.Tensor, f_nbrs: torch.Tensor) -> torch.Tensor:
        b, j = f_nbrs.shape[0], f_nbrs.shape[1]
        q = f_ref.unsqueeze(1).expand(-1, j, -1, -1, -1).flatten(0, 1)  # (B J, C, h, w)
        rhos = [aggregate(q, pooled, phi(pooled))
                for phi, pooled in zip(self.phi, neighbour_pyramid(f_nbrs.flatten(0, 1), self.levels), strict=True)]
        out = torch.stack(rhos, 1)  # (B J, levels, C, h, w)
        return out.unflatten(0, (b, j)).flatten(1, 3)


class SRNDecoder(nn.Module):
    """SRN-style reconstruction (one scale): bottleneck fusion, then per scale ResBlocks and a 4x4
    stride-2 deconv with SRN's additive skip from the encoder, the output conv.

    (e1, e2, e3 of the reference, rho (B, cin_rho, H/4, W/4)) -> residual (B, 3, H, W). Keys ``fuse.*``,
    ``blocks3.*``, ``up3.*``, ``blocks2.*``, ``up2.*``, ``blocks1.*``, ``conv_last.*``.
    """

    def __init__(self, widths: tuple[int, int, int], cin_rho: int, num_block: int) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.fuse = conv(c3 + cin_rho, c3, 3)
        self.blocks3 = _blocks(c3, num_block)
        self.up3 = nn.ConvTranspose2d(c3, c2, 4, stride=2, padding=1)
        self.blocks2 = _blocks(c2, num_block)
        self.up2 = nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1)
        self.blocks1 = _blocks(c1, num_block)
        self.conv_last = conv(c1, 3, 3)

    def forward(self, e1: torch.Tensor, e2: torch.Tensor, e3: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        x = self.blocks3(F.relu(self.fuse(torch.cat((e3, rho), 1))))
        x = self.blocks2(F.relu(self.up3(x)) + e2)
        x = self.blocks1(F.relu(self.up2(x)) + e1)
        return self.conv_last(x)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class ARVo(VideoModel):
    """ARVo reference module (built from the paper; see the module docstring).

    :meth:`stage` is one stage (used twice, shared weights); :meth:`forward_clip` the direct whole-clip
    definition; :meth:`clip_forward` (run_clip) streams :meth:`make_step`'s step frame by frame.
    """

    family = "arvo"
    kind = "step"
    pad_multiple = 16
    lookahead = 2
    min_size = 16  # the 1/8 flow level must be at least 2x2 (bilinear warping)
    neighbours = ("previous", "self", "next")

    def __init__(self, num_feat: int = 32, num_enc_block: int = 5, num_dec_block: int = 3, levels: int = 3,
                 flow_feat: int = 16, max_displacement: int = 4) -> None:
        super().__init__()
        options = (("num_feat", num_feat, 4), ("num_enc_block", num_enc_block, 0),
                   ("num_dec_block", num_dec_block, 0), ("levels", levels, 1), ("flow_feat", flow_feat, 1),
                   ("max_displacement", max_displacement, 0))
        for name, value, low in options:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"{self.family}: {name}={value!r} is invalid. Expected an integer >= {low}.")
        if num_feat % 4:
            raise UsageError(f"{self.family}: num_feat={num_feat} is invalid. Expected a multiple of 4 "
                             "(the encoder's widths are num_feat/4, num_feat/2, num_feat).")
        self._config = {"num_feat": num_feat, "num_enc_block": num_enc_block, "num_dec_block": num_dec_block,
                        "levels": levels, "flow_feat": flow_feat, "max_displacement": max_displacement}
        widths = (num_feat // 4, num_feat // 2, num_feat)
        self.num_feat, self.levels = num_feat, levels
        self.flow = PWCNet(flow_feat, max_displacement)
        self.encoder = Encoder(widths, num_enc_block)
        self.correspondence = VolumetricCorrespondence(num_feat, levels)
        self.decoder = SRNDecoder(widths, len(self.neighbours) * levels * num_feat, num_dec_block)

    # -- one stage ---------------------------------------------------------------------------------

    def align(self, prev: torch.Tensor, cur: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """The neighbours warped to the reference: (B, 3, H, W) x 3 -> (2, B, 3, H, W) = (prev, next) warped
        by the PWC-Net flows from ``cur`` (one batched flow call)."""
        supp = torch.cat((prev, nxt))
        flows = self.flow(torch.cat((cur, cur)), supp)
        return flow_warp(supp, flows, "border").unflatten(0, (2, -1))

    def stage(self, prev: torch.Tensor, cur: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """One stage: frames t-1, t, t+1 (B, 3, H, W), H and W multiples of 16 -> frame t + residual
        (B, 3, H, W), unclamped."""
        warped = self.align(prev, cur, nxt)
        b = cur.shape[0]
        e1, e2, e3 = self.encoder(torch.cat((cur, warped[0], warped[1])))  # reference, prev, next
        f = e3.unflatten(0, (3, b))
        rho = self.correspondence(f[0], torch.stack((f[1], f[0], f[2]), 1))  # {previous, self, next}
        return cur + self.decoder(e1[:b], e2[:b], f[0], rho)

    # -- whole clips ------------------------------------------------------------------------------

    def forward_clip(self, frames: torch.Tensor) -> torch.Tensor:
        """The direct whole-clip definition: frames (N, T, 3, H, W) in [0, 1] (H, W multiples of 16, at
        least 16) -> (N, T, 3, H, W) clamped to [0, 1].

        ext = the clip with its first and last frame replicated twice at each end; stage 1 runs on every
        window of three of ext (frames -1 .. T); output j = stage 2 on the stage-1 results of j-1, j, j+1.
        So output j depends on frames clip(j-2 .. j+2, 0, T-1) only.
        """
        self._check(frames)
        t = frames.shape[1]
        ext = torch.cat((frames[:, :1], frames[:, :1], frames, frames[:, -1:], frames[:, -1:]), 1)
        s1 = [self.stage(ext[:, i], ext[:, i + 1], ext[:, i + 2]) for i in range(t + 2)]
        return torch.stack([torch.clamp(self.stage(s1[j], s1[j + 1], s1[j + 2]), 0.0, 1.0) for j in range(t)], 1)

    def clip_forward(self, frames: torch.Tensor) -> torch.Tensor:
        """run_clip semantics: the step module streamed over the clip frame by frame (initial states, T
        steps, 2 flush steps repeating the last frame, the first 2 outputs discarded). Equals
        :meth:`forward_clip`."""
        self._check(frames)
        step = ARVoStep(self)
        n, t, _, h, w = frames.shape
        states = [frames.new_zeros(n, dtype=torch.int32), frames.new_zeros(n, 2, 3, h, w),
                  frames.new_zeros(n, 2, 3, h, w)]
        outs = []
        for s in range(t + self.lookahead):
            out, *states = step(frames[:, min(s, t - 1)], *states)
            if s >= self.lookahead:
                outs.append(out)
        return torch.stack(outs, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """As :meth:`forward_clip`."""
        return self.forward_clip(frames)

    def _check(self, frames: torch.Tensor) -> None:
        check_padded_frames(frames, self.family, self.pad_multiple, self.min_size)

    # -- streaming --------------------------------------------------------------------------------

    def make_step(self) -> tuple[nn.Module, Any]:
        from vdeblur.contract.interface import FlushSpec, StateSpec, StepSpec

        states = [
            StateSpec("counter", "counter_next", ["N"], "int32", 0.0,
                      f"frames pushed so far, saturating at {self.lookahead + 1}"),
            StateSpec("frames", "frames_next", ["N", 2, 3, "Hp", "Wp"], "float32", 0.0,
                      "input frames s-2, s-1, oldest first (filled with the first frame at counter 0)"),
            StateSpec("stage1", "stage1_next", ["N", 2, 3, "Hp", "Wp"], "float32", 0.0,
                      "stage-1 results of frames s-3, s-2, oldest first (computed once per frame)"),
        ]
        spec = StepSpec(
            family=self.family, config=self.config(), lookahead=self.lookahead, pad_multiple=self.pad_multiple,
            states=states, flush=FlushSpec(steps=self.lookahead, frame="repeat_last", flag_input=None),
        )
        return ARVoStep(self), spec


class ARVoStep(nn.Module):
    """Streaming ARVo: ``(frame_s, counter, frames, stage1) -> (output_{s-2}, counter', frames', stage1')``.

    frame: (N, 3, H, W) in [0, 1], H and W multiples of 16; counter: int32 (N,); frames: (N, 2, 3, H, W)
    inputs s-2, s-1; stage1: (N, 2, 3, H, W) stage-1 results of frames s-3, s-2; all zeros at the start.
    At counter 0 the frame history is filled with the current frame (the first frame replicated).
    Runs stage 1 once (frame s-1, from frames s-2, s-1, s) and stage 2 once (frame s-2, from the stage-1
    results of s-3, s-2, s-1); the output is clamped to [0, 1]. The outputs of steps 0 and 1 are warm-up
    (stage 2 on the zero initial state). Flush: feed the last frame twice more.
    """

    def __init__(self, model: ARVo) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame: torch.Tensor, counter: torch.Tensor, frames: torch.Tensor,
                stage1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        start = (counter == 0).reshape(-1, 1, 1, 1, 1)
        cur = frame.unsqueeze(1)
        window = torch.cat((torch.where(start, cur, frames), cur), 1)  # frames s-2, s-1, s
        s1 = m.stage(window[:, 0], window[:, 1], window[:, 2]).unsqueeze(1)  # stage 1 of frame s-1
        hist = torch.cat((stage1, s1), 1)  # stage-1 results of s-3, s-2, s-1
        out = torch.clamp(m.stage(hist[:, 0], hist[:, 1], hist[:, 2]), 0.0, 1.0)  # stage 2 of frame s-2
        return out, torch.clamp(counter + 1, max=m.lookahead + 1), window[:, 1:], hist[:, 1:]


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

# No official code or weights exist: the format is ours. A checkpoint is a state_dict of this module,
# raw or under 'params' / 'params_ema' / 'state_dict' (BasicSR / Lightning style), with or without a
# DataParallel "module." prefix (vdeblur.models.load_checkpoint; loaded strictly, nothing dropped).
# Keys (one set: the two stages share them): flow.extractor.{0-3}.{0,2}.{weight,bias} (PWC-Net pyramid,
# 1/2..1/16), flow.estimators.{0-2}.body.{0,2,4,6}.* (at 1/16, 1/8, 1/4); encoder.conv_first.*,
# encoder.blocks{1,2,3}.{i}.conv{1,2}.*, encoder.down{2,3}.*; correspondence.phi.{k-1}.* (one per level);
# decoder.fuse.*, decoder.blocks{3,2,1}.{i}.conv{1,2}.*, decoder.up{3,2}.* (ConvTranspose2d),
# decoder.conv_last.*. No buffers.

# --------------------------------------------------------------------------------------------
# Configs and presets
# --------------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {"num_feat": 32, "num_enc_block": 5, "num_dec_block": 3, "levels": 3, "flow_feat": 16,
                            "max_displacement": 4}


def build(**config: Any) -> ARVo:
    """The arvo reference module (eval mode); keywords as :class:`ARVo`."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise UsageError(f"arvo: unknown option(s) {', '.join(unknown)}. Expected: {', '.join(DEFAULTS)}.")
    return ARVo(**{**DEFAULTS, **config}).eval()


PARAMS = 798_633  # parameters of the default configuration (the cost table of the module docstring)

PRESETS = [Preset("arvo", "arvo", dict(DEFAULTS),
                  "ARVo (Li et al., CVPR 2021), built from the paper (no official code or weights), 0.80 M params")]

register_family("arvo", build, "step", DEFAULTS, PRESETS)
