"""vdeblur.build.profile and plan(): input profiles from the state shapes, the declared graph, the
plan (no TensorRT needed), and the errors of a broken artifact. The --shapes grammar is tested in
tests/contract/test_engines.py, the state shape grammar in tests/contract/test_interface.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vdeblur.build import DEFAULT_SHAPES, build, dynamic_inputs, input_profiles, parse_shapes, plan
from vdeblur.contract.interface import FlushSpec, StateSpec, StepSpec
from vdeblur.errors import ExportError, ShapeError, UsageError


def _spec(**kw: Any) -> StepSpec:
    states = [StateSpec("counter", "counter_next", ["N"], "int32"),
              StateSpec("hist", "hist_next", ["N", 2, 3, "Hp", "Wp"]),
              StateSpec("low", "low_next", ["N", 18, "Hp/4", "Wp/8"])]
    return StepSpec(family="x", config={}, lookahead=2, pad_multiple=16, states=states,
                    flush=FlushSpec(2, flag_input="flush"), **kw)


def test_profiles_follow_the_state_shapes() -> None:
    spec = _spec()
    shapes = parse_shapes("64x128:720x1280:1088x1920", spec.pad_multiple)
    profiles = input_profiles(spec.to_dict(), shapes)
    assert list(profiles) == spec.input_names == ["frame", "flush", "counter", "hist", "low"]
    assert profiles["frame"] == {"min": [1, 3, 64, 128], "opt": [1, 3, 720, 1280], "max": [1, 3, 1088, 1920]}
    assert profiles["flush"] == {"min": [1], "opt": [1], "max": [1]}
    for state in spec.states:  # the same numbers as StateSpec.resolve
        assert profiles[state.input_name] == {
            k: list(state.resolve(1, h, w)) for k, (h, w) in zip(("min", "opt", "max"), shapes, strict=True)}
    assert profiles["low"]["max"] == [1, 18, 272, 240]


def test_profile_errors() -> None:
    d = _spec().to_dict()
    d["input_names"] = ["frame", "counter"]
    with pytest.raises(ExportError, match=r"manifest: input_names \['frame', 'counter'\] do not match"):
        input_profiles(d, DEFAULT_SHAPES)
    d = _spec().to_dict()
    d["states"][2]["shape"] = ["N", "Hp/3"]  # the grammar's error, with the input it is about
    with pytest.raises(ShapeError, match=r"profile min \(256x256\), input 'low': Hp=256 is not divisible by 3"):
        input_profiles(d, DEFAULT_SHAPES)


def test_dynamic_inputs_are_checked_against_the_declared_graph() -> None:
    profiles = input_profiles(_spec().to_dict(), DEFAULT_SHAPES)
    declared = {"frame": [1, 3, -1, -1], "flush": [1], "counter": [1], "hist": [1, 2, 3, -1, -1],
                "low": [1, 18, -1, -1]}
    assert dynamic_inputs(profiles, declared, "g.onnx") == ["frame", "hist", "low"]
    assert dynamic_inputs(profiles, {**declared, "flush": [-1]}, "g.onnx") == ["frame", "flush", "hist", "low"]
    with pytest.raises(ExportError, match=r"g\.onnx: input 'low' has shape \[1, 17, -1, -1\] .* cannot take the "
                                          r"min profile shape \[1, 18, 64, 32\]"):
        dynamic_inputs(profiles, {**declared, "low": [1, 17, -1, -1]}, "g.onnx")
    with pytest.raises(ExportError, match=r"input 'frame' has shape \[1, 3, 256, -1\]"):
        dynamic_inputs(profiles, {**declared, "frame": [1, 3, 256, -1]}, "g.onnx")
    with pytest.raises(ExportError, match=r"g\.onnx: its inputs are \['frame'\]\. Expected \['frame', 'flush'"):
        dynamic_inputs(profiles, {"frame": [1, 3, -1, -1]}, "g.onnx")


def test_dry_run_returns_the_plan(artifact: Path) -> None:
    stages: list[tuple[str, float]] = []
    result = build(artifact, "tensorrt", shapes="128x128:256x256:512x512", dry_run=True,
                   progress=lambda s, f: stages.append((s, f)))
    assert result["dry_run"] is True and result["backend"] == "tensorrt"
    assert result["shapes"] == "128x128:256x256:512x512"
    assert result["plan"] == plan(artifact, "tensorrt", shapes="128x128:256x256:512x512").to_dict()
    assert stages[0][1] == 0.0 and stages[-1] == ("done", 1.0)
    json.dumps(result)


def test_plan_errors(artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"build: backend 'tvm' is unknown\. Expected one of onnxruntime, tensorrt"):
        plan(artifact, "tvm")
    with pytest.raises(ExportError, match=r"artifact: no fp16 graph with the trt lowering\. It has: fp32/portable"):
        plan(artifact, "tensorrt", precision="fp16")
    with pytest.raises(ExportError, match=r"no manifest\.json here"):
        plan(tmp_path, "onnxruntime")
    with pytest.raises(UsageError, match=r"--shapes '9x9:1x1:9x9': the heights 9, 1, 9 decrease"):
        build(artifact, "tensorrt", shapes="9x9:1x1:9x9", dry_run=True)


def test_changed_graph_is_rejected(artifact_copy: Path) -> None:
    with open(artifact_copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match=r"model\.onnx: its sha256 .* does not match the manifest .* Re-export"):
        build(artifact_copy, "onnxruntime")
    assert not (artifact_copy / "engines").exists()


def test_build_imports_neither_torch_nor_the_runtime() -> None:
    """`import vdeblur.build` loads the contract only (the layering itself: tests/test_layering.py)."""
    import subprocess
    import sys

    code = ("import sys, vdeblur.build; bad = [m for m in sys.modules if m in ('torch', 'tensorrt', 'onnx') "
            "or m.startswith(('vdeblur.runtime', 'vdeblur.export', 'vdeblur.models', 'vdeblur.plugins'))]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
