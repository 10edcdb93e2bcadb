"""`vdeblur bench`: latency, throughput, memory and fidelity per (backend, precision), side by side.

Every combination streams the same synthetic frames (a textured scene under camera motion) through
a :class:`~vdeblur.runtime.stream.Stream`: ``warmup`` frames first (not timed), then ``frames``
timed pushes. Per-frame latency is the wall time of one ``push`` (one step of the graph, including
the frame's upload and the output's download). PSNR is measured against the fp32 torch reference
(the model code itself) on the same timed frames. Peak memory is the process's peak resident set
during the combination (Linux VmHWM, reset before each one). Combinations the machine cannot run
are listed as skipped with the reason.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.errors import UsageError, VdeblurError
from vdeblur.runtime.run import percentiles_ms

Progress = Callable[[str, float], None]
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")


def machine() -> dict[str, Any]:
    """A description of this machine for the results."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        mem = Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]
        info["memory_gb"] = round(int(mem) / 2**20, 1)
    except (OSError, IndexError):
        pass
    gpus = sorted(p.name for p in Path("/dev").glob("nvidia[0-9]*"))
    info["gpu"] = f"{len(gpus)} NVIDIA device(s)" if gpus else None
    return info


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024.0
    except (OSError, IndexError, ValueError):
        return None


def _is_artifact(target: str | Path) -> bool:
    return (Path(target) / "manifest.json").is_file()


def prepare_artifact(target: str, workdir: Path, precisions: list[str], height: int, width: int) -> Path:
    """An artifact for ``target``: itself if it is one, else a random-weight export of the model."""
    if _is_artifact(target):
        return Path(target)
    from vdeblur.export.artifact import export_artifact
    from vdeblur.runtime.synthetic import moving_texture
    from vdeblur.runtime.video import encode_png

    wanted = [p for p in precisions if p in ("fp32", "fp16", "bf16", "int8")]
    calibration = None
    if "int8" in wanted:
        calibration = workdir / "calibration"
        calibration.mkdir()
        for i, f in enumerate(moving_texture(8, height, width, seed=7)):
            (calibration / f"{i:04d}.png").write_bytes(encode_png((f.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)))
    out = workdir / "artifact"
    export_artifact(target, out, precisions=wanted or ["fp32"], calibration=calibration,
                    height=min(height, 256), width=min(width, 256), frames=3)
    return out


def _stream_frames(stream: Any, frames: np.ndarray, warmup: int) -> tuple[list[float], np.ndarray]:
    latencies: list[float] = []
    outputs: dict[int, np.ndarray] = {}
    for i, f in enumerate(frames):
        t = time.perf_counter()
        ready = stream.push(f)
        dt = time.perf_counter() - t
        if i >= warmup:
            latencies.append(dt)
        outputs.update(ready)
    outputs.update(stream.flush())
    return latencies, np.stack([outputs[i] for i in range(warmup, len(frames))])


def bench(target: str | Path, backends: list[str], precisions: list[str], height: int = 360, width: int = 640,
          frames: int = 20, warmup: int = 3, device: str = "auto", report: str | Path | None = None,
          progress: Progress | None = None) -> dict[str, Any]:
    """Benchmark ``target`` (an artifact directory or a model name) on each (backend, precision)."""
    from vdeblur.metrics import json_safe, psnr
    from vdeblur.runtime.stream import Stream
    from vdeblur.runtime.synthetic import moving_texture

    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise UsageError(f"bench: precision {', '.join(bad)} is unknown. Expected some of {', '.join(PRECISIONS)}.")
    if frames < 1 or warmup < 0:
        raise UsageError(
            f"bench: --frames {frames} / --warmup {warmup} are invalid. Expected frames >= 1, warmup >= 0."
        )
    if height < 16 or width < 16:
        raise UsageError(f"bench: {width}x{height} is too small. Expected at least 16x16.")
    say = progress or (lambda stage, fraction: None)
    workdir = Path(tempfile.mkdtemp(prefix="vdeblur-bench-"))
    try:
        say("preparing the artifact", 0.0)
        artifact = prepare_artifact(str(target), workdir, precisions, height, width)
        clip = np.ascontiguousarray(moving_texture(warmup + frames, height, width).transpose(0, 2, 3, 1))
        say("fp32 torch reference", 0.05)
        reference: np.ndarray | None = None
        reference_error = None
        try:
            with Stream(artifact, backend="torch") as s:
                _, reference = _stream_frames(s, clip, warmup)
        except VdeblurError as e:
            reference_error = str(e)
        combos = [(b, p) for b in backends for p in precisions]
        results = []
        for k, (backend, precision) in enumerate(combos):
            say(f"{backend} {precision}", 0.1 + 0.9 * k / len(combos))
            row: dict[str, Any] = {"backend": backend, "precision": precision, "latency_ms": None, "fps": None,
                                   "peak_memory_mb": None, "psnr_db": None, "skipped": None}
            if backend == "torch" and precision != "fp32":
                row["skipped"] = "the torch backend runs the fp32 reference only"
                results.append(row)
                continue
            try:
                _reset_peak_rss()
                with Stream(artifact, backend=backend, precision=precision, device=device) as s:
                    started = time.perf_counter()
                    latencies, outputs = _stream_frames(s, clip, warmup)
                    elapsed = time.perf_counter() - started
            except Exception as e:  # noqa: BLE001 - report what cannot run here, with the reason
                row["skipped"] = _reason(e)
                results.append(row)
                continue
            row["latency_ms"] = percentiles_ms(latencies)
            row["fps"] = len(latencies) / sum(latencies)
            row["wall_s"] = round(elapsed, 3)
            row["peak_memory_mb"] = _peak_rss_mb()
            row["psnr_db"] = json_safe(psnr(outputs, reference)) if reference is not None else None
            results.append(row)
        _add_ratios(results)
        payload = {
            "results": results,
            "machine": machine(),
            "config": {"target": str(target), "artifact": str(artifact) if _is_artifact(target) else None,
                       "model": _model_info(artifact), "height": height, "width": width, "frames": frames,
                       "warmup": warmup, "device": device, "reference": "torch fp32 (model code)",
                       "reference_error": reference_error, "threads": _threads()},
        }
        if report is not None:
            write_report(payload, Path(report))
        say("done", 1.0)
        return payload
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if isinstance(e, VdeblurError) else f"{type(e).__name__}: {text}"


