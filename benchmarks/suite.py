"""The benchmark suite: the exported families at 320x180, 640x360 and 1280x720 on this machine's
backends, recorded with the machine description in benchmarks/results/. Clip models (DSTNet) are
timed per window (`window_ms`) and per frame, with their latency in frames.

    python benchmarks/suite.py [--models mtu2,mmprnn_a7b8c16] [--sizes 320x180,640x360,1280x720]
                               [--backends torch,onnxruntime,tensorrt] [--precisions fp32,fp16,int8]
                               [--frames 8] [--warmup 2] [--window W --overlap O]
                               [--out benchmarks/results/suite.json]

Models are exported once each with random weights (latency work) and every precision, and their
ONNX Runtime engines built (`vdeblur build`, unless --no-build); each size
is then benchmarked with `vdeblur.bench.bench`, the combinations interleaved frame by
frame with pinned threads, so every figure of a size comes from the same run and is also given as
a ratio to torch eager fp32 from that run (with the spread of the per-frame ratios). The CPU model,
its ISA flags and the load average before and after each size are recorded. The suite also measures
the overhead of `Stream.push` over bare backend steps (interleaved blocks, ONNX Runtime fp32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vdeblur.bench import bench, format_table, machine
from vdeblur.build import build
from vdeblur.data.texture import moving_texture
from vdeblur.export.artifact import export_artifact
from vdeblur.runtime.video import encode_png, load_calibration


def calibration_folder(root: Path, height: int, width: int) -> Path:
    folder = root / "calibration"
    folder.mkdir(exist_ok=True)
    for i, f in enumerate(moving_texture(8, height, width, seed=11)):
        (folder / f"{i:04d}.png").write_bytes(encode_png((f.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)))
    return folder


def push_overhead(artifact: Path, height: int, width: int, frames: int = 12, rounds: int = 3) -> dict[str, float]:
    """Median per-frame time of Stream.push vs bare backend.step on the same padded frames."""
    from vdeblur.runtime.backends import open_backend
    from vdeblur.runtime.stream import Stream

    clip = np.ascontiguousarray((moving_texture(frames, height, width).transpose(0, 2, 3, 1) * 255).astype(np.uint8))
    stream = Stream(artifact, backend="onnxruntime")
    bare = open_backend(artifact, "onnxruntime")
    m = stream.pad_multiple
    hp, wp = -(-height // m) * m, -(-width // m) * m
    padded = np.zeros((frames, 1, 3, hp, wp), np.float32)
    padded[:, 0, :, :height, :width] = clip.transpose(0, 3, 1, 2) / np.float32(255)
    t_stream, t_bare = [], []
    for _ in range(rounds):
        bare.reset(1, hp, wp)
        t = time.perf_counter()
        for f in padded:
            bare.step(f)
        t_bare.append((time.perf_counter() - t) / frames)
        t = time.perf_counter()
        for f in clip:
            stream.push(f)
        t_stream.append((time.perf_counter() - t) / frames)
        stream.flush()
    s, b = statistics.median(t_stream), statistics.median(t_bare)
    return {"stream_push_ms": 1e3 * s, "bare_step_ms": 1e3 * b, "overhead": s / b - 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mtu2,mmprnn_a7b8c16")
    ap.add_argument("--sizes", default="320x180,640x360,1280x720")
    ap.add_argument("--backends", default="torch,onnxruntime,tensorrt")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-build", action="store_true", help="bench the artifact's graphs without `vdeblur build`")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    ap.add_argument("--window", type=int, default=None, help="clip models: the artifact's window (default: the "
                                                               "model's; bench shortens it to --frames)")
    ap.add_argument("--overlap", type=int, default=None, help="clip models: the artifact's overlap")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "suite.json")
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]  # (W, H)
    precisions = args.precisions.split(",")
    runs = []
    with tempfile.TemporaryDirectory(prefix="vdeblur-suite-") as tmp:
        root = Path(tmp)
        for model in args.models.split(","):
            artifact = root / model
            t = time.perf_counter()
            export_artifact(model, artifact, precisions=[p for p in precisions if p != "fp8"],
                            calibration=load_calibration(calibration_folder(root, 180, 320), 96, 160)
                            if "int8" in precisions else None,
                            height=96, width=160, frames=3, window=args.window, overlap=args.overlap)
            clip_model = json.loads((artifact / "manifest.json").read_text())["kind"] == "clip"
            print(f"exported {model} in {time.perf_counter() - t:.0f} s", flush=True)
            if not args.no_build:  # bench what users run after `vdeblur build`: the verified engines
                for precision in [p for p in precisions if p != "fp8"]:
                    built = build(artifact, "onnxruntime", precision=precision, shapes="96x160")
                    print(f"built onnxruntime {precision}: verification {built['verification']['psnr_db']} dB"
                          + (f", FELL BACK: {built['fallback']['reason']}" if built["fallback"] else ""), flush=True)
            for w, h in sizes:
                payload = bench(artifact, args.backends.split(","), precisions, height=h, width=w,
                                frames=args.frames, warmup=args.warmup, threads=args.threads)
                payload["config"]["target"] = model
                entry = {"model": model, "size": f"{w}x{h}", **payload}
                if (w, h) == (640, 360) and not clip_model:  # clip graphs have no per-frame step
                    entry["push_overhead"] = push_overhead(artifact, h, w)
                runs.append(entry)
                print(format_table(payload), flush=True)
                if "push_overhead" in entry:
                    print(f"Stream.push overhead over bare steps: {100 * entry['push_overhead']['overhead']:+.1f}%")
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({"machine": machine(), "argv": sys.argv[1:], "runs": runs}, indent=2)
                                    + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
