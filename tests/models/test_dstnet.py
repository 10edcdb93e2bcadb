"""DSTNet: parity with the official forward, BasicSR checkpoints, export safety (one graph for every T),
input checks.

The fixtures come from the official code (xuboming8/DSTNet basicsr/archs, run unmodified on the CPU
with its CuPy per-pixel kernel replaced by the kernel's formula): tests/fixtures/make_dstnet_fixtures.py
documents how. They store the frames and the official outputs; the weights are rebuilt here from a seed
(conftest.dstnet_fixture_state_dict).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.models.conftest import (
    TINY_DSTNET,
    dstnet_fixture_model,
    dstnet_fixture_state_dict,
    load_fixture,
    weights_checksum,
)
from tests.models.seeded import moving_texture
from vdeblur.errors import CheckpointError, ShapeError
from vdeblur.models import create, load_checkpoint, run_clip
from vdeblur.models.blocks import pad_to_multiple
from vdeblur.models.dstnet import DSTNet, DSTNetL, haar_filters

# Measured: at most 7.7e-7 (dstnet_L), 6.0e-7 (dstnet), 1.2e-7 (tiny) on outputs of magnitude ~1: float32
# rounding of a different but equivalent evaluation order (shift-and-sum dynamic ops vs the official
# unfold / grouped conv, layer norm over dim 1 vs the last dim). 1e-5 leaves a 10x margin; a wrong tap,
# group or band order moves outputs by 1e-2 or more.
TOL = 1e-5


def fixture_model(fx: dict[str, Any]) -> torch.nn.Module:
    config = json.loads(fx["config"])
    model = create(fx["family"], **config).eval()
    state = dstnet_fixture_state_dict(model.state_dict(), int(fx["seed"]))
    assert weights_checksum(state) == pytest.approx(fx["weights_checksum"], rel=1e-12)  # Haar filters included
    model.load_state_dict(state, strict=True)
    return model


@pytest.mark.parametrize("name", ["dstnet_tiny_official", "dstnet_official", "dstnet_L_official"])
def test_matches_the_official_forward(name: str) -> None:
    fx = load_fixture(name)
    model = fixture_model(fx)
    if name != "dstnet_tiny_official":
        assert model.config() == create(fx["family"]).config()  # the preset itself
    for clip in fx["clips"]:
        frames, raw = clip["frames"], clip["official_raw"]
        assert (raw - frames).abs().mean() > 0.02  # the fixture is not the identity
        out = run_clip(model, frames)
        assert out.shape == frames.shape
        assert (out - clip["outputs"]).abs().max() < TOL
        with torch.no_grad():
            assert (model(frames) - raw).abs().max() < TOL  # unclamped, as the official forward


def test_make_clip_is_clip_forward(tiny_dstnet: DSTNet) -> None:
    module, spec = tiny_dstnet.make_clip()
    assert (spec.family, spec.config, spec.kind) == ("dstnet", TINY_DSTNET, "clip")
    assert (spec.window, spec.overlap, spec.latency, spec.pad_multiple) == (30, 8, 29, 16)
    assert tiny_dstnet.make_clip(window=12, overlap=4)[1].latency == 11
    frames = moving_texture(2, 6, 32, 48, seed=21)
    with torch.no_grad():
        assert torch.equal(module(frames), tiny_dstnet.clip_forward(frames))
    assert DSTNetL(16, 1).make_clip()[1].family == "dstnet_L"


def test_every_output_sees_the_whole_clip(tiny_dstnet: DSTNet) -> None:
    frames = moving_texture(2, 6, 32, 48, seed=22)
    changed = frames.clone()
    changed[:, -1] = 1.0 - changed[:, -1]
    a, b = run_clip(tiny_dstnet, frames), run_clip(tiny_dstnet, changed)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-4  # the backward recurrence carries the last frame to the first
    changed = frames.clone()
    changed[:, 0] = 1.0 - changed[:, 0]
    assert (run_clip(tiny_dstnet, changed)[:, -1] - a[:, -1]).abs().max() > 1e-4  # and the forward one back


def test_samples_of_a_batch_are_independent(tiny_dstnet: DSTNet) -> None:
    frames = moving_texture(2, 6, 32, 48, seed=23)
    both = run_clip(tiny_dstnet, frames)
    one = run_clip(tiny_dstnet, frames[1:].expand(2, -1, -1, -1, -1))
    assert (both[1] - one[0]).abs().max() < 1e-6


def test_run_clip_pads_sizes_that_are_not_multiples_of_16(tiny_dstnet: DSTNet) -> None:
    frames = moving_texture(1, 3, 20, 30, seed=24)
    out = run_clip(tiny_dstnet, frames)
    assert out.shape == (1, 3, 3, 20, 30)
    assert out.min() >= 0 and out.max() <= 1
    padded = pad_to_multiple(frames, 16, "replicate")
    assert padded.shape[-2:] == (32, 32)
    with torch.no_grad():
        assert torch.equal(out, tiny_dstnet.clip_forward(padded)[..., :20, :30])


def test_forward_rejects_sizes_that_are_not_multiples_of_16(tiny_dstnet: DSTNet) -> None:
    with pytest.raises(ShapeError, match=r"dstnet: frames are 20x32\. Expected multiples of 16 \(pad them"):
        tiny_dstnet.clip_forward(torch.rand(1, 2, 3, 20, 32))


@pytest.mark.parametrize("shape", [(1, 2, 4, 32, 32), (1, 2, 1, 32, 32), (2, 3, 32, 32)])
def test_wrong_channel_count_or_rank_fails_clearly(tiny_dstnet: DSTNet, shape: tuple[int, ...]) -> None:
    frames = torch.rand(shape)
    with pytest.raises(ShapeError, match=r"Expected \(N, T, 3, H, W\)"):
        run_clip(tiny_dstnet, frames)
    with pytest.raises(ShapeError, match=r"^dstnet: frames: shape .* Expected \(N, T, 3, H, W\)"):
        tiny_dstnet.clip_forward(frames)


def test_haar_wavelet_is_the_official_fixed_transform() -> None:
    model = create("dstnet", **TINY_DSTNET)
    w = model.wave.haar_weights
    assert not w.requires_grad and torch.equal(w, haar_filters(16))
    # official wave_tf.HaarDownsampling: ones, -1 at [1,0,0,1] [1,0,1,1] [2,0,1,0] [2,0,1,1] [3,0,1,0] [3,0,0,1]
    expected = torch.ones(4, 1, 2, 2)
    for k, y, x in [(1, 0, 1), (1, 1, 1), (2, 1, 0), (2, 1, 1), (3, 1, 0), (3, 0, 1)]:
        expected[k, 0, y, x] = -1
    assert torch.equal(w, expected.repeat(16, 1, 1, 1))
    x = torch.randn(3, 16, 8, 12)
    low, high = model.wave(x)
    assert torch.allclose(low, torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)
    assert torch.allclose(model.wave.inverse(torch.cat((low, high), 1)), x, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Checkpoints (BasicSR format)
# --------------------------------------------------------------------------------------------


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("container", ["params", "params_ema", "module"])
def test_basicsr_checkpoints_load_strictly(container: str, tmp_path: Path) -> None:
    source = dstnet_fixture_model("dstnet", TINY_DSTNET, 31)
    sd = source.state_dict()
    content = {
        "params": {"params": sd},
        "params_ema": {"params_ema": sd, "params": sd},  # BasicSR with EMA saves both
        "module": {"params": {"module." + k: v for k, v in sd.items()}},  # saved from DataParallel
    }[container]
    path = tmp_path / "GOPRO.pth"
    torch.save(content, path)
    model = create("dstnet", **TINY_DSTNET)
    report = load_checkpoint(model, path)
    assert _same(model, source)
    assert report.loaded == len(sd) and not report.dropped and report.format == "torch"
    assert report.container == ("params_ema" if container == "params_ema" else "params")
    assert report.stripped_prefix == ("module." if container == "module" else None)


def test_a_wrong_key_is_reported(tmp_path: Path) -> None:
    sd = dstnet_fixture_model("dstnet", TINY_DSTNET, 32).state_dict()
    key = "forward_propagation.resblock_bcakward2d.main.0.0.conv1.weight"
    fixed = key.replace("bcakward", "backward")  # the official misspelling "corrected"
    sd[fixed] = sd.pop(key)
    path = tmp_path / "renamed.pth"
    torch.save({"params": sd}, path)
    model = create("dstnet", **TINY_DSTNET)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=rf"renamed.pth: does not fit dstnet\(num_feat=16, num_block=1\): "
                       rf"1 missing keys \({key}\); 1 unexpected keys \({fixed}\)"):
        load_checkpoint(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_large_variant_is_another_family(tmp_path: Path) -> None:
    path = tmp_path / "GOPRO_Large.pth"
    torch.save({"params": create("dstnet_L", **TINY_DSTNET).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"does not fit dstnet\(num_feat=16, num_block=1\): "
                       r"4 unexpected keys \(up.weight, up.bias, down.weight, down.bias\)"):
        load_checkpoint(create("dstnet", **TINY_DSTNET), path)
    model = create("dstnet_L", **TINY_DSTNET)
    assert load_checkpoint(model, path).loaded == len(model.state_dict())


# --------------------------------------------------------------------------------------------
# Export safety: one ONNX graph for every clip length
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_onnx_graph_serves_every_clip_length_and_size(tmp_path: Path) -> None:
    """torch.onnx.export(dynamo=True) with dynamic N, T, H = 16 kh, W = 16 kw (portable lowering) gives one
    graph with one ONNX Scan per direction; ONNX Runtime runs it for other T, N, H, W and equals eager.
    (~60 s on 2 CPU cores: the exporter, not the model, dominates.)"""
    import onnx
    from torch.export import Dim

    from vdeblur.export.onnx import ort_session
    from vdeblur.plugins import lowering

    model = dstnet_fixture_model("dstnet", {"num_feat": 8, "num_block": 1}, 33)
    module, spec = model.make_clip()
    n, t = Dim("N", min=1, max=16), Dim("T", min=1, max=1024)
    kh, kw = Dim("kh", min=1, max=512), Dim("kw", min=1, max=512)
    example = moving_texture(2, 3, 32, 48, seed=34)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), lowering("portable"), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=[spec.frame_input],
                                    output_names=[spec.frame_output], verbose=False, optimize=True,
                                    dynamic_shapes=({0: n, 1: t, 3: 16 * kh, 4: 16 * kw},))
    assert program is not None
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[2] == 3 and all(isinstance(d, str) for d in (dims[0], dims[1], dims[3], dims[4]))
    assert [node.op_type for node in proto.graph.node].count("Scan") == 2
    assert all(node.domain in ("", "ai.onnx") for node in proto.graph.node)  # portable: standard ops only
    path = tmp_path / "dstnet_clip.onnx"
    onnx.save(proto, str(path))
    session = ort_session(path)
    for shape in [(1, 1, 16, 16), (1, 2, 32, 48), (2, 5, 48, 32), (1, 7, 16, 64)]:
        frames = moving_texture(*shape, seed=sum(shape))
        with torch.no_grad():
            eager = module(frames).numpy()
        ours = session.run(None, {spec.frame_input: frames.numpy()})[0]
        assert ours.shape == eager.shape
        assert np.abs(ours - eager).max() < 1e-5, shape
