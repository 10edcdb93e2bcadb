"""Step graphs: specs, state layout, unrolling, ONNX export with dynamic sizes (portable lowering)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from tests.models.conftest import TINY_MMPRNN, TINY_MTU, seeded_model, single_thread  # noqa: F401
from tests.models.seeded import moving_texture
from vdeblur.errors import UsageError
from vdeblur.export.stepgraph import (
    StepSpec,
    dynamic_shapes,
    example_inputs,
    initial_states,
    step_module,
    unroll,
)
from vdeblur.models import create, run_clip
from vdeblur.plugins import lowering

FAMILIES = {"mtu": TINY_MTU, "mmprnn": TINY_MMPRNN}


@pytest.fixture(params=list(FAMILIES))
def tiny(request: pytest.FixtureRequest) -> torch.nn.Module:
    return seeded_model(request.param, FAMILIES[request.param], 31)


def test_spec_round_trips_through_json(tiny: torch.nn.Module) -> None:
    _, spec = step_module(tiny)
    data = json.loads(spec.to_json())
    assert StepSpec.from_dict(data) == spec
    assert data["input_names"][0] == "frame" and data["output_names"][0] == "output"
    assert data["lookahead"] == 2 and data["flush"]["steps"] == 2 and data["flush"]["frame"] == "repeat_last"


def test_preset_state_layouts() -> None:
    with torch.device("meta"):
        mtu2, rnn = create("mtu2"), create("mmprnn_a9b10c18")
    _, spec = step_module(mtu2)
    assert spec.input_names == ["frame", "counter", "frames", "r_prev", "motion", "feat"]
    assert spec.flush.flag_input is None and spec.pad_multiple == 4
    assert [s.resolve(1, 720, 1280) for s in spec.states] == [
        (1,), (1, 4, 3, 720, 1280), (1, 3, 720, 1280), (1, 52, 180, 320), (1, 26, 720, 1280)]
    _, spec = step_module(rnn)
    assert spec.input_names == ["frame", "flush", "counter", "frames", "s", "mid", "hist"]
    assert spec.pad_multiple == 16 and spec.padded(714, 1274) == (720, 1280)
    assert [s.resolve(1, 720, 1280) for s in spec.states] == [
        (1,), (1, 2, 3, 720, 1280), (1, 18, 180, 320), (1, 36, 180, 320), (1, 360, 180, 320)]
    assert [s.dtype for s in spec.states] == ["int32"] + ["float32"] * 4


def test_step_outputs_keep_the_state_layout(tiny: torch.nn.Module) -> None:
    step, spec = step_module(tiny)
    args = example_inputs(spec, 2, 32, 48)
    with torch.no_grad():
        out, *states = step(*args)
    assert out.shape == (2, 3, 32, 48)
    for s, value in zip(spec.states, states, strict=True):
        assert tuple(value.shape) == s.resolve(2, 32, 48), s.input_name
        assert str(value.dtype) == f"torch.{s.dtype}"
    assert states[0].tolist() == [1, 1]


def test_unroll_gives_one_output_per_frame_and_discards_warm_up(tiny: torch.nn.Module) -> None:
    step, spec = step_module(tiny)
    calls = []

    def counting(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        calls.append(args)
        return step(*args)

    frames = moving_texture(1, 3, 20, 20, seed=32)
    out = unroll(counting, spec, frames)
    assert out.shape == frames.shape and len(calls) == 3 + spec.lookahead
    assert torch.equal(out, run_clip(tiny, frames))
    if spec.flush.flag_input:
        assert [int(c[1][0]) for c in calls] == [0, 0, 0, 1, 1]
    # flush steps repeat the last (padded) frame
    assert torch.equal(calls[-1][0], calls[2][0])


def test_step_module_needs_a_vdeblur_model() -> None:
    with pytest.raises(UsageError, match=r"step_module: got a Conv2d. Expected a model built by"):
        step_module(torch.nn.Conv2d(3, 3, 1))
    _, spec = step_module(create("mtu", **TINY_MTU), pad=True)
    with pytest.raises(UsageError, match=r"dynamic_shapes: the step pads inside"):
        dynamic_shapes(spec)


def _export(step: torch.nn.Module, spec: StepSpec) -> bytes:
    args = example_inputs(spec, 2, 2 * spec.pad_multiple, 3 * spec.pad_multiple)
    with warnings.catch_warnings(), lowering("portable"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            step, args, dynamo=True, dynamic_shapes=dynamic_shapes(spec), input_names=spec.input_names,
            output_names=spec.output_names, opset_version=18, verbose=False,
        )
    assert program is not None
    return program.model_proto.SerializeToString()


# Smaller searches export faster: the portable correlation is one Slice/Mul/ReduceSum per displacement.
EXPORT_CONFIGS = {"mtu": {**TINY_MTU, "max_displacement": 2}, "mmprnn": TINY_MMPRNN}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(EXPORT_CONFIGS))
def test_onnx_export_runs_in_onnxruntime_with_dynamic_sizes(family: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    step, spec = step_module(seeded_model(family, EXPORT_CONFIGS[family], 34))
    session = ort.InferenceSession(_export(step, spec), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == spec.input_names
    assert [o.name for o in session.get_outputs()] == spec.output_names
    m = spec.pad_multiple
    for n, h, w in [(1, 2 * m, 3 * m), (3, 3 * m, 2 * m)]:
        frames = moving_texture(n, 4, h, w, seed=33)
        states = initial_states(spec, n, h, w)
        ort_states = [s.numpy() for s in states]
        for t in range(4):  # warm-up, first output, one more, and a flush step
            frame = frames[:, min(t, 2)]
            flag = [torch.full((n,), int(t == 3), dtype=torch.int32)] if spec.flush.flag_input else []
            with torch.no_grad():
                out, *states = step(frame, *flag, *states)
            feeds = [t_.numpy() for t_ in (frame, *flag)] + ort_states
            res = session.run(None, dict(zip(spec.input_names, feeds, strict=True)))
            ort_states = res[1:]
            assert abs(res[0] - out.numpy()).max() < 1e-5, (n, h, w, t)
            for name, a, b in zip(spec.output_names[1:], res[1:], states, strict=True):
                assert abs(a - b.numpy()).max() < 1e-5, (name, n, h, w, t)
