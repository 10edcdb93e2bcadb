"""Engines: ONNX Runtime build (optimised model + session.json), TensorRT plan, profiles, cache keys.

The TensorRT build itself needs TensorRT and an NVIDIA GPU (marked, skipped when absent); every
piece of logic around it (shapes, profiles, cache key, flags per version, parser messages, cache
hits) is tested here without them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from vdeblur.errors import BackendError, ExportError, MissingDependencyError, UsageError, VdeblurError
from vdeblur.export import engines
from vdeblur.export.engines import (
    DEFAULT_SHAPES,
    BuildPlan,
    build,
    cache_key,
    dynamic_inputs,
    format_parser_errors,
    input_profiles,
    parse_shapes,
    plan,
    shape_notes,
    trt_build_flags,
)
from vdeblur.export.manifest import GraphEntry, Manifest
from vdeblur.export.stepgraph import StateSpec, StepSpec

STATES = ["counter", "frames", "r_prev", "motion", "feat"]


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# A small MTU artifact, exported once for the module
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact directory with the portable and trt graphs of a small mtu2 (ch=8, rb_num=1)."""
    from vdeblur.export.manifest import sha256_file
    from vdeblur.export.onnx import export_step_graph, plugins_used
    from vdeblur.export.stepgraph import step_module
    from vdeblur.models import create

    d = tmp_path_factory.mktemp("engines") / "mtu"
    d.mkdir()
    torch.manual_seed(0)
    model = create("mtu2", ch=8, rb_num=1)
    step, spec = step_module(model)
    export_step_graph(step, spec, d / "model.onnx", "portable", 64, 64)
    trt_model = export_step_graph(step, spec, d / "model.trt.onnx", "trt", 64, 64)
    Manifest(
        model={"family": "mtu", "preset": "mtu2", "config": {"ch": 8, "rb_num": 1}, "checkpoint": None,
               "random_weights": True},
        kind="step",
        interface=spec.to_dict(),
        graphs=[GraphEntry("model.onnx", "fp32", "portable", sha256_file(d / "model.onnx")),
                GraphEntry("model.trt.onnx", "fp32", "trt", sha256_file(d / "model.trt.onnx"))],
        plugins=plugins_used(trt_model),
        opset=18,
        versions={"vdeblur": "test", "torch": torch.__version__},
    ).write(d)
    return d


@pytest.fixture
def artifact_copy(artifact: Path, tmp_path: Path) -> Path:
    """A private copy (without engines) for tests that write or break things."""
    dst = tmp_path / "art"
    shutil.copytree(artifact, dst, ignore=shutil.ignore_patterns("engines"))
    return dst


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# --shapes
# --------------------------------------------------------------------------------------------


def test_default_shapes() -> None:
    assert parse_shapes(None, 4) == DEFAULT_SHAPES == ((256, 256), (720, 1280), (1088, 1920))
    assert parse_shapes("", 16) == DEFAULT_SHAPES
    assert shape_notes(None, 16) == []
    # 720 is not a multiple of 32: rounded up, with a note
    assert parse_shapes(None, 32) == ((256, 256), (736, 1280), (1088, 1920))
    assert shape_notes(None, 32) == [
        "opt size 720x1280 rounded up to 736x1280 (the runtime pads frames to multiples of 32, "
        "the graph sees the padded size)"]


def test_shapes_are_parsed_and_rounded_up() -> None:
    assert parse_shapes("128x128:256x256:512x512", 4) == ((128, 128), (256, 256), (512, 512))
    assert parse_shapes(" 250X250 : 250x500:1080x1920 ", 4) == ((252, 252), (252, 500), (1080, 1920))
    assert parse_shapes("1080x1920:1080x1920:1080x1920", 16) == ((1088, 1920),) * 3
    assert parse_shapes("720x1280", 16) == ((720, 1280),) * 3  # one size: a fixed profile
    notes = shape_notes("250x250:256x256:1081x1920", 4)
    assert [n.split(" rounded")[0] for n in notes] == ["min size 250x250", "max size 1081x1920"]
    assert "252x252" in notes[0] and "1084x1920" in notes[1]


