"""Make the bundled demo clip: a synthetic blurry clip and its sharp ground truth (held-out image).

Renders ``vdeblur.data.render_clip`` on a photograph held out from the demo model's training
("coffee" by default; see vdeblur.data.demo_sources), encodes both clips LOSSLESSLY (H.264 in RGB,
libx264rgb qp 0: decoding gives back exactly the 8-bit frames that were encoded), checks that
``vdeblur.runtime.video.iter_frames`` reads them back exactly, and writes a metadata JSON with the
source, seed, size, blur settings and PSNRs (blurry vs sharp; with the demo checkpoint present,
also its deblurred output vs sharp, measured with ``vdeblur.models.run_clip``).

    python scripts/make_demo_clip.py                 # vdeblur/assets/demo/clip_{blurry,sharp}.mp4 + clip.json
    python scripts/make_demo_clip.py --out /tmp/clip --frames 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vdeblur.data import demo_sources, render_clip  # noqa: E402
from vdeblur.metrics import psnr  # noqa: E402
from vdeblur.runtime.video import iter_frames  # noqa: E402

DEFAULT_OUT = REPO / "vdeblur" / "assets" / "demo"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default="coffee", help="held-out source image (see vdeblur.data.demo_sources)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--speed", type=float, default=4.0, help="camera speed, px/frame (as the held-out evaluation)")
    p.add_argument("--subframes", type=int, default=9)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_OUT / "mtu_demo.pth",
                   help="demo model to measure on the clip (skipped when absent)")
    p.add_argument("--preset", default="mtu2", help="preset of --checkpoint")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """(T, 3, H, W) float in [0, 1] -> (T, H, W, 3) uint8 (rounded)."""
    return (np.clip(frames, 0.0, 1.0).transpose(0, 2, 3, 1) * 255.0 + 0.5).astype(np.uint8)


def write_lossless(path: Path, frames: np.ndarray, fps: int) -> None:
    """uint8 (T, H, W, 3) -> H.264 RGB lossless (libx264rgb, qp 0), written atomically."""
    import av

    tmp = path.with_name(f".{path.name}.partial")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264rgb", rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24"
        stream.options = {"qp": "0", "preset": "veryslow"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, held = demo_sources(grey=False)
    sources = dict(held)
    if args.image not in sources:
        raise SystemExit(f"--image {args.image!r} is not held out from the demo model's training. "
                         f"Expected one of: {', '.join(sources)}.")
    blurry, sharp, info = render_clip(sources[args.image], args.frames, args.height, args.width,
                                      args.subframes, seed=args.seed, speed=args.speed)
    b8, s8 = to_uint8(blurry), to_uint8(sharp)

    args.out.mkdir(parents=True, exist_ok=True)
    files = {"blurry": args.out / "clip_blurry.mp4", "sharp": args.out / "clip_sharp.mp4"}
    for key, frames in (("blurry", b8), ("sharp", s8)):
        write_lossless(files[key], frames, args.fps)
        back = np.stack(list(iter_frames(files[key])))
        if back.shape != frames.shape or not np.array_equal(back, frames):
            raise SystemExit(f"{files[key]}: does not decode back exactly (lossless encoding failed)")
    bf, sf = b8.astype(np.float32) / 255.0, s8.astype(np.float32) / 255.0
    meta: dict = {
        "blurry": files["blurry"].name,
        "sharp": files["sharp"].name,
        "source_image": f"skimage.data.{args.image}",
        "held_out": "yes: never used to train mtu_demo.pth (vdeblur.data.demo_sources)",
        "seed": args.seed,
        "frames": args.frames,
        "fps": args.fps,
        "height": args.height,
        "width": args.width,
        "encoding": "H.264 RGB lossless (libx264rgb, qp 0, rgb24); iter_frames decodes the encoded "
                    "8-bit frames exactly",
        "blur": {**info["settings"], "linear_light_average": True,
                 "sharp_frame": "camera pose at the centre of the exposure (middle sub-frame)"},
        "camera": {k: info[k] for k in ("magnification", "origin", "speed_px", "blur_px")},
        "psnr_blurry_vs_sharp_db": round(psnr(bf, sf), 3),
        "generated_by": "scripts/make_demo_clip.py",
    }
    if args.checkpoint.exists():
        import torch

        from vdeblur.models import create, load_checkpoint, run_clip

        torch.set_num_threads(1)
        model = create(args.preset)
        load_checkpoint(model, args.checkpoint)
        out = run_clip(model, torch.from_numpy(bf.transpose(0, 3, 1, 2))[None])[0].numpy()
        meta["psnr_deblurred_vs_sharp_db"] = round(psnr(out, sf.transpose(0, 3, 1, 2)), 3)
        meta["deblurred_with"] = f"{args.checkpoint.name} ({args.preset}), vdeblur.models.run_clip, float output"
    (args.out / "clip.json").write_text(json.dumps(meta, indent=1) + "\n")
    sizes = {p.name: p.stat().st_size for p in files.values()}
    print(json.dumps({"sizes_bytes": sizes, **{k: v for k, v in meta.items() if k.startswith("psnr")}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
