"""benchmarks/gpu_check.py on this machine: its CPU smoke run (--dry-run) and its refusal without CUDA.

The smoke run goes through every section at tiny sizes (kernels in Triton's interpreter) in a
subprocess where the modules that are absent on the GPU machine it is written for cannot be
imported (PyAV, scikit-image, Pillow, safetensors, onnxscript, matplotlib, TensorRT, pycuda; onnx
and ONNX Runtime too, which the script does not need): it proves the script and the vdeblur
modules it imports need none of them. What it cannot show here: CUDA events, CUDA-graph capture,
the kernels compiled for a real GPU and the 720p figures (run it on a GPU).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
BLOCKED = ("av", "skimage", "PIL", "safetensors", "onnxscript", "matplotlib", "tensorrt", "tensorrt_rtx",
           "tensorrt_bindings", "pycuda", "polygraphy", "modelopt", "onnx", "onnxruntime")


def run_script(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The script in a fresh interpreter in which importing any BLOCKED module fails."""
    wrapper = (f"import runpy, sys; sys.modules.update(dict.fromkeys({BLOCKED!r})); "
               f"sys.argv = [{str(SCRIPT)!r}, *{list(argv)!r}]; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "VDEBLUR_CPU_KERNELS")}
    return subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO, check=False)


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the module level imports the standard library only
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("gpu_check")
    proc = run_script("--dry-run", "--out-dir", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc, json.loads((out / "gpu_check_cpu-dry-run.json").read_text())


def test_the_smoke_run_writes_every_section(dry_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    from vdeblur.plugins import specs

    proc, data = dry_run
    assert "Traceback" not in proc.stderr
    assert data["schema"] == "vdeblur.gpu_check/1" and data["mode"] == "dry-run" and data["ok"] is True
    assert data["errors"] == []
    assert {"gpu", "compute_capability", "driver", "torch", "triton", "cpu", "torch_cuda"} <= set(data["machine"])
    assert data["budget_s"] > 0 and 0 < data["elapsed_s"] < data["budget_s"]

    kernels = data["kernels"]
    ran = {(r["op"], r["dtype"]) for r in kernels["results"]}
    assert ran == {(name, d) for name in specs() for d in ("float32", "float16")}
    for r in kernels["results"]:
        assert r["ok"] and r["fraction_within"] >= r["tolerance"]["fraction"], r
        assert {"case", "shapes", "attrs", "max_abs_err", "output_dtype"} <= set(r)
    # mtu2's op calls were captured from the model, and the ops are timed at those shapes.
    assert {c["op"] for c in data["op_calls_mtu2"]} == {"correlation_argmax", "flow_warp"}
    timing = data["kernel_timing"]
    assert {(r["op"], r["dtype"]) for r in timing["results"]} == ran
    for r in timing["results"]:
        assert r["kernel_ms"] > 0 and r["reference_ms"] > 0 and r["runs"] >= 1
        assert r["reference_over_kernel"] == pytest.approx(r["reference_ms"] / r["kernel_ms"])
    assert timing["timer"] == "perf_counter"

    latency = data["latency"]
    modes = {(r["family"], r["mode"]) for r in latency["results"]}
    assert modes == {(f, m) for f in ("mtu2", "mmprnn_a7b8c16") for m in ("fp32 eager", "fp16 eager")}
    for r in latency["results"]:
        assert r["frames_timed"] == data["settings"]["timed_frames"] and r["step_ms_median"] > 0
        assert r["cuda_graph"] is False and r["frame"] == [data["settings"]["width"], data["settings"]["height"]]
    for q in latency["quality"]:
        assert q["mode"] == "fp16 eager" and q["against"] == "fp32 eager"
        assert isinstance(q["psnr_db_mean"], float) and q["psnr_db_mean"] > 40, q
    assert latency["notes"] == ["CUDA graphs not tried (CPU run)"]
    assert all(s["skipped"] == [] for s in (kernels, timing, latency))


def test_the_smoke_run_imports_nothing_absent_on_the_gpu_machine(
        dry_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    _, data = dry_run
    assert data["imports"]["absent_on_target_but_imported"] == []
    imported = set(data["imports"]["vdeblur"])
    assert {"vdeblur.models.mtu", "vdeblur.plugins.torchop", "vdeblur.data.texture", "vdeblur.metrics"} <= imported
    assert not any(m.startswith(("vdeblur.export", "vdeblur.runtime", "vdeblur.build")) for m in imported)


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None and __import__("torch").cuda.is_available(),
                    reason="a CUDA device is present: the script would run")
def test_without_cuda_the_script_says_so_and_exits_2(tmp_path: Path) -> None:
    proc = run_script("--out-dir", str(tmp_path), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "gpu_check: no CUDA device is visible to PyTorch" in proc.stderr
    assert "Expected an NVIDIA GPU" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_helpers() -> None:
    gc = load_script()
    assert gc.gpu_slug("NVIDIA H200") == "nvidia-h200" and gc.gpu_slug(None) == "unknown-gpu"
    assert gc.plain({"a": (1, float("inf")), "b": float("nan"), 3: None}) == {"a": [1, "inf"], "b": "nan", "3": None}
    timer = gc.Timer(__import__("torch"), "cpu")
    calls: list[str] = []
    t = timer.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1,
                          deadline=float("inf"))
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B, B A, A B
    assert t["a"]["runs"] == t["b"]["runs"] == 3
