"""AHFNet, built from its paper: the facts of sections 3.3 / 3.4 (high-pass basis, 90-degree rotations,
non-negative coefficients, high-pass mixes), the bidirectional recurrence against an unrolled Python
loop, checkpoints, the preset's size and the input checks.

No official code or weights exist: the weights are seeded (tests/models/seeded.py); SPyNet's ImageNet
normalisation buffers are kept as built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.models.seeded import moving_texture, seeded_state_dict
from vdeblur.errors import CheckpointError, ShapeError, UsageError
from vdeblur.models import create, load_checkpoint, run_clip
from vdeblur.models.ahfnet import NUM_BASIS, AHFNet, high_pass_basis, rotate90
from vdeblur.plugins import flow_warp

TINY = {"num_feat": 8, "num_block": 2, "num_paths": 2, "path_feat": 2, "gen_feat": 4}
SHAPE = (2, 5, 32, 48)  # N, T, H, W of most clips here (one shape: the eager scans compile once)


def seeded_ahfnet(config: dict[str, Any], seed: int) -> AHFNet:
    model = create("ahfnet", **config).eval()
    template = model.state_dict()
    state = seeded_state_dict(template, seed)
    state["spynet.mean"], state["spynet.std"] = template["spynet.mean"], template["spynet.std"]
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def tiny() -> AHFNet:
    return seeded_ahfnet(TINY, 0)


# --------------------------------------------------------------------------------------------
# The paper's facts: adaptive high-frequency extraction
# --------------------------------------------------------------------------------------------


def test_the_basis_is_sobel_and_the_temporal_differences_and_is_high_pass() -> None:
    basis = high_pass_basis()
    assert basis.shape == (NUM_BASIS, 3, 3, 3)  # M = 4 kernels, T_k x H_k x W_k = 3 x 3 x 3
    sobel_x = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
    assert torch.equal(basis[0, 1], sobel_x) and torch.equal(basis[1, 1], sobel_x.t())
    assert basis[:2, [0, 2]].abs().sum() == 0  # the Sobel pair acts on frame t only
    centre = torch.zeros(3, 3, dtype=torch.bool)
    centre[1, 1] = True
    assert basis[2:, :, ~centre].abs().sum() == 0  # the temporal pair acts on the centre pixel only
    assert basis[2, :, 1, 1].tolist() == [0.0, -1.0, 1.0] and basis[3, :, 1, 1].tolist() == [1.0, -0.5, -0.5]
    assert torch.dot(basis[2, :, 1, 1], basis[3, :, 1, 1]) == 0  # Gram-Schmidt of [1, -1, 0] against kernel 2
    assert torch.equal(basis.sum((1, 2, 3)), torch.zeros(NUM_BASIS))  # high-pass: each sums to zero
    assert torch.equal(rotate90(basis).sum((1, 2, 3)), torch.zeros(NUM_BASIS))


def test_rotations_are_90_degrees_anticlockwise(tiny: AHFNet) -> None:
    basis = high_pass_basis()
    rotated = rotate90(basis)
    assert torch.equal(rotated, torch.rot90(basis, 1, dims=(-2, -1)))
    assert torch.equal(tiny.hfe.basis, torch.cat((basis, rotated)))  # what the model applies
    assert torch.equal(rotated[0], -basis[1]) and torch.equal(rotated[1], basis[0])  # Sobel x -> -Sobel y -> ...
    assert torch.equal(rotated[2:], basis[2:])  # the temporal kernels have no spatial extent
    assert torch.equal(rotate90(rotate90(rotated)), torch.rot90(basis, 3, dims=(-2, -1)))
    assert torch.equal(rotate90(rotate90(rotate90(rotated))), basis)  # four quarter turns
    # filtering the rotated image with the rotated kernel is the rotated filtered image
    x = torch.rand(1, 3, 12, 12)
    direct = F.conv2d(x, basis[:2])
    turned = F.conv2d(torch.rot90(x, 1, dims=(-2, -1)), rotated[:2])
    assert torch.allclose(turned, torch.rot90(direct, 1, dims=(-2, -1)), atol=1e-6)


def test_coefficients_are_non_negative_even_for_adversarial_inputs(tiny: AHFNet) -> None:
    gen = torch.Generator().manual_seed(1)
    hfe = tiny.hfe
    for scale in (1.0, 1e3, -1e3, 1e6):
        alpha = hfe.coefficients(scale * torch.randn(4, 9, 8, 12, generator=gen))
        assert alpha.shape == (4, 2, NUM_BASIS) and bool((alpha >= 0).all())
    # inputs optimised to drive every coefficient down
    x = torch.randn(2, 9, 8, 12, generator=gen, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        logits = torch.stack([g.linear(g.body(x).mean((2, 3))) for g in hfe.generators])
        logits.sum().backward()
        opt.step()
    with torch.no_grad():
        logits = torch.stack([g.linear(g.body(x).mean((2, 3))) for g in hfe.generators])
        assert logits.min() < -20  # the pre-activations went far negative...
        assert bool((hfe.coefficients(x) >= 0).all())  # ...the coefficients did not


def test_any_non_negative_mix_stays_high_pass(tiny: AHFNet) -> None:
    gen = torch.Generator().manual_seed(2)
    basis = high_pass_basis()
    for _ in range(20):
        alpha = torch.rand(NUM_BASIS, generator=gen) * 10 ** torch.randint(-3, 4, (NUM_BASIS,), generator=gen)
        kernel = (alpha[:, None, None, None] * basis).sum(0)
        assert abs(float(kernel.sum())) < 1e-5 * float(alpha.sum())
        assert abs(float(rotate90(kernel).sum())) < 1e-5 * float(alpha.sum())
    # so a constant video has no high frequencies, up to its borders (replicate padding)
    for value in (0.0, 0.37, 1.0):
        with torch.no_grad():
            hf, _ = tiny.high_frequency(torch.full((1, 3, 3, 16, 24), value))
        assert hf.shape == (3, 2, 16, 24) and hf.abs().max() < 1e-6
    # and a video that changes keeps some
    with torch.no_grad():
        hf, _ = tiny.high_frequency(moving_texture(1, 3, 16, 24, seed=3))
    assert hf.abs().mean() > 1e-3


def test_the_fixed_basis_decomposition_is_the_per_frame_dynamic_kernel(tiny: AHFNet) -> None:
    """|k_t * x| + |rot90(k_t) * x| with k_t = sum_j alpha_tj k~_j built explicitly, per frame and path."""
    frames = moving_texture(1, 4, 16, 24, seed=4)
    with torch.no_grad():
        hf, low = tiny.high_frequency(frames)
        alpha = tiny.hfe.coefficients(low.flatten(1, 2))  # (T, P, M)
    ext = torch.cat((frames[:, :1], frames, frames[:, -1:]), 1)[0].mean(1)  # gray, ends replicated
    basis = high_pass_basis()
    for t in range(4):
        window = F.pad(ext[t:t + 3][None], (1, 1, 1, 1), mode="replicate")  # frames t-1, t, t+1
        for p in range(2):
            kernel = (alpha[t, p][:, None, None, None] * basis).sum(0, keepdim=True)
            want = F.conv2d(window, kernel).abs() + F.conv2d(window, rotate90(kernel)).abs()
            assert (hf[t, p] - want[0, 0]).abs().max() < 1e-6


# --------------------------------------------------------------------------------------------
# The bidirectional recurrence
# --------------------------------------------------------------------------------------------


def unrolled(model: AHFNet, frames: torch.Tensor) -> torch.Tensor:
    """The forward/backward recurrence as plain Python loops over the frames (zero initial states)."""
    n, t, _, h, w = frames.shape
    hf, low = model.high_frequency(frames)
    feats = model.features(frames, hf).unflatten(0, (n, t))
    flow_f, flow_b = (f.unflatten(0, (n, t)) for f in model.flows(low))
    zeros = feats.new_zeros(n, model.num_feat, h // 4, w // 4)
    back: list[torch.Tensor] = [zeros] * t
    s = zeros
    for i in reversed(range(t)):  # state of frame i+1, warped to frame i
        s = model.backward_trunk.main(torch.cat((feats[:, i], flow_warp(s, flow_b[:, i], "zeros")), 1))
        back[i] = s
    out, s = [], zeros
    for i in range(t):  # state of frame i-1, warped to frame i
        s = model.forward_trunk.main(torch.cat((feats[:, i], flow_warp(s, flow_f[:, i], "zeros")), 1))
        out.append(model.upsample(back[i], s) + frames[:, i])
    return torch.stack(out, 1).clamp(0, 1)


def test_run_clip_equals_the_unrolled_forward_backward_recurrence(tiny: AHFNet) -> None:
    frames = moving_texture(*SHAPE, seed=5)
    with torch.no_grad():
        want = unrolled(tiny, frames)
    got = run_clip(tiny, frames)
    assert (want - frames).abs().mean() > 1e-2  # not the identity
    assert (got - want).abs().max() < 1e-5


def test_spynet_refines_coarse_to_fine_over_six_levels() -> None:
    """SPyNet (BasicSR's) is part of the model: six levels, each adding its residual to twice the upsampled
    flow of the level below. With every conv zero but the last bias b, the flow is (2^6 - 1) b everywhere,
    on any frame size (padded to 32 inside, cropped back)."""
    spynet = create("ahfnet", **TINY).spynet
    with torch.no_grad():
        for module in spynet.basic_module:
            for layer in module.basic_module:
                if isinstance(layer, torch.nn.Conv2d):
                    layer.weight.zero_()
                    layer.bias.zero_()
            module.basic_module[8].bias.copy_(torch.tensor([0.25, -0.5]))
        flow = spynet(torch.rand(3, 3, 9, 14), torch.rand(3, 3, 9, 14))
    assert flow.shape == (3, 2, 9, 14)
    assert torch.allclose(flow[:, 0], torch.full((3, 9, 14), 63 * 0.25))
    assert torch.allclose(flow[:, 1], torch.full((3, 9, 14), -63 * 0.5))


def test_every_output_sees_the_whole_clip(tiny: AHFNet) -> None:
    frames = moving_texture(*SHAPE, seed=7)
    a = run_clip(tiny, frames)
    changed = frames.clone()
    changed[:, -1] = 1.0 - changed[:, -1]
    assert (run_clip(tiny, changed)[:, 0] - a[:, 0]).abs().max() > 1e-4  # backward recurrence: last -> first
    changed = frames.clone()
    changed[:, 0] = 1.0 - changed[:, 0]
    assert (run_clip(tiny, changed)[:, -1] - a[:, -1]).abs().max() > 1e-4  # forward recurrence: first -> last
    both = run_clip(tiny, torch.stack((frames[1], frames[1])))
    assert (both[0] - a[1]).abs().max() < 1e-6  # samples of a batch are independent


def test_make_clip_is_clip_forward(tiny: AHFNet) -> None:
    module, spec = tiny.make_clip()
    assert (spec.family, spec.config, spec.kind) == ("ahfnet", TINY, "clip")
    assert (spec.window, spec.overlap, spec.latency, spec.pad_multiple) == (30, 8, 29, 4)
    assert tiny.make_clip(window=12, overlap=4)[1].latency == 11
    frames = moving_texture(*SHAPE, seed=8)
    with torch.no_grad():
        assert torch.equal(module(frames), tiny.clip_forward(frames))


def test_run_clip_pads_to_a_multiple_of_4(tiny: AHFNet) -> None:
    frames = moving_texture(1, 2, 30, 45, seed=9)
    out = run_clip(tiny, frames)
    assert out.shape == frames.shape and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ShapeError, match=r"^ahfnet: frames are 30x48\. Expected multiples of 4, at least 8x8"):
        tiny.clip_forward(torch.rand(1, 2, 3, 30, 48))
    with pytest.raises(ShapeError, match=r"^ahfnet: frames: shape \(1, 2, 4, 32, 32\)\. Expected \(N, T, 3, H, W\)"):
        tiny.clip_forward(torch.rand(1, 2, 4, 32, 32))


# --------------------------------------------------------------------------------------------
# Checkpoints, presets, configurations
# --------------------------------------------------------------------------------------------


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("container", ["raw", "params", "state_dict"])
def test_checkpoints_round_trip_strictly(container: str, tmp_path: Path) -> None:
    source = seeded_ahfnet(TINY, 11)
    sd = source.state_dict()
    assert not any(k.startswith("hfe.basis") for k in sd)  # constants are not stored
    assert {"spynet.mean", "spynet.std", "spynet.basic_module.5.basic_module.8.bias", "paths.0.conv_first.weight",
            "hfe.generators.1.linear.weight", "backward_trunk.main.2.1.conv2.weight", "conv_last.bias"} <= set(sd)
    path = tmp_path / "ahfnet.pth"
    torch.save(sd if container == "raw" else {container: sd, "epoch": 3}, path)
    model = create("ahfnet", **TINY)
    report = load_checkpoint(model, path)
    assert _same(model, source) and report.loaded == len(sd) and not report.dropped
    assert report.container == container and report.ignored_entries == ([] if container == "raw" else ["epoch"])


def test_a_missing_key_is_reported(tmp_path: Path) -> None:
    sd = seeded_ahfnet(TINY, 12).state_dict()
    del sd["forward_trunk.main.2.0.conv1.weight"]
    path = tmp_path / "partial.pth"
    torch.save({"params": sd}, path)
    model = create("ahfnet", **TINY)
    with pytest.raises(CheckpointError, match=r"partial.pth: does not fit ahfnet\(num_feat=8, num_block=2, "
                       r"num_paths=2, path_feat=2, gen_feat=4\): 1 missing keys "
                       r"\(forward_trunk.main.2.0.conv1.weight\)\."):
        load_checkpoint(model, path)
    torch.save({"params": model.state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"does not fit ahfnet\(.*num_paths=1.*\): \d+ unexpected keys "
                       r"\(hfe.generators.1.body.0.weight, "):
        load_checkpoint(create("ahfnet", **{**TINY, "num_paths": 1}), path)


def test_the_preset_is_the_papers_size() -> None:
    with torch.device("meta"):
        model = create("ahfnet")
    assert type(model) is AHFNet and model.kind == "clip" and model.config() == {
        "num_feat": 64, "num_block": 30, "num_paths": 6, "path_feat": 8, "gen_feat": 16}
    params = sum(p.numel() for p in model.parameters())
    assert params == 6_778_195  # the model card's figure
    assert abs(params / 6.75e6 - 1) < 0.10  # the paper: 6.75 M
    assert sum(p.numel() for p in model.spynet.parameters()) == 1_440_300  # SPyNet is part of it
    assert len(model.paths) == 7 and len(model.backward_trunk.main[2]) == 30


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_feat": 0}, r"ahfnet: num_feat=0 is invalid\. Expected an integer >= 1"),
        ({"path_feat": 1}, r"ahfnet: path_feat=1 is invalid\. Expected an integer >= 2"),
        ({"num_paths": True}, r"ahfnet: num_paths=True is invalid"),
        ({"M": 5}, r"ahfnet: unknown option\(s\) M\. Expected: num_feat, num_block, num_paths"),
    ],
)
def test_bad_configurations_fail_clearly(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        create("ahfnet", **kwargs)
