"""MMP-RNN: parity with the official forward, streaming equivalence, end replication, prior loading.

The fixtures come from a scratch reconstruction of sollynoay/MMP-RNN (model/MMPRNN.py, model/UNet.py,
arches from ESTRNN) run on CPU with seeded weights: its clip forward from zero states, outputs for
frames 2..T-3 (normalised, unclamped).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.models.conftest import TINY_MMPRNN, load_fixture, seeded_model, weights_checksum
from tests.models.seeded import moving_texture, seeded_state_dict
from vdeblur.errors import CheckpointError, ShapeError
from vdeblur.export.stepgraph import step_module, unroll
from vdeblur.models import create, run_clip


@pytest.mark.parametrize("name", ["mmprnn_tiny_official", "mmprnn_a3b4c16_official"])
def test_matches_official_forward_where_both_are_defined(name: str) -> None:
    fx = load_fixture(name)
    config = json.loads(fx["config"])
    model = create("mmprnn", **config).eval()
    state = seeded_state_dict(model.state_dict(), int(fx["seed"]))
    assert weights_checksum(state) == pytest.approx(fx["weights_checksum"], rel=1e-12)
    model.load_state_dict(state, strict=True)
    frames, raw = fx["frames"], fx["official_raw"]
    t_len = frames.shape[1]
    p, f = model.past_frames, model.future_frames
    # 1. the reference path: run_clip, frames p..T-f-1, clamped as the official test saves them
    out = run_clip(model, frames)
    assert out.shape == frames.shape
    assert (out[:, p : t_len - f] - (raw + 0.5).clamp(0, 1)).abs().max() < 1e-5
    # 2. the unclamped normalised outputs, from the same cell and decoder
    with torch.no_grad():
        s = frames.new_zeros(1, model.n_features, frames.shape[-2] // 4, frames.shape[-1] // 4)
        mid = torch.cat((s, s), 1)
        hs = []
        for t in range(t_len):
            h, s, mid = model.cell_step(frames[:, t], s, mid)
            hs.append(h)
        ours = [model.decode_normalized(torch.cat(hs[t - p : t + f + 1], 1), frames[:, t])
                for t in range(p, t_len - f)]
    assert (torch.stack(ours, 1) - raw).abs().max() < 1e-5


@pytest.mark.parametrize(("t_len", "size"), [(1, (16, 16)), (2, (16, 32)), (5, (20, 30))])
def test_run_clip_equals_the_unrolled_step(
    tiny_mmprnn: torch.nn.Module, t_len: int, size: tuple[int, int]
) -> None:
    frames = moving_texture(2, t_len, *size, seed=6)
    step, spec = step_module(tiny_mmprnn)
    assert spec.flush.flag_input == "flush"
    reference = run_clip(tiny_mmprnn, frames)
    assert torch.equal(reference, unroll(step, spec, frames))
    padded, padded_spec = step_module(tiny_mmprnn, pad=True)
    assert torch.equal(reference, unroll(padded, padded_spec, frames))


def test_run_clip_runs_in_eval_mode_and_restores_the_mode(tiny_mmprnn: torch.nn.Module) -> None:
    frames = moving_texture(1, 3, 16, 16, seed=10)
    expected = run_clip(tiny_mmprnn, frames)
    tiny_mmprnn.train()
    assert torch.equal(run_clip(tiny_mmprnn, frames), expected)  # batch norms used running statistics
    assert tiny_mmprnn.training


def test_ends_replicate_features_without_rerunning_the_cell(tiny_mmprnn: torch.nn.Module) -> None:
    frames = moving_texture(1, 4, 16, 16, seed=7)
    with torch.no_grad():
        s = frames.new_zeros(1, 4, 4, 4)
        mid = torch.cat((s, s), 1)
        hs = []
        for t in range(4):
            h, s, mid = tiny_mmprnn.cell_step(frames[:, t], s, mid)
            hs.append(h)
        first = tiny_mmprnn.decode(torch.cat([hs[0], hs[0], hs[0], hs[1], hs[2]], 1), frames[:, 0])
        last = tiny_mmprnn.decode(torch.cat([hs[1], hs[2], hs[3], hs[3], hs[3]], 1), frames[:, 3])
    out = run_clip(tiny_mmprnn, frames)
    assert torch.equal(out[:, 0], first)
    assert torch.equal(out[:, 3], last)
    # feeding the last frame again through the cell would give different features
    rerun = run_clip(tiny_mmprnn, torch.cat([frames, frames[:, 3:], frames[:, 3:]], 1))[:, 3]
    assert not torch.equal(rerun, last)


def test_warm_up_outputs_of_a_longer_clip_do_not_change_its_middle(tiny_mmprnn: torch.nn.Module) -> None:
    # Causality: appending frames changes only the outputs that see them (lookahead 2).
    frames = moving_texture(1, 6, 16, 16, seed=8)
    short = run_clip(tiny_mmprnn, frames[:, :4])
    long = run_clip(tiny_mmprnn, frames)
    assert torch.equal(short[:, :2], long[:, :2])
    assert not torch.equal(short[:, 3], long[:, 3])


def test_cell_rejects_sizes_that_are_not_multiples_of_16(tiny_mmprnn: torch.nn.Module) -> None:
    x = torch.rand(1, 3, 24, 32)
    s = x.new_zeros(1, 4, 6, 8)
    with pytest.raises(ShapeError, match=r"mmprnn: frames are 24x32. Expected multiples of 16"):
        tiny_mmprnn.cell_step(x, s, torch.cat((s, s), 1))


def test_prior_checkpoint_is_loaded_into_the_cell(tmp_path: Path) -> None:
    source = seeded_model("mmprnn", TINY_MMPRNN, 9)
    prior = {"module." + k: v for k, v in source.cell.prior.state_dict().items()}
    path = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": prior, "epoch": 3}, path)
    model = create("mmprnn", **TINY_MMPRNN, prior_checkpoint=path)
    for k, v in source.cell.prior.state_dict().items():
        assert torch.equal(model.cell.prior.state_dict()[k], v)
    torch.save({"state_dict": {"conv9x9.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=r"model_best.pth.tar: does not fit the MMP-Net prior"):
        create("mmprnn", **TINY_MMPRNN, prior_checkpoint=path)