@pytest.mark.parametrize(("text", "match"), [
    ("256x256:720x1280", r"has 2 sizes\. Expected min:opt:max as HxW:HxW:HxW"),
    ("256x256:720x1280:1088x1920:2000x2000", r"has 4 sizes"),
    ("256:720x1280:1088x1920", r"'256' is not a size\. Expected HEIGHTxWIDTH"),
    ("256x256:720*1280:1088x1920", r"'720\*1280' is not a size"),
    ("256x256::1088x1920", r"'' is not a size"),
    ("axb:720x1280:1088x1920", r"'axb' is not a size"),
    ("256x256:720x1280.5:1088x1920", r"'720x1280\.5' is not a size"),
    ("0x256:720x1280:1088x1920", r"the min size 0x256 is not positive\. Expected heights and widths >= 1"),
    ("256x256:-720x1280:1088x1920", r"the opt size -720x1280 is not positive"),
    ("512x512:256x256:1088x1920", r"the heights 512, 256, 1088 decrease\. Expected min <= opt <= max"),
    ("256x256:720x1280:1088x1000", r"the widths 256, 1280, 1000 decrease"),
])
def test_bad_shapes_fail_clearly(text: str, match: str) -> None:
    with pytest.raises(UsageError, match=r"^--shapes '.*': " + match):
        parse_shapes(text, 4)


def test_bad_pad_multiple() -> None:
    with pytest.raises(UsageError, match="pad_multiple: 0 is not a positive integer"):
        parse_shapes(None, 0)


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------


def _spec(**kw: Any) -> StepSpec:
    from vdeblur.export.stepgraph import FlushSpec

    states = [StateSpec("counter", "counter_next", ["N"], "int32"),
              StateSpec("hist", "hist_next", ["N", 2, 3, "Hp", "Wp"]),
              StateSpec("low", "low_next", ["N", 18, "Hp/4", "Wp/8"])]
    return StepSpec(family="x", config={}, lookahead=2, pad_multiple=16, states=states,
                    flush=FlushSpec(2, flag_input="flush"), **kw)


def test_profiles_follow_the_state_grammar_of_stepgraph() -> None:
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


def test_plugin_domain_is_the_lowering_domain() -> None:
    from vdeblur.plugins._onnx import DOMAIN

    assert engines.PLUGIN_DOMAIN == DOMAIN


def test_profile_errors() -> None:
    d = _spec().to_dict()
    d["states"][1]["shape"] = ["N", "Hq"]
    with pytest.raises(ExportError, match=r"manifest: state dimension 'Hq' is not understood"):
        input_profiles(d, DEFAULT_SHAPES)
    d = _spec().to_dict()
    d["input_names"] = ["frame", "counter"]
    with pytest.raises(ExportError, match=r"manifest: input_names \['frame', 'counter'\] do not match"):
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


# --------------------------------------------------------------------------------------------
# Cache key, flags per TensorRT version, parser errors
# --------------------------------------------------------------------------------------------

GPU = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
KEY_ARGS: dict[str, Any] = {"onnx_sha256": "ab" * 32, "precision": "fp16", "shapes": DEFAULT_SHAPES,
                            "trt_version": "10.13.0.35", "gpu": GPU}


def test_cache_key_is_stable() -> None:
    key = cache_key(**KEY_ARGS)
    assert key == cache_key(**KEY_ARGS)
    assert key == cache_key(**{**KEY_ARGS, "gpu": dict(reversed(list(GPU.items()))),
                               "shapes": [list(s) for s in DEFAULT_SHAPES]})
    assert key.startswith("fp16-") and len(key) == len("fp16-") + 20
    assert all(c.isalnum() or c in "-_" for c in key)
    assert key == cache_key(**KEY_ARGS, extra={}) != cache_key(**KEY_ARGS, extra={"workspace_bytes": 1})


@pytest.mark.parametrize(("component", "value"), [
    ("onnx_sha256", "cd" * 32),
    ("precision", "fp32"),
    ("shapes", ((256, 256), (720, 1280), (1088, 1984))),
    ("trt_version", "11.4.0"),
    ("gpu", {**GPU, "compute_capability": "9.1"}),
    ("gpu", {**GPU, "name": "NVIDIA H200"}),
])
def test_cache_key_changes_with_each_component(component: str, value: Any) -> None:
    assert cache_key(**{**KEY_ARGS, component: value}) != cache_key(**KEY_ARGS)


def _fake_tensorrt(version: str, network: tuple[str, ...], builder: tuple[str, ...]) -> SimpleNamespace:
    """A stand-in for the tensorrt module with only the attributes the version logic looks at."""
    return SimpleNamespace(
        __version__=version,
        NetworkDefinitionCreationFlag=SimpleNamespace(**{n: i for i, n in enumerate(network)}),
        BuilderFlag=SimpleNamespace(**{n: i for i, n in enumerate(builder)}),
    )


