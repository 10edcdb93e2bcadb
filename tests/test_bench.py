"""`vdeblur bench`: the JSON schema, skipped combinations, PSNR vs the torch reference, the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vdeblur.bench import bench
from vdeblur.errors import UsageError

LATENCY_KEYS = {"min", "p50", "p90", "p99", "max", "mean", "std", "iqr"}


def test_bench_schema_and_skips(mtu_artifact: Path, tmp_path: Path) -> None:
    payload = bench(mtu_artifact, ["torch", "onnxruntime", "tensorrt"], ["fp32", "int8"], height=28, width=36,
                    frames=3, warmup=2, report=tmp_path / "report")
    assert set(payload) == {"results", "machine", "config"}
    rows = {(r["backend"], r["precision"]): r for r in payload["results"]}
    assert set(rows) == {(b, p) for b in ("torch", "onnxruntime", "tensorrt") for p in ("fp32", "int8")}
    for r in payload["results"]:
        assert {"backend", "precision", "latency_ms", "fps", "memory_mb", "psnr_db", "skipped", "graph"} <= set(r)
    for key in [("torch", "fp32"), ("onnxruntime", "fp32")]:
        r = rows[key]
        assert r["skipped"] is None and set(r["latency_ms"]) == LATENCY_KEYS and r["fps"] > 0
        assert r["latency_ms"]["min"] <= r["latency_ms"]["p50"] <= r["latency_ms"]["max"]
    assert rows[("torch", "fp32")]["psnr_db"] == "inf"  # the reference against itself
    psnr = rows[("onnxruntime", "fp32")]["psnr_db"]
    assert psnr == "inf" or psnr >= 50.0
    assert "fp32 reference only" in rows[("torch", "int8")]["skipped"]
    assert "no int8 graph" in rows[("onnxruntime", "int8")]["skipped"]
    assert "tensorrt" in rows[("tensorrt", "fp32")]["skipped"]
    assert rows[("torch", "fp32")]["speedup_vs_torch_fp32"] == pytest.approx(1.0)
    assert payload["config"]["height"] == 28 and payload["machine"]["cores"]
    cpu = payload["machine"]["cpu_info"]
    assert cpu["model"] and cpu["arch"] and isinstance(cpu["isa"], list) and isinstance(cpu["vnni"], bool)
    assert "load_average_before" in payload["machine"] and "load_average_after" in payload["machine"]
    assert payload["config"]["threads"]["intra_op"] >= 1 and payload["config"]["interleaved"] is True
    assert rows[("onnxruntime", "fp32")]["graph"]["file"] == "model.onnx"  # not built: said so
    assert rows[("torch", "fp32")]["graph"]["file"] is None
    spread = rows[("onnxruntime", "fp32")]["speedup_per_frame"]
    assert spread["p25"] <= spread["p50"] <= spread["p75"]
    report = tmp_path / "report"
    assert "| onnxruntime | fp32 |" in (report / "results.md").read_text()
    assert json.loads((report / "results.json").read_text())["config"]["width"] == 36
    assert (report / "latency_vs_psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_cli_json(mmprnn_artifact: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vdeblur", "bench", str(mmprnn_artifact), "--backends", "onnxruntime",
         "--precisions", "fp32", "--height", "32", "--width", "48", "--frames", "2", "--warmup", "1", "--json"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    (row,) = payload["results"]
    assert row["backend"] == "onnxruntime" and row["skipped"] is None


@pytest.mark.slow
def test_bench_a_model_name_exports_it(tmp_path: Path) -> None:
    payload = bench("mmprnn_a3b4c16", ["onnxruntime"], ["fp32", "fp16"], height=32, width=32, frames=2, warmup=1)
    rows = {r["precision"]: r for r in payload["results"]}
    assert rows["fp32"]["skipped"] is None and rows["fp16"]["skipped"] is None
    assert rows["fp16"]["psnr_db"] == "inf" or rows["fp16"]["psnr_db"] > 25.0
    assert payload["config"]["model"]["random_weights"] is True


def test_bench_bad_inputs(mtu_artifact: Path) -> None:
    with pytest.raises(UsageError, match="precision fp4 is unknown"):
        bench(mtu_artifact, ["onnxruntime"], ["fp4"])
    with pytest.raises(UsageError, match="--frames 0"):
        bench(mtu_artifact, ["onnxruntime"], ["fp32"], frames=0)


def test_bench_interleaves_the_combinations_frame_by_frame(mtu_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After every combination's warm-up, timed frame k goes through every combination before frame
    k + 1, in a rotating order; threads are pinned for both backends."""
    from vdeblur.runtime.stream import Stream

    calls: list[tuple[str, int]] = []
    push = Stream.push

    def spy(self: Stream, frame: np.ndarray) -> list:
        calls.append((self.backend.name, int(round(float(frame[0, 0, 0]) * 1e6))))
        return push(self, frame)

    monkeypatch.setattr(Stream, "push", spy)
    payload = bench(mtu_artifact, ["torch", "onnxruntime"], ["fp32"], height=24, width=32, frames=4, warmup=2,
                    threads=1)
    assert payload["config"]["threads"]["intra_op"] == 1
    assert all(r["graph"]["threads"] == 1 for r in payload["results"])
    names = [name for name, _ in calls]
    # bench's own calls (the torch reference is the torch combination: no extra stream)
    assert names[:4] == ["torch", "torch", "onnxruntime", "onnxruntime"]  # warm-up, per combination
    timed = names[4:]
    assert len(timed) == 8 and all(set(timed[i:i + 2]) == {"torch", "onnxruntime"} for i in range(0, 8, 2))
    assert timed[0::2] != ["torch"] * 4  # the order rotates
    frames = [f for _, f in calls[4:]]
    assert frames[0] == frames[1] and frames[2] == frames[3] and frames[0] != frames[2]


def test_bench_skips_only_what_cannot_run_here(mtu_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A VdeblurError (no graph, no GPU) is a skipped row; any other exception is a bug and propagates."""
    from vdeblur.runtime.backends import onnxruntime as ort_backend

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the backend")

    monkeypatch.setattr(ort_backend, "open", broken)
    with pytest.raises(RuntimeError, match="a bug in the backend"):
        bench(mtu_artifact, ["onnxruntime"], ["fp32"], height=24, width=32, frames=1, warmup=0)
