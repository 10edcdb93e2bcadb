"""`vdeblur demo`: the whole deployment path on the embedded default, with nothing to download.

The package ships a small MTU checkpoint trained on synthetic blur (scripts/train_demo.py) and a
held-out blurry clip with its sharp ground truth (scripts/make_demo_clip.py). The demo

1. exports the checkpoint (official raw state_dict format) to an artifact with the chosen precisions
   (default fp32 and int8); int8 is calibrated on synthetic clips of the training images, not on
   the demo clip;
2. builds the ONNX Runtime engine of each precision;
3. streams the blurry clip through each, writing the deblurred video and a PNG of the middle frame:
   labelled panels (blurry / deblurred / sharp, with their PSNR against the sharp frame) and, below
   them, the window where deblurring helps most, enlarged to a panel's width;
4. reports per precision: latency p50 and fps, the PSNR of the blurry input and of the deblurred
   output against the sharp frames, and which graph ran.

It never dies because an optional step failed: a precision variant the export left out (below its
bar) is reported as skipped with the reason, a build that fell back says so, and demo.json is
always finished (``status`` "done").
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.errors import UsageError

Progress = Callable[[str, float], None]
MARKER = "demo.json"
PRECISIONS = ("fp32", "int8")  # the default
CHOICES = ("fp32", "fp16", "bf16", "int8")


def assets() -> Any:
    """The bundled checkpoint, clips and their metadata (vdeblur.data.demo_assets)."""
    from vdeblur.data import demo_assets

    return demo_assets()


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UsageError(f"{out}: exists and holds other files. Expected a new directory or a previous demo output.")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


def _calibration_frames(height: int, width: int, clips: int = 2, frames: int = 8) -> np.ndarray:
    """Synthetic blurry frames (T, 3, H, W) from the training images (never the demo clip)."""
    from vdeblur.data import demo_sources, make_clip

    train, _ = demo_sources(grey=False)
    clip = np.concatenate([make_clip(image, frames, height, width, seed=100 + i)[0]
                           for i, (_, image) in enumerate(train[:clips])])
    return np.round(clip * 255) / np.float32(255)  # 8-bit frames, as a video would give them


def best_crop(blurry: np.ndarray, deblurred: np.ndarray, sharp: np.ndarray, size: int = 48) -> tuple[int, int]:
    """Top-left (y, x) of the ``size`` x ``size`` window where deblurring helps most: the largest
    drop of the mean absolute error against the sharp frame (uint8 (H, W, 3) frames)."""
    h, w = sharp.shape[:2]
    size = min(size, h, w)
    gain = (np.abs(blurry.astype(np.float32) - sharp) - np.abs(deblurred.astype(np.float32) - sharp)).mean(axis=2)
    integral = np.pad(gain, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)


def labelled_panels(panels: list[tuple[str, np.ndarray]], crop: tuple[int, int] | None = None, crop_size: int = 48,
                    zoom: int | None = None, gap: int = 6) -> np.ndarray:
    """uint8 RGB image: the panels side by side, each titled (e.g. "deblurred 29.50 dB"); with
    ``crop`` a second row of the same window of every panel enlarged ``zoom`` times (nearest
    neighbour; default: as wide as a panel), outlined on the panels above. Needs Pillow (extra
    [demo]) for the text."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as e:  # pragma: no cover - scikit-image, in [demo], brings it
        from vdeblur.errors import missing_dependency

        raise missing_dependency("PIL", "demo", "the demo's labelled panels") from e
    h, w = panels[0][1].shape[:2]
    title = 22
    cs = min(crop_size, h, w)
    zoom = zoom or max(2, w // cs)
    zh = cs * zoom if crop is not None else 0
    zw = cs * zoom
    col = max(w, zw)
    total_w = len(panels) * col + (len(panels) - 1) * gap
    total_h = title + h + (gap + zh if crop is not None else 0)
    canvas = Image.new("RGB", (total_w, total_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    for i, (label, image) in enumerate(panels):
        x0 = i * (col + gap)
        canvas.paste(Image.fromarray(np.ascontiguousarray(image)), (x0, title))
        draw.text((x0 + 2, 3), label, fill=(0, 0, 0), font=font)
        if crop is not None:
            y, x = crop
            draw.rectangle([x0 + x, title + y, x0 + x + cs - 1, title + y + cs - 1], outline=(255, 32, 32))
            window = image[y : y + cs, x : x + cs].repeat(zoom, axis=0).repeat(zoom, axis=1)
            canvas.paste(Image.fromarray(np.ascontiguousarray(window)), (x0, title + h + gap))
    return np.asarray(canvas)


def _check_precisions(precisions: list[str] | tuple[str, ...] | None) -> list[str]:
    wanted = list(dict.fromkeys(precisions or PRECISIONS))
    bad = [p for p in wanted if p not in CHOICES]
    if bad or not wanted:
        raise UsageError(f"demo: precision {', '.join(bad) or '(none)'} is not offered. Expected some of "
                         f"{', '.join(CHOICES)}.")
    return wanted


def run_demo(out: str | Path = "vdeblur-demo", progress: Progress | None = None,
             precisions: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Run the demo into ``out``; returns what demo.json holds. precisions: some of fp32, fp16,
    bf16, int8 (default fp32, int8); fp32 is always exported (the reference)."""
    from vdeblur.runtime.video import iter_frames

    wanted = _check_precisions(precisions)
    say = progress or (lambda stage, fraction: None)
    out = Path(out)
    files = assets()
    blurry = np.stack(list(iter_frames(files.blurry)))
    sharp = np.stack(list(iter_frames(files.sharp)))
    if blurry.shape != sharp.shape:
        raise UsageError(f"demo: the bundled clips differ in shape {blurry.shape} vs {sharp.shape}. Reinstall vdeblur.")
    _prepare_out(out)
    (out / MARKER).write_text(json.dumps({"status": "running"}) + "\n")
    try:
        result = _run(out, files, blurry, sharp, wanted, say)
    except BaseException as e:  # demo.json says how it ended, whatever happened
        (out / MARKER).write_text(json.dumps({"status": "failed", "error": f"{type(e).__name__}: {e}"}) + "\n")
        raise
    say("done", 1.0)
    return result


def _run(out: Path, files: Any, blurry: np.ndarray, sharp: np.ndarray, wanted: list[str],
         say: Progress) -> dict[str, Any]:
    from vdeblur.build import build
    from vdeblur.contract.device import cpu_info
    from vdeblur.errors import VdeblurError
    from vdeblur.export.artifact import export_artifact
    from vdeblur.metrics import psnr
    from vdeblur.runtime.run import percentiles_ms
    from vdeblur.runtime.stream import Stream
    from vdeblur.runtime.video import FrameSink, encode_png

    started = time.perf_counter()
    height, width = blurry.shape[1:3]
    say("calibration frames", 0.02)
    calibration = _calibration_frames(height, width)
    say(f"exporting {', '.join(wanted)}", 0.1)
    export = export_artifact(files.preset, out / "artifact", checkpoint=files.checkpoint,
                             precisions=wanted, calibration=calibration, height=height, width=width, frames=4)
    left_out = {s["precision"]: s["reason"] for s in export.get("skipped", [])}
    rows = []
    psnr_blurry = psnr(blurry / 255.0, sharp / 255.0)
    middle = len(blurry) // 2
    for k, precision in enumerate(wanted):
        say(f"building and streaming {precision}", 0.5 + 0.45 * k / len(wanted))
        row: dict[str, Any] = {"precision": precision, "psnr_blurry_db": psnr_blurry, "psnr_deblurred_db": None,
                               "latency_ms_p50": None, "latency_frames": None, "fps": None, "graph": None,
                               "skipped": None, "notes": []}
        rows.append(row)
        if precision in left_out:
            row["skipped"] = f"the export left it out: {left_out[precision]}"
            continue
        try:
            built = build(out / "artifact", "onnxruntime", precision=precision)
        except VdeblurError as e:  # e.g. ONNX Runtime cannot run this precision here
            row["skipped"] = f"the build failed: {e}"
            continue
        if built.get("fallback"):
            row["notes"].append(f"build fell back: {built['fallback']['reason']}")
        if (built.get("int8") or {}).get("note"):
            row["notes"].append(built["int8"]["note"])
        latencies = []
        outputs: dict[int, np.ndarray] = {}
        with Stream(out / "artifact", backend="onnxruntime", precision=precision) as stream:
            for frame in blurry:
                t = time.perf_counter()
                outputs.update(stream.push(frame))
                latencies.append(time.perf_counter() - t)
            outputs.update(stream.flush())
            row["graph"] = stream.backend.describe()
            row["latency_frames"] = stream.lookahead  # frames an output waits for (lookahead, or a clip window)
        deblurred = np.stack([outputs[i] for i in range(len(blurry))])
        with FrameSink(out / f"deblurred_{precision}.mp4", fps=float(files.clip_meta.get("fps", 24))) as sink:
            for f in deblurred:
                sink.write(f)
            sink.commit()
        crop = best_crop(blurry[middle], deblurred[middle], sharp[middle])
        row_psnr = psnr(deblurred / 255.0, sharp / 255.0)
        panels = [(f"blurry {psnr(blurry[middle] / 255.0, sharp[middle] / 255.0):.2f} dB", blurry[middle]),
                  (f"deblurred ({precision}) {psnr(deblurred[middle] / 255.0, sharp[middle] / 255.0):.2f} dB",
                   deblurred[middle]),
                  ("sharp", sharp[middle])]
        (out / f"side_by_side_{precision}.png").write_bytes(encode_png(labelled_panels(panels, crop=crop)))
        lat = percentiles_ms(latencies)
        row.update({"psnr_deblurred_db": row_psnr, "latency_ms_p50": lat["p50"],
                    "fps": len(latencies) / sum(latencies)})
    result = {
        "status": "done",
        "precisions": rows,
        "clip": {"frames": int(len(blurry)), "height": int(height), "width": int(width),
                 "source": files.clip_meta.get("source")},
        "model": f"{files.preset} (vdeblur demo checkpoint, trained on synthetic blur)",
        "backend": "onnxruntime",
        "out": str(out),
        "files": sorted(p.name for p in out.iterdir()),
        "export_validation_psnr_db": export["validation"]["results"]["fp32"]["psnr_db"],
        "cpu": cpu_info(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / MARKER).write_text(json.dumps(result, indent=2) + "\n")
    return result