def test_flags_tensorrt_10_strongly_typed() -> None:
    trt = _fake_tensorrt("10.13.0.35", ("EXPLICIT_BATCH", "STRONGLY_TYPED"), ("FP16", "BF16", "INT8", "TF32"))
    for precision in ("fp32", "fp16", "int8"):
        flags = trt_build_flags(trt, precision)
        assert flags.strongly_typed and flags.network == ("STRONGLY_TYPED",) and flags.builder == ()
    assert flags.network_bits(trt) == 1 << 1


def test_flags_tensorrt_11() -> None:
    flags = trt_build_flags(_fake_tensorrt("11.4.0", (), ("TF32",)), "fp16")
    assert flags.strongly_typed and flags.network == () and flags.builder == ()
    assert flags.network_bits(_fake_tensorrt("11.4.0", (), ())) == 0
    assert "strongly typed without a flag" in flags.notes[0]
    flags = trt_build_flags(_fake_tensorrt("11.0.0", ("STRONGLY_TYPED",), ()), "fp16")
    assert flags.network == ("STRONGLY_TYPED",) and flags.builder == ()


def test_flags_weakly_typed_fallback() -> None:
    trt = _fake_tensorrt("10.9.0", ("EXPLICIT_BATCH",), ("FP16", "BF16", "INT8", "FP8"))
    assert trt_build_flags(trt, "fp32").builder == ()
    fp16 = trt_build_flags(trt, "fp16")
    assert not fp16.strongly_typed and fp16.builder == ("FP16",) and fp16.network == ()
    assert trt_build_flags(trt, "int8").builder == ("INT8",)
    with pytest.raises(BackendError, match=r"tensorrt 10\.9\.0: has neither strongly typed networks nor the BF16"):
        trt_build_flags(_fake_tensorrt("10.9.0", (), ("FP16",)), "bf16")


def test_flags_reject_old_tensorrt() -> None:
    with pytest.raises(BackendError, match=r"tensorrt 10\.8\.0: is too old .* Expected TensorRT >= 10\.9"):
        trt_build_flags(_fake_tensorrt("10.8.0", ("STRONGLY_TYPED",), ()))
    with pytest.raises(BackendError, match=r"tensorrt 8\.6\.1: is too old"):
        trt_build_flags(_fake_tensorrt("8.6.1", (), ()))


class _ParserError:
    """The fields of a TensorRT ParserError (parser.get_error(i))."""

    def __init__(self, code: str, desc: str, node: int = -1, name: str = "", op: str = "") -> None:
        self._v = (code, desc, node, name, op)

    def code(self) -> str:
        return self._v[0]

    def desc(self) -> str:
        return self._v[1]

    def node(self) -> int:
        return self._v[2]

    def node_name(self) -> str:
        return self._v[3]

    def node_operator(self) -> str:
        return self._v[4]


def test_parser_errors_make_one_message() -> None:
    msg = format_parser_errors([
        _ParserError("ErrorCode.UNSUPPORTED_NODE", "Plugin not found, are the plugin name, version, and namespace "
                     "correct?", 12, "node_FlowWarp_12", "FlowWarp"),
        _ParserError("ErrorCode.INVALID_GRAPH", "Graph has no output."),
    ], "art/model.trt.onnx")
    assert msg == (
        "art/model.trt.onnx: TensorRT's ONNX parser failed with 2 errors: "
        "[1] node 12 'node_FlowWarp_12' (FlowWarp): UNSUPPORTED_NODE: Plugin not found, are the plugin name, "
        "version, and namespace correct?; [2] INVALID_GRAPH: Graph has no output. "
        "Check that the graph uses the trt lowering and that TensorRT >= 10.9 with tensorrt.plugin is installed "
        "(the vdeblur plugins are registered before parsing).")
    one = format_parser_errors([_ParserError("ErrorCode.MODEL_DESERIALIZE_FAILED", "bad proto.")], "m.onnx")
    assert one.startswith("m.onnx: TensorRT's ONNX parser failed with 1 error: [1] MODEL_DESERIALIZE_FAILED: "
                          "bad proto. Check that the graph was exported")


