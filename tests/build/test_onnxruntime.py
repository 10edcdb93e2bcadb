"""vdeblur.build.onnxruntime: the optimised model, session.json, the frame verification and its
fallback, and what the runtime makes of them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vdeblur.build import build
from vdeblur.build import onnxruntime as build_ort
from vdeblur.contract.engines import ort_session_options
from vdeblur.contract.interface import StepSpec
from vdeblur.errors import VdeblurError


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


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
    assert session["format_version"] == 1 and session["model"] == "model.optimized.onnx"
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
    assert v["against"] == "model.onnx without graph optimisation"
    assert v["clip"] == "synthetic moving texture, 6 output frames at 256x256"  # lookahead 2 + 4 frames
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
    opts = ort_session_options(ort, session["session_options"])
    optimised = ort.InferenceSession(ort_build["engine"], opts, providers=["CPUExecutionProvider"])
    source = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    spec = StepSpec.from_dict(json.loads((artifact / "manifest.json").read_text())["interface"])
    clip = validation_clip(4, 40, 52).numpy()
    got, want = stream_onnx(optimised, spec, clip), stream_onnx(source, spec, clip)
    assert got.shape == want.shape == (1, 4, 3, 40, 52)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_verification_streams_like_the_runtime(artifact: Path, ort_build: dict[str, Any]) -> None:
    """The build's verification frames are what the runtime backend outputs for the same clip."""
    from vdeblur.build import plan
    from vdeblur.data.texture import moving_texture
    from vdeblur.runtime.stream import Stream

    p = plan(artifact, "onnxruntime", shapes="64x64")
    settings = json.loads(Path(ort_build["session"]).read_text())
    got, want = build_ort.verify_frames(p, Path(ort_build["engine"]), settings["providers"],
                                        settings["session_options"])
    assert got.shape == want.shape == (6, 3, 64, 64) and got.dtype == np.float32
    frames = moving_texture(6, 64, 64, seed=build_ort.VERIFY_SEED).transpose(0, 2, 3, 1)
    with Stream(artifact, backend="onnxruntime") as stream:  # opens the built engine
        assert stream.backend.describe()["built"] is True
        out = {i: o for f in frames for i, o in stream.push(np.ascontiguousarray(f))}
        out.update(stream.flush())
    streamed = np.stack([out[i] for i in range(6)]).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(streamed, np.clip(got, 0, 1), atol=1e-5, rtol=0)


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


def test_ort_failed_build_leaves_nothing(artifact_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(build_ort, "verify_frames", broken)
    with pytest.raises(RuntimeError, match="boom"):
        build(artifact_copy, "onnxruntime", shapes="64x64")
    assert not (artifact_copy / "engines").exists()  # the temporary model and the new directories are gone


def test_ort_rejects_a_plugin_graph(artifact_copy: Path) -> None:
    data = json.loads((artifact_copy / "manifest.json").read_text())
    for g in data["graphs"]:  # swap the roles: the trt graph listed as the portable one
        g["lowering"] = "portable" if g["lowering"] == "trt" else "trt"
    (artifact_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(VdeblurError, match=r"model\.trt\.onnx: has vdeblur plugin nodes "
                                           r"\(vdeblur::CorrelationArgmax, vdeblur::FlowWarp\), which ONNX Runtime"):
        build(artifact_copy, "onnxruntime")
