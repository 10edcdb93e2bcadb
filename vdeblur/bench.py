"""`vdeblur bench`: latency, throughput, memory and fidelity per (backend, precision), side by side.

Every combination streams the same synthetic frames (a textured scene under camera motion)
through its own :class:`~vdeblur.runtime.stream.Stream`, and the combinations are **interleaved**:
all streams are opened and warmed up first (``warmup`` untimed frames each), then timed frame k is
pushed through every combination before frame k + 1 (the order rotates from frame to frame), so
background load hits every combination alike and the ratios between them hold on a busy machine.
Per-frame latency is the wall time of one ``push`` (one step of the graph, including the frame's
upload and the output's download). Each row reports min/p50/p90/p99/max/mean, the standard
deviation and the interquartile range; ``speedup_vs_torch_fp32`` is the torch fp32 p50 over this
p50, with the spread of the per-frame ratios (frame k of torch over frame k of this combination).

Clip artifacts (bidirectional models) decide frames by windows: a push that completes a window
runs it, the others only queue the frame. Their rows give ``window_ms`` (the wall time of each
window run, percentiles), ``latency_ms`` per frame as each window's time spread over the frames it
ran (so fps is the throughput), and ``latency_frames``, how many frames an output waits for its
window at most (the step artifacts' lookahead). The warm-up frames run as a clip of their own
(flushed) so that the timed frames start a new sequence; the window is the manifest's, shortened to
the timed frames when they are fewer.

Threads are pinned: ``threads`` (default: the physical cores) intra-op threads for ONNX Runtime and
PyTorch alike, recorded in the results with the CPU model, its ISA flags and the load average
before and after the run. PSNR is measured against the fp32 torch reference (the model code
itself) on the same timed frames. Memory: the resident memory each combination added when it was
opened and warmed up, and the process's peak. Combinations the machine cannot run (a
:class:`~vdeblur.errors.VdeblurError`: no such graph, no GPU, no TensorRT) are listed as skipped
with the reason; any other exception is a bug and propagates.
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

from vdeblur.contract.precision import PRECISIONS
from vdeblur.errors import UsageError, VdeblurError
from vdeblur.runtime.run import percentiles_ms

Progress = Callable[[str, float], None]
THREADED_BACKENDS = ("torch", "onnxruntime")  # backends whose CPU threads bench pins


def machine() -> dict[str, Any]:
    """A description of this machine for the results: CPU model and ISA flags, cores, memory,
    Python, ONNX Runtime, GPUs, the load average now."""
    from vdeblur.contract.device import cpu_info, load_average

    cpu = cpu_info()
    info: dict[str, Any] = {"cpu": cpu["model"], "cpu_info": cpu, "cores": os.cpu_count(),
                            "python": platform.python_version(), "platform": platform.platform(),
                            "load_average": load_average()}
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
    from vdeblur.contract.device import nvidia_device_present, nvidia_gpus

    gpus = nvidia_gpus()[0] if nvidia_device_present() else []
    info["gpu"] = ", ".join(f"{g['name']} (sm_{g['compute_capability'].replace('.', '')})" for g in gpus) or None
    return info


def _rss_mb() -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0]) / 1024.0
    except (OSError, IndexError, ValueError):
        return None


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
    from vdeblur.data.texture import moving_texture
    from vdeblur.export.artifact import export_artifact

    wanted = [p for p in precisions if p in ("fp32", "fp16", "bf16", "int8")]
    calibration = None
    if "int8" in wanted:  # 8-bit frames, as a video would give them
        calibration = np.round(moving_texture(8, min(height, 256), min(width, 256), seed=7) * 255) / np.float32(255)
    out = workdir / "artifact"
    export_artifact(target, out, precisions=wanted or ["fp32"], calibration=calibration,
                    height=min(height, 256), width=min(width, 256), frames=3)
    return out


def _row(backend: str, precision: str) -> dict[str, Any]:
    return {"backend": backend, "precision": precision, "latency_ms": None, "fps": None, "memory_mb": None,
            "psnr_db": None, "skipped": None, "graph": None}


def bench(target: str | Path, backends: list[str], precisions: list[str], height: int = 360, width: int = 640,
          frames: int = 20, warmup: int = 3, device: str = "auto", report: str | Path | None = None,
          progress: Progress | None = None, threads: int | None = None) -> dict[str, Any]:
    """Benchmark ``target`` (an artifact directory or a model name) on each (backend, precision),
    interleaved frame by frame (see the module docstring). threads: intra-op threads of ONNX
    Runtime and PyTorch (default: the physical cores)."""
    from vdeblur.contract.device import load_average, physical_cores
    from vdeblur.data.texture import moving_texture
    from vdeblur.metrics import json_safe, psnr
    from vdeblur.runtime.backends.base import describe
    from vdeblur.runtime.stream import Stream

    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise UsageError(f"bench: precision {', '.join(bad)} is unknown. Expected some of {', '.join(PRECISIONS)}.")
    if frames < 1 or warmup < 0:
        raise UsageError(
            f"bench: --frames {frames} / --warmup {warmup} are invalid. Expected frames >= 1, warmup >= 0."
        )
    if height < 16 or width < 16:
        raise UsageError(f"bench: {width}x{height} is too small. Expected at least 16x16.")
    if threads is not None and threads < 1:
        raise UsageError(f"bench: --threads {threads} is invalid. Expected at least 1.")
    threads = threads or physical_cores()
    say = progress or (lambda stage, fraction: None)
    load_before = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="vdeblur-bench-"))
    streams: dict[int, Any] = {}
    try:
        say("preparing the artifact", 0.0)
        artifact = prepare_artifact(str(target), workdir, precisions, height, width)
        clip = np.ascontiguousarray(moving_texture(warmup + frames, height, width).transpose(0, 2, 3, 1))
        combos = [(b, p) for b in backends for p in precisions]
        rows = [_row(b, p) for b, p in combos]
        outputs: dict[int, dict[int, np.ndarray]] = {}
        for k, (backend, precision) in enumerate(combos):
            say(f"opening and warming up {backend} {precision}", 0.05 + 0.15 * k / max(1, len(combos)))
            row = rows[k]
            if backend == "torch" and precision != "fp32":
                row["skipped"] = "the torch backend runs the fp32 reference only"
                continue
            options = {"threads": threads} if backend in THREADED_BACKENDS else {}
            options.update(_windows(artifact, frames))
            before = _rss_mb()
            try:
                stream = Stream(artifact, backend=backend, precision=precision, device=device, **options)
            except VdeblurError as e:  # cannot run here: reported with the reason
                row["skipped"] = _reason(e)
                continue
            streams[k] = stream
            outputs[k] = {}
            for f in clip[:warmup]:
                outputs[k].update(stream.push(f))
            if stream.kind == "clip":  # the warm-up frames as one clip; the timed frames start over
                outputs[k].update(stream.flush())
                row.update(window=stream.window, overlap=stream.overlap)
            row["latency_frames"] = stream.lookahead
            after = _rss_mb()
            row["memory_mb"] = round(after - before, 1) if before is not None and after is not None else None
            row["graph"] = describe(stream.backend)
        latencies: dict[int, list[float]] = {k: [] for k in streams}
        windows: dict[int, list[tuple[float, int]]] = {k: [] for k in streams}  # clip: (seconds, frames)
        offset = {k: warmup if s.kind == "clip" else 0 for k, s in streams.items()}  # clip indices start over
        order = list(streams)

        def timed_call(k: int, call: Callable[[], list[tuple[int, np.ndarray]]]) -> None:
            runs = streams[k].windows_run
            t = time.perf_counter()
            ready = call()
            dt = time.perf_counter() - t
            if streams[k].kind == "clip":
                if streams[k].windows_run > runs:
                    windows[k].append((dt, streams[k].last_window_frames))
            else:
                latencies[k].append(dt)
            outputs[k].update((i + offset[k], o) for i, o in ready)

        for i, f in enumerate(clip[warmup:]):
            say(f"timed frame {i + 1}/{frames}, {len(order)} combinations interleaved", 0.2 + 0.75 * i / frames)
            shift = i % max(1, len(order))
            for k in order[shift:] + order[:shift]:  # rotate: no combination always runs first
                timed_call(k, lambda k=k, f=f: streams[k].push(f))  # type: ignore[misc]
        for k in order:
            timed_call(k, streams[k].flush)
        for k, runs in windows.items():  # a window's time spread over the frames it ran
            if streams[k].kind == "clip":
                latencies[k] = [dt / n for dt, n in runs for _ in range(n)]
                rows[k]["window_ms"] = percentiles_ms([dt for dt, _ in runs])
                rows[k]["windows"] = len(runs)
        timed = {k: np.stack([outputs[k][i] for i in range(warmup, warmup + frames)]) for k in streams}
        reference, reference_error = _reference(artifact, clip, warmup, combos, timed, _windows(artifact, frames))
        for k in streams:
            row = rows[k]
            row["latency_ms"] = _latency(latencies[k])
            row["fps"] = len(latencies[k]) / sum(latencies[k])
            row["psnr_db"] = json_safe(psnr(timed[k], reference)) if reference is not None else None
            row["_per_frame_s"] = latencies[k]
        _add_ratios(rows)
        payload = {
            "results": rows,
            "machine": {**machine(), "load_average_before": load_before, "load_average_after": load_average()},
            "config": {"target": str(target), "artifact": str(artifact) if _is_artifact(target) else None,
                       "model": _model_info(artifact), "height": height, "width": width, "frames": frames,
                       "warmup": warmup, "device": device, "reference": "torch fp32 (model code)",
                       "reference_error": reference_error, "interleaved": True,
                       "threads": {"intra_op": threads, "backends": list(THREADED_BACKENDS), **_thread_env()},
                       "peak_memory_mb": _peak_rss_mb()},
        }
        if report is not None:
            write_report(payload, Path(report))
        say("done", 1.0)
        return payload
    finally:
        for stream in streams.values():
            stream.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _reference(artifact: Path, clip: np.ndarray, warmup: int, combos: list[tuple[str, str]],
               timed: dict[int, np.ndarray], windows: dict[str, int]) -> tuple[np.ndarray | None, str | None]:
    """The torch fp32 outputs of the timed frames: from the run itself when torch fp32 is one of the
    combinations, else streamed once more (untimed; clip artifacts by the same windows)."""
    from vdeblur.runtime.stream import Stream

    for k, combo in enumerate(combos):
        if combo == ("torch", "fp32") and k in timed:
            return timed[k], None
    try:
        with Stream(artifact, backend="torch", **windows) as s:
            got: dict[int, np.ndarray] = {}
            if s.kind == "clip":  # warm-up frames and timed frames are two sequences, as in the run
                for f in clip[:warmup]:
                    s.push(f)
                s.flush()
                clip = clip[warmup:]
                warmup = 0
            for f in clip:
                got.update(s.push(f))
            got.update(s.flush())
    except VdeblurError as e:
        return None, str(e)
    return np.stack([got[i] for i in range(warmup, len(clip))]), None


def _windows(artifact: Path, frames: int) -> dict[str, int]:
    """Clip artifacts: the manifest's window, shortened to the timed frames (so that at least one
    window runs while timed); nothing for step artifacts."""
    m = json.loads((artifact / "manifest.json").read_text())
    if m.get("kind") != "clip":
        return {}
    window = min(int(m["interface"]["window"]), frames)
    return {"window": window, "overlap": min(int(m["interface"]["overlap"]), window - 1)}


def _latency(seconds: list[float]) -> dict[str, float]:
    lat = percentiles_ms(seconds)
    ms = np.asarray(seconds) * 1e3
    lat["std"] = float(ms.std())
    lat["iqr"] = float(np.percentile(ms, 75) - np.percentile(ms, 25))
    return lat


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text


def _thread_env() -> dict[str, Any]:
    return {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if os.environ.get(k)}


def _model_info(artifact: Path) -> dict[str, Any]:
    m = json.loads((artifact / "manifest.json").read_text())
    return {k: m["model"].get(k) for k in ("family", "preset", "config", "random_weights")}


def _add_ratios(results: list[dict[str, Any]]) -> None:
    """speedup_vs_torch_fp32: torch fp32 p50 latency / this p50 latency, from the same run; and the
    spread of the per-frame ratios (torch frame k / this frame k, interleaved): p25, p50, p75."""
    base = next((r for r in results if r["backend"] == "torch" and r["precision"] == "fp32" and r["latency_ms"]), None)
    for r in sorted(results, key=lambda r: r is base):  # the base last: the others read its frames
        per_frame = r.get("_per_frame_s")
        r["speedup_vs_torch_fp32"] = (
            base["latency_ms"]["p50"] / r["latency_ms"]["p50"] if base and r["latency_ms"] else None
        )
        r["speedup_per_frame"] = None
        if base and per_frame is not None and base.get("_per_frame_s") is not None:
            ratios = np.asarray(base["_per_frame_s"]) / np.asarray(per_frame)
            r["speedup_per_frame"] = {q: float(np.percentile(ratios, v)) for q, v in
                                      (("p25", 25), ("p50", 50), ("p75", 75))}
    for r in results:
        r.pop("_per_frame_s", None)


def format_table(payload: dict[str, Any]) -> str:
    """The results as a Markdown table, with the machine, threads and load they were taken under."""
    cfg = payload["config"]
    m = payload["machine"]
    cpu = m.get("cpu_info") or {}
    threads = cfg.get("threads") or {}
    lines = [
        f"# vdeblur bench: {cfg['target']} at {cfg['width']}x{cfg['height']}",
        "",
        f"{cfg['frames']} timed frames after {cfg['warmup']} warm-up frames, combinations interleaved frame by "
        f"frame; PSNR against {cfg['reference']}. Machine: {m.get('cpu')} ({cpu.get('arch', '?')}; "
        f"{', '.join(cpu.get('isa', [])) or 'ISA unknown'}), {m.get('cores')} logical cores; "
        f"{threads.get('intra_op', '?')} threads; load average before {m.get('load_average_before')}, "
        f"after {m.get('load_average_after')}.",
        "",
        "| backend | precision | p50 ms | IQR ms | p90 ms | p99 ms | mean ms | fps | latency frames | +MB | PSNR dB "
        "| vs torch fp32 (per-frame p25-p75) | graph |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["results"]:
        if r["skipped"]:
            lines.append(f"| {r['backend']} | {r['precision']} | skipped: {r['skipped']} |||||||||||")
            continue
        lat = r["latency_ms"]
        psnr = r["psnr_db"]
        psnr_s = "-" if psnr is None else (psnr if isinstance(psnr, str) else f"{psnr:.2f}")
        ratio = f"{r['speedup_vs_torch_fp32']:.2f}x" if r.get("speedup_vs_torch_fp32") else "-"
        spread = r.get("speedup_per_frame")
        if spread:
            ratio += f" ({spread['p25']:.2f}-{spread['p75']:.2f})"
        mem = f"{r['memory_mb']:.0f}" if r.get("memory_mb") is not None else "-"
        waits = str(r.get("latency_frames", "-"))
        if r.get("window_ms"):
            waits += f" (windows of {r['window']}, overlap {r['overlap']}: p50 {r['window_ms']['p50']:.0f} ms each)"
        lines.append(f"| {r['backend']} | {r['precision']} | {lat['p50']:.1f} | {lat.get('iqr', 0.0):.1f} | "
                     f"{lat['p90']:.1f} | {lat['p99']:.1f} | {lat['mean']:.1f} | {r['fps']:.2f} | {waits} | {mem} | "
                     f"{psnr_s} | {ratio} | {_graph_cell(r.get('graph'))} |")
    if any(r.get("window_ms") for r in payload["results"]):
        lines += ["", "Clip models: ms per frame = each window's time over its frames; a frame's output waits for "
                      "its window (latency frames), then for the window's run."]
    return "\n".join(lines) + "\n"


def _graph_cell(graph: dict[str, Any] | None) -> str:
    """What ran, in a few words: `model.int8.onnx (not built; int8 as float Q/DQ: no VNNI)`."""
    if not graph:
        return "-"
    what = graph.get("file") or "model code"
    tags = []
    if graph.get("built"):
        tags.append("built")
    elif graph.get("file"):
        tags.append("not built")
    if graph.get("fallback"):
        tags.append("build fell back to the source graph")
    if any("float Q/DQ" in n for n in graph.get("notes", [])):
        tags.append("int8 as float Q/DQ (right, not fast: no VNNI)")
    return f"{Path(what).name if graph.get('file') else what}" + (f" ({'; '.join(tags)})" if tags else "")


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
        if r["skipped"] or r["psnr_db"] is None or r["latency_ms"] is None:
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