# --------------------------------------------------------------------------------------------
# TensorRT plan (dry run, no TensorRT needed)
# --------------------------------------------------------------------------------------------


def test_tensorrt_plan_default_shapes(artifact: Path) -> None:
    p = plan(artifact, "tensorrt")
    assert isinstance(p, BuildPlan)
    assert p.onnx == str(artifact / "model.trt.onnx") and p.lowering == "trt"
    assert p.plugins == ["vdeblur::CorrelationArgmax", "vdeblur::FlowWarp"]
    assert p.shapes == {"min": [256, 256], "opt": [720, 1280], "max": [1088, 1920]}
    assert list(p.profiles) == ["frame", *STATES]
    assert p.profiles["frame"] == {"min": [1, 3, 256, 256], "opt": [1, 3, 720, 1280], "max": [1, 3, 1088, 1920]}
    assert p.profiles["counter"] == {"min": [1], "opt": [1], "max": [1]}
    assert p.profiles["frames"]["max"] == [1, 4, 3, 1088, 1920]
    assert p.profiles["r_prev"]["opt"] == [1, 3, 720, 1280]
    assert p.profiles["motion"] == {"min": [1, 16, 64, 64], "opt": [1, 16, 180, 320], "max": [1, 16, 272, 480]}
    assert p.profiles["feat"]["min"] == [1, 8, 256, 256]
    assert p.dynamic_inputs == ["frame", "frames", "r_prev", "motion", "feat"]  # counter is static (1,)
    assert p.workspace_bytes == engines.DEFAULT_WORKSPACE and p.optimization_level == 3
    assert p.outputs["timing_cache"] == str(artifact / "engines" / "tensorrt" / "timing.cache")
    if not _has_tensorrt():
        assert p.cache_key is None and p.cached is None and p.versions["tensorrt"] is None
        assert any("tensorrt is not installed" in n for n in p.notes)
    json.dumps(p.to_dict())
    assert not (artifact / "engines" / "tensorrt").exists()  # a plan writes nothing


def test_tensorrt_plan_custom_shapes(artifact: Path) -> None:
    p = plan(artifact, "tensorrt", shapes="128x128:256x256:512x512")
    assert p.shapes == {"min": [128, 128], "opt": [256, 256], "max": [512, 512]}
    assert p.profiles["frame"] == {"min": [1, 3, 128, 128], "opt": [1, 3, 256, 256], "max": [1, 3, 512, 512]}
    assert p.profiles["frames"] == {"min": [1, 4, 3, 128, 128], "opt": [1, 4, 3, 256, 256],
                                    "max": [1, 4, 3, 512, 512]}
    assert p.profiles["motion"] == {"min": [1, 16, 32, 32], "opt": [1, 16, 64, 64], "max": [1, 16, 128, 128]}
    assert p.profiles["counter"]["max"] == [1]
    # tuples work too; sizes are rounded up to the pad multiple (4) with a note
    q = plan(artifact, "tensorrt", shapes=((126, 130), (256, 256), (512, 512)))
    assert q.shapes["min"] == [128, 132] and q.profiles["feat"]["min"] == [1, 8, 128, 132]
    assert any("min size 126x130 rounded up to 128x132" in n for n in q.notes)


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


# --------------------------------------------------------------------------------------------
# TensorRT build: without TensorRT / GPU here; the real build where they exist
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(_has_tensorrt(), reason="tensorrt is installed: the missing-dependency path cannot be taken")
def test_tensorrt_build_without_tensorrt_names_the_extra(artifact_copy: Path) -> None:
    with pytest.raises(MissingDependencyError, match=r"^tensorrt: not installed, but building a TensorRT engine "
                                                     r"\(on an NVIDIA GPU\) needs it\. .*vdeblur\[tensorrt\]"):
        build(artifact_copy, "tensorrt")
    assert not (artifact_copy / "engines").exists()


