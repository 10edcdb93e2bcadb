"""MTU: parity with the official evaluation loop, streaming equivalence, input checks.

The fixtures come from a scratch reconstruction of codeslake/RealTime_VDBLR (models/archs/MTU.py,
models/utils.py FM/warp, eval.py loop) run on CPU, its CUDA correlation replaced by the same math in
plain PyTorch (see the issue note): outputs of every frame of a 6-frame clip, first frame and both
replicated ends included.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.models.conftest import TINY_MTU, load_fixture, seeded_model, weights_checksum
from tests.models.seeded import moving_texture, seeded_state_dict
from vdeblur.errors import ShapeError
from vdeblur.export.stepgraph import step_module, unroll
from vdeblur.models import create, run_clip


def test_tiny_config_matches_official_on_every_frame() -> None:
    fx = load_fixture("mtu_tiny_official")
    model = create("mtu", **json.loads(fx["config"])).eval()
    model.load_state_dict(fx["weights"], strict=True)
    out = run_clip(model, fx["frames"])
    assert out.shape == fx["outputs"].shape
    assert (out - fx["outputs"]).abs().max() < 1e-5


def test_mtu2_matches_official_on_every_frame() -> None:
    fx = load_fixture("mtu2_official")
    config = json.loads(fx["config"])
    model = seeded_model("mtu", config, int(fx["seed"]))
    assert config == create("mtu2").config()
    out = run_clip(model, fx["frames"])
    assert (out - fx["outputs"]).abs().max() < 1e-5


@pytest.mark.parametrize(("t_len", "size"), [(1, (16, 20)), (2, (16, 20)), (3, (12, 16)), (6, (18, 22))])
def test_run_clip_equals_the_unrolled_step(
    tiny_mtu: torch.nn.Module, t_len: int, size: tuple[int, int]
) -> None:
    frames = moving_texture(2, t_len, *size, seed=3)
    step, spec = step_module(tiny_mtu)
    assert torch.equal(run_clip(tiny_mtu, frames), unroll(step, spec, frames))
    padded, padded_spec = step_module(tiny_mtu, pad=True)
    assert padded_spec.pads_inside
    assert torch.equal(run_clip(tiny_mtu, frames), unroll(padded, padded_spec, frames))


def test_samples_of_a_batch_are_independent(tiny_mtu: torch.nn.Module) -> None:
    frames = moving_texture(2, 4, 16, 16, seed=4)
    both = run_clip(tiny_mtu, frames)
    one = run_clip(tiny_mtu, frames[1:])
    assert (both[1:] - one).abs().max() < 1e-6


def test_first_frame_uses_itself_as_previous(tiny_mtu: torch.nn.Module) -> None:
    # On the first frame the previous output, motion and features are ignored (replaced by the
    # current ones), so garbage there changes nothing.
    frames = moving_texture(1, 5, 16, 16, seed=5)
    window = frames[:, [0, 0, 0, 1, 2]]
    zeros = tiny_mtu.initial_state(1, 16, 16, frames)
    garbage = tuple(torch.randn_like(z) for z in zeros)
    first = torch.ones(1, dtype=torch.bool)
    with torch.no_grad():
        a = tiny_mtu(window, *zeros, first)
        b = tiny_mtu(window, *garbage, first)
        c = tiny_mtu(window, *garbage, ~first)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_outputs_are_clamped_frames(tiny_mtu: torch.nn.Module) -> None:
    out = run_clip(tiny_mtu, torch.rand(1, 3, 3, 10, 14))
    assert out.shape == (1, 3, 3, 10, 14)
    assert out.min() >= 0 and out.max() <= 1


def test_forward_rejects_sizes_that_are_not_multiples_of_4(tiny_mtu: torch.nn.Module) -> None:
    window = torch.rand(1, 5, 3, 10, 16)
    state = tiny_mtu.initial_state(1, 10, 16, window)
    with pytest.raises(ShapeError, match=r"mtu: frames are 10x16. Expected multiples of 4"):
        tiny_mtu(window, *state, torch.ones(1, dtype=torch.bool))


def test_run_clip_rejects_bad_frames(tiny_mtu: torch.nn.Module) -> None:
    with pytest.raises(ShapeError, match=r"frames: shape \(1, 3, 16, 16\). Expected \(N, T, 3, H, W\)"):
        run_clip(tiny_mtu, torch.rand(1, 3, 16, 16))


def test_seeded_weights_are_stable() -> None:
    # The fixtures store no weights for the preset-size models: they rely on this generator.
    model = create("mtu", **TINY_MTU)
    fx = load_fixture("mtu_tiny_official")
    assert weights_checksum(seeded_state_dict(model.state_dict(), 1)) == pytest.approx(
        weights_checksum(fx["weights"]), rel=1e-12
    )
