"""ARVo, built from its paper: the facts of sections 3.1-3.4 (the pyramid pools only the neighbour features,
three levels, the aggregation is a softmax over all positions, two stages sharing their weights), the
streaming step against the direct whole-clip definition, the end replication, checkpoints and the input
checks.

No official code or weights exist: the weights are seeded (tests/models/seeded.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.models.seeded import moving_texture, seeded_state_dict
from vdeblur.errors import CheckpointError, ShapeError, UsageError
from vdeblur.export.stepgraph import step_module, unroll
from vdeblur.models import arvo, create, load_checkpoint, run_clip
from vdeblur.models.arvo import ARVo

TINY = {"num_feat": 8, "num_enc_block": 1, "num_dec_block": 1, "levels": 3, "flow_feat": 4, "max_displacement": 2}


def seeded_arvo(config: dict[str, Any], seed: int) -> ARVo:
    """Seeded weights, two of them scaled: the output conv x 0.1 so that the residual is moderate (outputs
    mostly inside [0, 1], where clamping does not hide differences), and the encoder's last strided conv
    x 10 so that the correspondence logits are a few units (plain seeded features give logits ~0.05: an
    almost uniform softmax that would test little)."""
    model = create("arvo", **config).eval()
    state = seeded_state_dict(model.state_dict(), seed)
    state["decoder.conv_last.weight"] = 0.1 * state["decoder.conv_last.weight"]
    for key in ("encoder.down3.weight", "encoder.down3.bias"):  # logits of a few units: a peaked softmax
        state[key] = 10 * state[key]
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def tiny() -> ARVo:
    return seeded_arvo(TINY, 0)


def materialised(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The all-range aggregation with the (H*W) x (h*w) volume built explicitly (float64)."""
    logits = torch.einsum("nci,ncj->nij", q.double().flatten(2), k.double().flatten(2))
    weights = torch.softmax(logits, -1)  # normalised over ALL key positions (u, v)
    return torch.einsum("nij,ncj->nci", weights, v.double().flatten(2)).unflatten(2, q.shape[-2:])


# --------------------------------------------------------------------------------------------
# The paper's facts
# --------------------------------------------------------------------------------------------