def test_tensorrt_build_without_gpu_says_so(artifact_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if engines.probe_gpu()[0] is not None:
        pytest.skip("an NVIDIA GPU is visible: the no-GPU path cannot be taken")
    fake = _fake_tensorrt("10.13.0.35", ("STRONGLY_TYPED",), ("TF32",))
    monkeypatch.setitem(sys.modules, "tensorrt", fake)  # an installed TensorRT, but no GPU
    p = plan(artifact_copy, "tensorrt")
    assert p.flags == {"network": ["STRONGLY_TYPED"], "builder": []} and p.versions["tensorrt"] == "10.13.0.35"
    assert p.cache_key is None and any("no NVIDIA GPU visible" in n for n in p.notes)
    with pytest.raises(BackendError, match=r"^tensorrt: no NVIDIA GPU is visible \(.*\)\. Building a TensorRT engine "
                                           r"needs an NVIDIA GPU"):
        build(artifact_copy, "tensorrt")
    assert not (artifact_copy / "engines").exists()


def test_cache_hit_needs_matching_sidecar(tmp_path: Path) -> None:
    engine, sidecar = tmp_path / "k.plan", tmp_path / "k.json"
    data = b"engine bytes"
    assert not engines._cache_hit(engine, sidecar, "k")
    engine.write_bytes(data)
    assert not engines._cache_hit(engine, sidecar, "k")  # no sidecar: an interrupted build
    meta = {"key": "k", "engine": "k.plan", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    sidecar.write_text(json.dumps(meta))
    assert engines._cache_hit(engine, sidecar, "k")
    assert not engines._cache_hit(engine, sidecar, "other")
    engine.write_bytes(b"engine bytez")  # same size, other content
    assert not engines._cache_hit(engine, sidecar, "k")
    (tmp_path / "engines" / "tensorrt").mkdir(parents=True)
    shutil.copy(sidecar, tmp_path / "engines" / "tensorrt" / "k.json")
    assert engines.list_engines(tmp_path) == []  # sidecar without its engine
    shutil.copy(engine, tmp_path / "engines" / "tensorrt" / "k.plan")
    assert engines.list_engines(tmp_path) == [meta]


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_engine_builds_and_is_cached(artifact_copy: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (the [tensorrt] extra)")
    gpu, why = engines.probe_gpu()
    if gpu is None:
        pytest.skip(f"no NVIDIA GPU visible ({why})")
    shapes = "64x64:128x128:256x256"
    first = build(artifact_copy, "tensorrt", shapes=shapes)
    assert first["cache_hit"] is False and Path(first["engine"]).is_file()
    assert Path(first["timing_cache"]).is_file()
    sidecar = json.loads(Path(first["sidecar"]).read_text())
    assert sidecar["key"] == first["cache_key"] and sidecar["profiles"]["frame"]["max"] == [1, 3, 256, 256]
    second = build(artifact_copy, "tensorrt", shapes=shapes)
    assert second["cache_hit"] is True and second["engine"] == first["engine"]
    assert plan(artifact_copy, "tensorrt", shapes=shapes).cached is True
    other = plan(artifact_copy, "tensorrt", shapes="64x64:128x128:512x512")
    assert other.cache_key != first["cache_key"] and other.cached is False


# --------------------------------------------------------------------------------------------
# ONNX Runtime build
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ort_build(artifact: Path) -> dict[str, Any]:
    return build(artifact, "onnxruntime")


def test_ort_build_writes_the_optimised_model_and_session(artifact: Path, ort_build: dict[str, Any]) -> None:
    out = artifact / "engines" / "onnxruntime" / "fp32"
    assert _files(out) == ["model.optimized.onnx", "session.json"]  # no temporary files left
    assert ort_build["engine"] == str(out / "model.optimized.onnx")
    assert ort_build["session"] == str(out / "session.json")
    assert ort_build["cache_hit"] is False and ort_build["verified"] is True
    assert ort_build["optimization_level"] == "ORT_ENABLE_EXTENDED"
    session = json.loads((out / "session.json").read_text())
    assert session["model"] == "model.optimized.onnx"
    assert session["model_sha256"] == hashlib.sha256((out / "model.optimized.onnx").read_bytes()).hexdigest()
    assert session["source"] == {"file": "model.onnx", "sha256": hashlib.sha256(
        (artifact / "model.onnx").read_bytes()).hexdigest(), "lowering": "portable"}
    assert session["optimized_with"]["graph_optimization_level"] == "ORT_ENABLE_EXTENDED"
    assert session["session_options"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert session["session_options"]["config_entries"]["session.intra_op.allow_spinning"] == "0"
    names = [name for name, _ in session["providers"]]
    assert names[-1] == "CPUExecutionProvider" and names == session["optimized_for"]
    v = session["verification"]
    assert v == ort_build["verification"] and v["passed"] and session["fallback"] is None
    assert v["against"] == "model.onnx without graph optimisation" and "at 256x256" in v["clip"]
    assert v["psnr_db"] == "inf" or v["psnr_db"] > 60.0  # fp32: the same model, fused
    assert v["within_half_level"] > 0.999 and v["bar"] == {"min_psnr_db": 60.0, "min_within_half_level": 0.999}
    assert session["int8"] is None and session["cpu"]["arch"] and "isa" in session["cpu"]
    assert set(ort_build["timings_s"]) >= {"optimize", "verify", "total"}
    json.dumps(ort_build)


def test_ort_optimised_model_equals_the_source_graph(artifact: Path, ort_build: dict[str, Any]) -> None:
    """Open the optimised model as session.json says and stream a short clip at another size than the
    build verified; it must give the source graph's outputs."""
    import onnxruntime as ort

    from vdeblur.export.onnx import stream_onnx, validation_clip

    session = json.loads(Path(ort_build["session"]).read_text())
    opts = engines.ort_session_options(ort, session["session_options"])
    optimised = ort.InferenceSession(ort_build["engine"], opts, providers=["CPUExecutionProvider"])
    source = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    spec = StepSpec.from_dict(json.loads((artifact / "manifest.json").read_text())["interface"])
    clip = validation_clip(4, 40, 52).numpy()
    got, want = stream_onnx(optimised, spec, clip), stream_onnx(source, spec, clip)
    assert got.shape == want.shape == (1, 4, 3, 40, 52)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_ort_dry_run_and_rebuild(artifact_copy: Path) -> None:
    result = build(artifact_copy, "onnxruntime", shapes="64x64:128x128:256x256", dry_run=True)
    p = result["plan"]
    assert p["backend"] == "onnxruntime" and p["lowering"] == "portable" and p["plugins"] == []
    assert p["settings"]["verify_size"] == [64, 64] and p["outputs"]["session"].endswith("fp32/session.json")
    assert any("--shapes only sets the verification frame size" in n for n in p["notes"])
    assert not (artifact_copy / "engines").exists()
    first = build(artifact_copy, "onnxruntime", shapes="64x64:64x64:64x64")
    second = build(artifact_copy, "onnxruntime", shapes="64x64:64x64:64x64")  # replaces the files in place
    assert "at 64x64" in first["verification"]["clip"] and second["verified"]
    assert _files(artifact_copy / "engines") == ["onnxruntime/fp32/model.optimized.onnx",
                                                 "onnxruntime/fp32/session.json"]


def test_ort_failed_verification_falls_back_to_the_source_graph(artifact_copy: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An optimised model below its bar is not used: the engine is the source graph without graph
    optimisation, and the result, session.json and the runtime say so."""
    from vdeblur.contract import precision as contract_precision
    from vdeblur.runtime.stream import Stream

    monkeypatch.setitem(contract_precision.ENGINE_BARS, "fp32", contract_precision.FrameBar(float("inf"), 1.0))
    result = build(artifact_copy, "onnxruntime", shapes="64x64")
    assert result["verified"] is False and result["engine"] == str(artifact_copy / "model.onnx")
    assert "differs from the source graph (PSNR" in result["fallback"]["reason"]
    assert result["optimization_level"] == "ORT_DISABLE_ALL"
    engine_dir = artifact_copy / "engines" / "onnxruntime" / "fp32"
    assert _files(engine_dir) == ["session.json"]  # the optimised model is not kept
    session = json.loads((engine_dir / "session.json").read_text())
    assert session["model"] == "../../../model.onnx" and session["fallback"] == result["fallback"]
    assert session["session_options"]["graph_optimization_level"] == "ORT_DISABLE_ALL"
    with Stream(artifact_copy, backend="onnxruntime") as stream:
        graph = stream.backend.describe()
    assert graph["file"] == "model.onnx" and graph["built"] and "differs" in graph["fallback"]


def test_ort_rejects_a_plugin_graph(artifact_copy: Path) -> None:
    data = json.loads((artifact_copy / "manifest.json").read_text())
    for g in data["graphs"]:  # swap the roles: the trt graph listed as the portable one
        g["lowering"] = "portable" if g["lowering"] == "trt" else "trt"
    (artifact_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(VdeblurError, match=r"model\.trt\.onnx: has vdeblur plugin nodes "
                                           r"\(vdeblur::CorrelationArgmax, vdeblur::FlowWarp\), which ONNX Runtime"):
        build(artifact_copy, "onnxruntime")
