"""int8 on CPUs without VNNI, made visible on any machine by forcing the CPU flags
(VDEBLUR_CPU_FLAGS): an artifact with full-range (8-bit) int8 weights runs its Q/DQ in float there,
built or not, and says so; the default 7-bit artifact keeps the fast integer kernels everywhere."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import MMPRNN
from vdeblur.build import build
from vdeblur.contract.device import arch
from vdeblur.data.texture import moving_texture
from vdeblur.export.artifact import export_artifact
from vdeblur.metrics import psnr
from vdeblur.runtime.stream import Stream

AVX2_ONLY = "sse4_2,avx,avx2,fma,f16c"
pytestmark = pytest.mark.skipif(arch() != "x86_64", reason="the U8S8 saturation is an x86-64 matter")


@pytest.fixture(scope="module")
def full_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("int8cpu")
    calib = np.round(moving_texture(6, 32, 48, seed=5) * 255) / np.float32(255)  # 8-bit frames
    out = root / "art"
    # Exported on an AVX2-only CPU: the validation runs the graph as the runtime will there (float Q/DQ),
    # so the variant is judged, not the saturating kernels, and it passes its bar.
    saved = os.environ.get("VDEBLUR_CPU_FLAGS")
    os.environ["VDEBLUR_CPU_FLAGS"] = AVX2_ONLY
    try:
        report = export_artifact("mmprnn_a3b4c16", out, overrides=MMPRNN, height=32, width=48, frames=3,
                                 precisions=["int8"], calibration=calib, int8_weights="full")
    finally:
        if saved is None:
            del os.environ["VDEBLUR_CPU_FLAGS"]
        else:
            os.environ["VDEBLUR_CPU_FLAGS"] = saved
    int8 = report["validation"]["results"]["int8"]
    assert int8["quantization"]["weight_bits"] == 8 and int8["passed"] is True
    assert "validated as float Q/DQ" in int8["notes"]
    return out


def _really_saturates(monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether this machine's own CPU (flags not forced) saturates U8S8 kernels."""
    from vdeblur.contract.device import int8_saturates

    with monkeypatch.context() as m:
        m.delenv("VDEBLUR_CPU_FLAGS", raising=False)
        return int8_saturates()


def _stream(artifact: Path, backend: str, precision: str) -> tuple[np.ndarray, dict]:
    clip = np.ascontiguousarray(moving_texture(6, 32, 48, seed=2).transpose(0, 2, 3, 1))
    with Stream(artifact, backend=backend, precision=precision) as s:
        got: dict[int, np.ndarray] = {}
        for f in clip:
            got.update(s.push(f))
        got.update(s.flush())
        graph = s.backend.describe()
    return np.stack([got[i] for i in range(len(clip))]), graph


def test_unbuilt_full_range_int8_runs_as_float_qdq_without_vnni(full_int8: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    reference, _ = _stream(full_int8, "torch", "fp32")
    monkeypatch.setenv("VDEBLUR_CPU_FLAGS", AVX2_ONLY)
    out, graph = _stream(full_int8, "onnxruntime", "int8")
    assert graph["file"] == "model.int8.onnx" and graph["built"] is False
    assert any("float Q/DQ" in n for n in graph["notes"]) and any("not built" in n for n in graph["notes"])
    assert psnr(out, reference) >= 45.0
    monkeypatch.setenv("VDEBLUR_CPU_FLAGS", "avx2,avx512f,avx512_vnni")
    _, graph = _stream(full_int8, "onnxruntime", "int8")
    assert not any("float Q/DQ" in n for n in graph["notes"])  # VNNI: the integer kernels are right


def test_build_records_the_choice_and_a_foreign_engine_is_not_used(full_int8: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    art = tmp_path / "art"
    shutil.copytree(full_int8, art)
    # Built on a VNNI CPU: fused integer kernels, 8-bit weights.
    monkeypatch.setenv("VDEBLUR_CPU_FLAGS", "avx2,avx512f,avx512_vnni")
    vnni = build(art, "onnxruntime", precision="int8", shapes="32x48")
    assert vnni["int8"]["disable_quant_qdq"] is False and vnni["cpu"]["vnni"] is True
    # On a real CPU without VNNI the forced flags lie to vdeblur but not to ONNX Runtime's kernels: the
    # build's frame check may then catch the saturation and fall back. On a VNNI CPU it must verify.
    assert vnni["verified"] or _really_saturates(monkeypatch)
    # The same engine on an AVX2-only CPU would saturate: the runtime does not use it and says why.
    monkeypatch.setenv("VDEBLUR_CPU_FLAGS", AVX2_ONLY)
    _, graph = _stream(art, "onnxruntime", "int8")
    assert graph["built"] is False and any("rebuild it here" in n for n in graph["notes"])
    # Rebuilt on the AVX2-only CPU: float Q/DQ, recorded in session.json and used.
    avx2 = build(art, "onnxruntime", precision="int8", shapes="32x48")
    assert avx2["verified"] and avx2["int8"]["disable_quant_qdq"] is True and avx2["cpu"]["vnni"] is False
    session = json.loads(Path(avx2["session"]).read_text())
    assert session["session_options"]["config_entries"]["session.disable_quant_qdq"] == "1"
    _, graph = _stream(art, "onnxruntime", "int8")
    assert graph["built"] is True and graph["file"] == "engines/onnxruntime/int8/model.optimized.onnx"