def test_the_pyramid_pools_only_the_neighbour_features_over_three_levels(tiny: ARVo,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    original = arvo.aggregate

    def recording(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        calls.append((q, k, v))
        return original(q, k, v)

    monkeypatch.setattr(arvo, "aggregate", recording)
    f_ref = torch.randn(1, 8, 12, 20)
    f_nbrs = torch.randn(1, 3, 8, 12, 20)
    with torch.no_grad():
        rho = tiny.correspondence(f_ref, f_nbrs)
    assert tiny.levels == 3 and len(calls) == 3  # one call per level, the neighbours batched
    assert rho.shape == (1, 3 * 3 * 8, 12, 20)  # concatenated over {prev, self, next} x levels
    for k, (q, keys, values) in enumerate(calls, start=1):
        assert torch.equal(q, f_ref.expand(3, -1, -1, -1))  # the reference is never pooled
        size = (math.ceil(12 / 2**k), math.ceil(20 / 2**k))
        pooled = F.max_pool2d(f_nbrs[0], 2**k, 2**k, ceil_mode=True)
        assert keys.shape[-2:] == size and torch.equal(keys, pooled)  # max-pooled neighbours
        assert torch.equal(values, tiny.correspondence.phi[k - 1](pooled))  # phi_k of the pooled ones
    # in a stage, the three neighbours are the warped previous frame, the reference itself, the next
    calls.clear()
    frames = moving_texture(1, 3, 32, 48, seed=1)
    with torch.no_grad():
        tiny.stage(frames[:, 0], frames[:, 1], frames[:, 2])
        e = tiny.encoder(frames[:, 1])[2]
    q, keys, _ = calls[0]
    assert q.shape == (3, 8, 8, 12) and torch.allclose(keys[1], F.max_pool2d(e, 2)[0], atol=1e-6)


def test_the_aggregation_is_a_softmax_over_all_positions(tiny: ARVo) -> None:
    gen = torch.Generator().manual_seed(2)
    f_ref = torch.randn(2, 8, 6, 10, generator=gen)
    f_nbrs = torch.randn(2, 3, 8, 6, 10, generator=gen)
    with torch.no_grad():
        got = tiny.correspondence(f_ref, f_nbrs).double()
        want = []
        for j in range(3):
            for k, phi in enumerate(tiny.correspondence.phi, start=1):
                pooled = F.max_pool2d(f_nbrs[:, j], 2**k, 2**k, ceil_mode=True)
                want.append(materialised(f_ref, pooled, phi(pooled)))
    assert (got - torch.cat(want, 1)).abs().max() < 1e-5
    # no scale factor, max-subtracted: large logits stay finite and exact
    q, k, v = 30 * torch.randn(1, 8, 5, 7, generator=gen), torch.randn(1, 8, 4, 6, generator=gen), \
        torch.randn(1, 3, 4, 6, generator=gen)
    out = arvo.aggregate(q, k, v)
    assert torch.isfinite(out).all() and (out.double() - materialised(q, k, v)).abs().max() < 1e-4
    # all-range: every query sees every key, however far (a local window would not)
    base = arvo.aggregate(q / 30, k, v)
    v2 = v.clone()
    v2[..., -1, -1] += 1.0  # the bottom-right key only
    assert ((arvo.aggregate(q / 30, k, v2) - base).abs() > 1e-6).all()


def test_two_stages_share_their_weights(tiny: ARVo) -> None:
    # one set of parameters: flow, encoder, correspondence, decoder; nothing per stage
    assert {k.split(".")[0] for k in tiny.state_dict()} == {"flow", "encoder", "correspondence", "decoder"}
    frames = moving_texture(1, 3, 32, 48, seed=3)
    f = [frames[:, 0]] * 2 + [frames[:, i] for i in range(3)] + [frames[:, 2]] * 2  # ends replicated
    with torch.no_grad():
        s1 = [tiny.stage(f[i], f[i + 1], f[i + 2]) for i in range(5)]  # frames -1 .. 3
        want = torch.stack([tiny.stage(s1[j], s1[j + 1], s1[j + 2]).clamp(0, 1) for j in range(3)], 1)
        got = tiny.forward_clip(frames)
    assert torch.equal(got, want)
    assert (got - frames).abs().mean() > 1e-2 and 0.5 < ((got > 0) & (got < 1)).float().mean()


# --------------------------------------------------------------------------------------------
# Streaming: the step, the direct definition, the ends
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("t_len", "size"), [(1, (16, 16)), (2, (32, 48)), (5, (20, 30))])
def test_run_clip_equals_the_direct_definition_and_the_unrolled_step(tiny: ARVo, t_len: int,
                                                                       size: tuple[int, int]) -> None:
    frames = moving_texture(2, t_len, *size, seed=6)
    reference = run_clip(tiny, frames)
    assert reference.shape == frames.shape
    padded = F.pad(frames.flatten(0, 1), (0, (-size[1]) % 16, 0, (-size[0]) % 16), mode="replicate")
    with torch.no_grad():
        direct = tiny.forward_clip(padded.unflatten(0, frames.shape[:2]))[..., : size[0], : size[1]]
    assert (reference - direct).abs().max() < 1e-6
    step, spec = step_module(tiny)
    assert spec.lookahead == 2 and spec.flush.frame == "repeat_last" and spec.flush.flag_input is None
    assert torch.equal(reference, unroll(step, spec, frames))
    wrapped, wrapped_spec = step_module(tiny, pad=True)
    assert torch.equal(reference, unroll(wrapped, wrapped_spec, frames))


def test_each_step_runs_stage_one_once_and_stage_two_once(tiny: ARVo, monkeypatch: pytest.MonkeyPatch) -> None:
    step, spec = step_module(tiny)
    assert [s.input_name for s in spec.states] == ["counter", "frames", "stage1"]
    seen: list[torch.Tensor] = []
    original = ARVo.stage

    def counting(self: ARVo, prev: torch.Tensor, cur: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        seen.append(cur)
        return original(self, prev, cur, nxt)

    monkeypatch.setattr(ARVo, "stage", counting)
    frames = moving_texture(1, 4, 32, 32, seed=7)
    states = [torch.zeros(1, dtype=torch.int32), torch.zeros(1, 2, 3, 32, 32), torch.zeros(1, 2, 3, 32, 32)]
    with torch.no_grad():
        for s in range(4):
            seen.clear()
            _, *states = step(frames[:, s], *states)
            assert len(seen) == 2  # stage 1 of frame s-1, stage 2 of frame s-2
            assert torch.equal(seen[0], frames[:, max(s - 1, 0)])  # stage 1's reference: the previous frame
            with torch.no_grad():
                window = [frames[:, min(max(i, 0), 3)] for i in (s - 2, s - 1, s)]
                assert torch.equal(states[2][:, 1], original(tiny, *window))  # cached stage-1 result of s-1
    assert states[0].tolist() == [3]  # the counter saturates


def test_the_ends_replicate_the_first_and_last_frames(tiny: ARVo) -> None:
    """Output j depends on frames clip(j-2 .. j+2, 0, T-1) only: a clip and the same clip with its
    ends explicitly replicated give the same outputs."""
    frames = moving_texture(1, 4, 32, 32, seed=8)
    out = run_clip(tiny, frames)
    first, last = frames[:, :1], frames[:, -1:]
    start = run_clip(tiny, torch.cat((first, first, frames[:, :3]), 1))  # f0 f0 f0 f1 f2
    end = run_clip(tiny, torch.cat((frames[:, 1:], last, last), 1))  # f1 f2 f3 f3 f3
    assert (out[:, 0] - start[:, 2]).abs().max() < 1e-6
    assert (out[:, 3] - end[:, 2]).abs().max() < 1e-6
    # and nothing further: changing frame 3 leaves output 0 alone, changes outputs 1..3
    changed = frames.clone()
    changed[:, 3] = 1 - changed[:, 3]
    out2 = run_clip(tiny, changed)
    assert torch.equal(out2[:, 0], out[:, 0]) and all((out2[:, j] - out[:, j]).abs().max() > 1e-5 for j in (1, 2, 3))


# --------------------------------------------------------------------------------------------
# Checkpoints, configuration, inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", ["raw", "params", "state_dict", "module"])
def test_checkpoints_round_trip_strictly(tiny: ARVo, tmp_path: Path, wrap: str) -> None:
    state = tiny.state_dict()
    obj: Any = {"raw": state, "params": {"params": state, "epoch": 3}, "state_dict": {"state_dict": state},
                "module": {f"module.{k}": v for k, v in state.items()}}[wrap]
    path = tmp_path / "arvo.pth"
    torch.save(obj, path)
    fresh = create("arvo", **TINY)
    report = load_checkpoint(fresh, path)
    assert report.loaded == len(state) and not report.dropped
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())
    frames = moving_texture(1, 2, 16, 16, seed=9)
    assert torch.equal(run_clip(fresh, frames), run_clip(tiny, frames))


def test_checkpoints_of_another_configuration_fail_clearly(tiny: ARVo, tmp_path: Path) -> None:
    path = tmp_path / "arvo.pth"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"does not fit arvo\(num_feat=8, num_enc_block=2.*missing keys"):
        load_checkpoint(create("arvo", **{**TINY, "num_enc_block": 2}), path)
    with pytest.raises(CheckpointError, match="tensor shapes do not fit"):
        load_checkpoint(create("arvo", **{**TINY, "num_feat": 12}), path)
    state = dict(tiny.state_dict())
    state["decoder.extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"1 unexpected keys \(decoder\.extra\.weight\)"):
        load_checkpoint(create("arvo", **TINY), path)


def test_bad_configs_fail_clearly() -> None:
    with pytest.raises(UsageError, match=r"^arvo: num_feat=6 is invalid\. Expected a multiple of 4"):
        create("arvo", num_feat=6)
    with pytest.raises(UsageError, match=r"^arvo: levels=0 is invalid\. Expected an integer >= 1"):
        create("arvo", levels=0)
    with pytest.raises(UsageError, match=r"^arvo: max_displacement=True is invalid"):
        create("arvo", max_displacement=True)
    with pytest.raises(UsageError, match=r"^arvo: unknown option\(s\) hg_num\. Expected: num_feat, "):
        create("arvo", hg_num=2)


def test_inputs_are_checked(tiny: ARVo) -> None:
    with pytest.raises(ShapeError, match=r"^arvo: frames are 20x32\. Expected multiples of 16"):
        tiny.forward_clip(torch.rand(1, 2, 3, 20, 32))
    with pytest.raises(ShapeError, match=r"arvo: frames: shape \(1, 3, 16, 16\)\. Expected \(N, T, 3, H, W\)"):
        tiny.forward_clip(torch.rand(1, 3, 16, 16))
    assert run_clip(tiny, torch.rand(1, 1, 3, 5, 7)).shape == (1, 1, 3, 5, 7)  # run_clip pads any size


def test_the_preset_size() -> None:
    model = create("arvo")
    assert model.config() == arvo.DEFAULTS and arvo.PRESETS[0].config == arvo.DEFAULTS
    assert sum(p.numel() for p in model.parameters()) == arvo.PARAMS
