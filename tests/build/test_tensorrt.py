"""vdeblur.build.tensorrt: flags per TensorRT version, parser messages, the plan, the GPU probe.

The TensorRT build itself needs TensorRT and an NVIDIA GPU (marked, skipped when absent); every
piece of logic around it is tested here without them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vdeblur.build import BuildPlan, build, plan, trt_build_flags
from vdeblur.build import tensorrt as build_trt
from vdeblur.build.tensorrt import format_parser_errors
from vdeblur.contract.device import nvidia_gpus
from vdeblur.errors import BackendError, MissingDependencyError

STATES = ["counter", "frames", "r_prev", "motion", "feat"]


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _fake_tensorrt(version: str, network: tuple[str, ...], builder: tuple[str, ...]) -> SimpleNamespace:
    """A stand-in for the tensorrt module with only the attributes the version logic looks at."""
    return SimpleNamespace(
        __version__=version,
        NetworkDefinitionCreationFlag=SimpleNamespace(**{n: i for i, n in enumerate(network)}),
        BuilderFlag=SimpleNamespace(**{n: i for i, n in enumerate(builder)}),
    )


# --------------------------------------------------------------------------------------------
# Flags per TensorRT version, parser errors
# --------------------------------------------------------------------------------------------


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
# The GPU probe (the CUDA driver through ctypes, here on a fake libcuda)
# --------------------------------------------------------------------------------------------


class _FakeLibcuda:
    """cuInit / cuDeviceGet* of a driver with the given devices (name, major, minor)."""

    def __init__(self, devices: list[tuple[str, int, int]], init: int = 0) -> None:
        self.devices, self.init = devices, init

    def cuInit(self, flags: int) -> int:  # noqa: N802 - the driver's names
        return self.init

    def cuDeviceGetCount(self, count: Any) -> int:  # noqa: N802
        count._obj.value = len(self.devices)
        return 0

    def cuDeviceGet(self, dev: Any, ordinal: int) -> int:  # noqa: N802
        dev._obj.value = ordinal
        return 0

    def cuDeviceGetName(self, buf: Any, length: Any, dev: Any) -> int:  # noqa: N802
        buf.value = self.devices[dev.value][0].encode()
        return 0

    def cuDeviceGetAttribute(self, value: Any, attribute: int, dev: Any) -> int:  # noqa: N802
        value._obj.value = self.devices[dev.value][1 if attribute == 75 else 2]
        return 0

    def cuGetErrorName(self, status: int, name: Any) -> int:  # noqa: N802
        name._obj.value = b"CUDA_ERROR_NO_DEVICE"
        return 0


def test_nvidia_gpus_reads_the_driver() -> None:
    lib = _FakeLibcuda([("NVIDIA H100 80GB HBM3", 9, 0), ("NVIDIA L4", 8, 9)])
    assert nvidia_gpus(lib) == ([{"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
                                 {"name": "NVIDIA L4", "compute_capability": "8.9"}], "")
    assert nvidia_gpus(_FakeLibcuda([])) == ([], "the CUDA driver reports no device")
    assert nvidia_gpus(_FakeLibcuda([], init=100)) == (
        [], "the CUDA driver does not initialise (CUDA_ERROR_NO_DEVICE)")


def test_probe_gpu_takes_device_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_trt, "nvidia_gpus", lambda: ([{"name": "A", "compute_capability": "8.0"},
                                                             {"name": "B", "compute_capability": "9.0"}], ""))
    assert build_trt.probe_gpu() == ({"name": "A", "compute_capability": "8.0"}, "")
    monkeypatch.setattr(build_trt, "nvidia_gpus", lambda: ([], "no driver"))
    assert build_trt.probe_gpu() == (None, "no driver")


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
    assert p.workspace_bytes == build_trt.DEFAULT_WORKSPACE and p.optimization_level == 3
    assert p.engine_dir == str(artifact / "engines" / "tensorrt" / "fp32")
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


def test_tensorrt_plan_with_tensorrt_and_a_gpu(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With TensorRT and a GPU the plan knows the cache key, the engine files and whether they are cached."""
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("10.13.0.35", ("STRONGLY_TYPED",), ()))
    gpu = {"name": "NVIDIA H100", "compute_capability": "9.0"}
    monkeypatch.setattr(build_trt, "nvidia_gpus", lambda: ([gpu], ""))
    p = plan(artifact, "tensorrt", shapes="64x64")
    assert p.gpu == gpu and p.cache_key is not None and p.cache_key.startswith("fp32-") and p.cached is False
    engine_dir = artifact / "engines" / "tensorrt" / "fp32"
    assert p.outputs["engine"] == str(engine_dir / f"{p.cache_key}.plan")
    assert p.outputs["sidecar"] == str(engine_dir / f"{p.cache_key}.json")
    assert p.cache_key != plan(artifact, "tensorrt", shapes="64x64:64x64:128x128").cache_key
    assert not engine_dir.exists()


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
    monkeypatch.setattr(build_trt, "nvidia_gpus", lambda: ([], "the CUDA driver reports no device"))
    fake = _fake_tensorrt("10.13.0.35", ("STRONGLY_TYPED",), ("TF32",))
    monkeypatch.setitem(sys.modules, "tensorrt", fake)  # an installed TensorRT, but no GPU
    p = plan(artifact_copy, "tensorrt")
    assert p.flags == {"network": ["STRONGLY_TYPED"], "builder": []} and p.versions["tensorrt"] == "10.13.0.35"
    assert p.cache_key is None and any("no NVIDIA GPU visible (the CUDA driver reports" in n for n in p.notes)
    with pytest.raises(BackendError, match=r"^tensorrt: no NVIDIA GPU is visible \(.*\)\. Building a TensorRT engine "
                                           r"needs an NVIDIA GPU"):
        build(artifact_copy, "tensorrt")
    assert not (artifact_copy / "engines").exists()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_engine_builds_and_is_cached(artifact_copy: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (the [tensorrt] extra)")
    gpu, why = build_trt.probe_gpu()
    if gpu is None:
        pytest.skip(f"no NVIDIA GPU visible ({why})")
    from vdeblur.contract.engines import find_engine, list_engines

    shapes = "64x64:128x128:256x256"
    first = build(artifact_copy, "tensorrt", shapes=shapes)
    assert first["cache_hit"] is False and Path(first["engine"]).is_file()
    assert Path(first["engine"]).parent == artifact_copy / "engines" / "tensorrt" / "fp32"
    assert Path(first["timing_cache"]).is_file()
    sidecar = json.loads(Path(first["sidecar"]).read_text())
    assert sidecar["key"] == first["cache_key"] and sidecar["profiles"]["frame"]["max"] == [1, 3, 256, 256]
    assert list_engines(artifact_copy) == [sidecar]
    found = find_engine(artifact_copy, "fp32", sidecar["onnx"]["sha256"], trt_version=sidecar["tensorrt"], gpu=gpu,
                        shapes=((64, 64), (128, 128), (256, 256)))
    assert found is not None and str(found[0]) == first["engine"]
    second = build(artifact_copy, "tensorrt", shapes=shapes)
    assert second["cache_hit"] is True and second["engine"] == first["engine"]
    assert plan(artifact_copy, "tensorrt", shapes=shapes).cached is True
    other = plan(artifact_copy, "tensorrt", shapes="64x64:128x128:512x512")
    assert other.cache_key != first["cache_key"] and other.cached is False