def _threads() -> dict[str, Any]:
    return {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if os.environ.get(k)}


def _model_info(artifact: Path) -> dict[str, Any]:
    m = json.loads((artifact / "manifest.json").read_text())
    return {k: m["model"].get(k) for k in ("family", "preset", "config", "random_weights")}


def _add_ratios(results: list[dict[str, Any]]) -> None:
    """speedup_vs_torch_fp32: torch fp32 p50 latency / this p50 latency, from the same run."""
    base = next((r for r in results if r["backend"] == "torch" and r["precision"] == "fp32" and r["latency_ms"]), None)
    for r in results:
        r["speedup_vs_torch_fp32"] = (
            base["latency_ms"]["p50"] / r["latency_ms"]["p50"] if base and r["latency_ms"] else None
        )


def format_table(payload: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    cfg = payload["config"]
    lines = [
        f"# vdeblur bench: {cfg['target']} at {cfg['width']}x{cfg['height']}",
        "",
        f"{cfg['frames']} timed frames after {cfg['warmup']} warm-up frames; PSNR against {cfg['reference']}. "
        f"Machine: {payload['machine'].get('cpu')}, {payload['machine'].get('cores')} cores.",
        "",
        "| backend | precision | p50 ms | p90 ms | p99 ms | mean ms | fps | peak MB | PSNR dB | vs torch fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["results"]:
        if r["skipped"]:
            lines.append(f"| {r['backend']} | {r['precision']} | skipped: {r['skipped']} |||||||||")
            continue
        lat = r["latency_ms"]
        psnr = r["psnr_db"]
        psnr_s = "-" if psnr is None else (psnr if isinstance(psnr, str) else f"{psnr:.2f}")
        ratio = f"{r['speedup_vs_torch_fp32']:.2f}x" if r.get("speedup_vs_torch_fp32") else "-"
        peak = f"{r['peak_memory_mb']:.0f}" if r["peak_memory_mb"] else "-"
        lines.append(f"| {r['backend']} | {r['precision']} | {lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} | "
                     f"{lat['mean']:.1f} | {r['fps']:.2f} | {peak} | {psnr_s} | {ratio} |")
    return "\n".join(lines) + "\n"


def write_report(payload: dict[str, Any], directory: Path) -> list[Path]:
    """DIR/results.md, DIR/results.json and DIR/latency_vs_psnr.png (needs matplotlib: extra [bench])."""
    from vdeblur.errors import missing_dependency

    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "results.md", directory / "results.json"]
    written[0].write_text(format_table(payload))
    written[1].write_text(json.dumps(payload, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise missing_dependency("matplotlib", "bench", "the --report plot") from e
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for r in payload["results"]:
        if r["skipped"] or r["psnr_db"] is None:
            continue
        y = 100.0 if r["psnr_db"] == "inf" else min(float(r["psnr_db"]), 100.0)
        ax.scatter(r["latency_ms"]["p50"], y, s=40)
        ax.annotate(f"{r['backend']} {r['precision']}", (r["latency_ms"]["p50"], y), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    cfg = payload["config"]
    ax.set_xlabel("latency p50 (ms per frame)")
    ax.set_ylabel("PSNR vs torch fp32 (dB, capped at 100)")
    ax.set_title(f"{cfg['target']} at {cfg['width']}x{cfg['height']}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    plot = directory / "latency_vs_psnr.png"
    fig.savefig(plot)
    plt.close(fig)
    return [*written, plot]
