"""`vdeblur run` and `vdeblur compare`: streaming a video through an artifact, comparing backends."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.errors import UsageError
from vdeblur.runtime.backends.base import describe
from vdeblur.runtime.stream import Stream
from vdeblur.runtime.video import FrameSink, VideoSource

Progress = Callable[[str, float], None]


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {k: 0.0 for k in ("min", "p50", "p90", "p99", "max", "mean")}
    ms = np.asarray(seconds) * 1e3
    return {"min": float(ms.min()), "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "mean": float(ms.mean())}


def run_video(artifact: str | Path, source: str | Path, output: str | Path, backend: str = "onnxruntime",
              precision: str = "fp32", device: str = "auto", progress: Progress | None = None,
              start: float = 0.0, frames: int | None = None, fps: float | None = None, crf: int | None = None,
              codec: str | None = None, window: int | None = None, overlap: int | None = None) -> dict[str, Any]:
    """Deblur a video file or image folder into a video file or a PNG folder.

    start, frames: the span to process (seconds to skip, at most this many frames); the output and
    its audio cover exactly that span. fps: the rate of an image folder (default 30). crf, codec:
    the encoder's quality and the codec ("h264" | "vp9"; default per container). The input's
    timestamps (variable rates stay variable), colour and audio streams are kept. window, overlap:
    clip artifacts only, the windows to run (default: the manifest's; ``window=30, overlap=0`` is
    DSTNet's official test split).
    """
    src = VideoSource(source, start=start, frames=frames, fps=fps)
    latencies: list[float] = []
    started = time.perf_counter()
    size: tuple[int, int] | None = None
    total = src.total
    with Stream(artifact, backend=backend, precision=precision, device=device, window=window,
                overlap=overlap) as stream, \
            FrameSink(output, fps=src.fps, color=src.color, crf=crf, codec=codec) as sink:
        times: list[float] = []
        count = 0
        for frame, t in src.frames(audio_sink=sink if sink.is_video else None):
            if size is None:
                size = (int(frame.shape[1]), int(frame.shape[0]))
                sink.bit_depth = src.bit_depth or 8  # known from the first decoded frame
            if frame.dtype == np.uint16:  # more than 8 bits in: the model sees them all
                frame = frame.astype(np.float32) / np.float32(65535.0)
            times.append(t)
            t0 = time.perf_counter()
            ready = stream.push(frame)
            latencies.append(time.perf_counter() - t0)
            for index, out in ready:
                sink.write(out, times[index])
            count += 1
            if progress is not None:
                elapsed = time.perf_counter() - started
                rate = count / elapsed
                if total:
                    eta = max(0.0, (total - count) / rate) if rate else 0.0
                    progress(f"{count}/{total} frames, {rate:.1f} fps, ETA {_clock(eta)}", min(1.0, count / total))
                else:
                    progress(f"{count} frames, {rate:.1f} fps", -1.0)
        for index, out in stream.flush():
            sink.write(out, times[index])
        if sink.count != count:  # one output per input frame, always
            raise UsageError(f"run: wrote {sink.count} frames for {count} inputs. This is a bug; please report it.")
        sink.commit(end=src.end)
        graph = describe(stream.backend)
        windows = _windows(stream)
    seconds = time.perf_counter() - started
    return {"input": str(source), "output": str(output), "backend": backend, "precision": precision,
            "graph": graph, "frames": count, "size": list(size) if size else None,
            "span_s": [src.start, round(src.start + src.end, 6)],
            "color_in": src.color.to_dict() if src.color else None,
            "color_out": sink.color.to_dict() if sink.is_video and sink.color else None,
            "audio": sink.audio, "codec": sink.codec, "bit_depth_in": src.bit_depth,
            "bit_depth_out": sink.written_depth if sink.is_video else 8,
            "size_out": list(sink.size_out) if sink.size_out else (list(size) if size else None),
            "notes": list(sink.notes),
            "seconds": round(seconds, 3), "fps": count / seconds if seconds else 0.0, "input_fps": src.fps,
            "output_fps": src.fps, "latency_ms": percentiles_ms(latencies), **windows}


def _windows(stream: Stream) -> dict[str, Any]:
    """How a stream decides its frames: ``latency_frames`` (frames a frame waits for its output, at
    most) and, for clip artifacts, the window and overlap it ran."""
    out: dict[str, Any] = {"kind": stream.kind, "latency_frames": stream.lookahead}
    if stream.kind == "clip":
        out.update(window=stream.window, overlap=stream.overlap)
    return out


def _clock(seconds: float) -> str:
    """ffmpeg-style h:mm:ss."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def compare_backends(artifact: str | Path, backends: list[str], precision: str = "fp32", frames: int = 8,
                     height: int | None = None, width: int | None = None, source: str | Path | None = None,
                     device: str = "auto", tol: float | None = None, window: int | None = None,
                     overlap: int | None = None) -> dict[str, Any]:
    """Stream the same frames through each backend; PSNR, max error and fraction within tolerance per pair
    (window, overlap: clip artifacts, as :func:`run_video`)."""
    from vdeblur.metrics import PIXEL_TOL, compare, json_safe

    if len(backends) < 2:
        raise UsageError("compare: needs at least two backends, e.g. --backends torch,onnxruntime.")
    clip = _frames(artifact, frames, height, width, source)
    outputs: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    timings: dict[str, float] = {}
    graphs: dict[str, Any] = {}
    for name in backends:
        try:
            with Stream(artifact, backend=name, precision=precision if name != "torch" else "fp32",
                        device=device, window=window, overlap=overlap) as stream:
                t = time.perf_counter()
                outs = []
                for f in clip:
                    outs += stream.push(f)
                outs += stream.flush()
                timings[name] = time.perf_counter() - t
                graphs[name] = describe(stream.backend)
        except Exception as e:  # noqa: BLE001 - a backend that cannot run here is reported, not fatal
            from vdeblur.errors import VdeblurError

            if not isinstance(e, VdeblurError):
                raise
            skipped[name] = str(e)
            continue
        outputs[name] = np.stack([o for _, o in outs])
    pairs = []
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            metrics = compare(outputs[b], outputs[a], tol if tol is not None else PIXEL_TOL)
            pairs.append({"a": a, "b": b, **{k: json_safe(v) for k, v in metrics.items()}})
    return {"artifact": str(artifact), "precision": precision, "frames": len(clip),
            "size": list(clip.shape[1:3]), "pairs": pairs, "skipped": skipped, "graphs": graphs,
            "seconds": {k: round(v, 3) for k, v in timings.items()}}


def _frames(artifact: str | Path, frames: int, height: int | None, width: int | None,
            source: str | Path | None) -> np.ndarray:
    """(T, H, W, 3) float32 frames: from ``source`` (centre-cropped to H x W if given), else synthetic."""
    if frames < 1:
        raise UsageError(f"compare: --frames {frames} is invalid. Expected at least 1.")
    if source is not None:
        from vdeblur.runtime.video import load_frames

        clip = load_frames(source, max_frames=frames, height=height, width=width)
    else:
        from vdeblur.data.texture import moving_texture

        clip = moving_texture(frames, height or 128, width or 128)
    return np.ascontiguousarray(clip.transpose(0, 2, 3, 1))
