"""Train the small demo checkpoint bundled with vdeblur (vdeblur/assets/demo/mtu_demo.pth).

The preset's official architecture (default mtu2) is trained from scratch on the CPU on synthetic
motion blur (vdeblur.data.synthetic_blur) made from scikit-image's bundled photographs; the
held-out photographs (vdeblur.data.demo_sources: "coffee", "rocket") are never trained on. The
model runs through ``clip_forward`` with autograd, i.e. frame by frame under exactly the streaming
semantics of ``vdeblur.models.run_clip`` (5-frame window replicated at the ends, previous output,
first-frame handling), so training and inference match.

Recipe (the defaults; chosen from short trial runs on this machine): mtu2, batch 4 clips of 5
frames, 64x64 crops (resampled when featureless), camera speed 1.5-7 px/frame, source scale
0.7-1.5, quarter turns, tone jitter, 10 % still-camera clips (blurry == sharp, to keep sharp footage
and its colour), MSE loss, Adam 5e-4 with warm-up and cosine decay over 3000 iterations, output
conv zero-initialised (the model is residual, so training starts from the identity).
Charbonnier/L1 and the default output init stayed at the identity for hundreds of iterations in
those trials. The motion-feature convs
(``motion_layer``) get no gradient (the argmax motion search is not differentiable, as in the
official model) and keep their seeded random init.

Writes ``<out>/mtu_demo.pth`` (torch.save of the raw official-format state_dict, loadable with
``torch.load(weights_only=True)`` and ``vdeblur.models.load_checkpoint``) and
``<out>/training_log.json`` (settings, loss and held-out PSNR over time, final evaluation with
run_clip at 320x180; ``colour_check``: the mean brightness change on still clips of the colour
photographs, in 8-bit levels). Everything is seeded; on the same machine and thread count a rerun gives the
same weights (oneDNN kernels may differ in the last bits across CPUs and thread counts).

    python scripts/train_demo.py                       # the bundled checkpoint (75 min, 1 thread)
    python scripts/train_demo.py --iterations 20 --out /tmp/demo   # a quick smoke run

Threads: on a shared 2-core machine one intra-op thread measured ~4x faster than two (other jobs
oversubscribe the cores); use --threads 2 on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vdeblur.data import BlurSettings, demo_sources, make_clip, natural_images  # noqa: E402
from vdeblur.metrics import psnr  # noqa: E402
from vdeblur.models import create, run_clip  # noqa: E402

DEFAULT_OUT = REPO / "vdeblur" / "assets" / "demo"
# Blur of the held-out evaluation clips (and of the demo clip): moderate camera shake (--eval-speed).
EVAL_BLUR = BlurSettings(speed=4.0, rotation=0.3, zoom=0.005, exposure=1.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mtu2", help="MTU preset (official architecture): mtu1, mtu2...")
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--batch", type=int, default=4, help="clips per iteration")
    p.add_argument("--frames", type=int, default=5, help="frames per training clip")
    p.add_argument("--crop", type=int, default=64, help="training crop size (multiple of 4)")
    p.add_argument("--subframes", type=int, default=9, help="sharp sub-frames averaged per blurry frame")
    p.add_argument("--speed-min", type=float, default=1.5, help="camera speed range (px/frame) of training clips")
    p.add_argument("--speed-max", type=float, default=7.0)
    p.add_argument("--scale-min", type=float, default=0.7,
                   help="source pixels per output pixel of training views (log-uniform; < 1 magnifies)")
    p.add_argument("--scale-max", type=float, default=1.5)
    p.add_argument("--static", type=float, default=0.1,
                   help="fraction of training clips with a still camera (blurry == sharp: the model "
                        "learns to leave sharp footage, and its colour, alone)")
    p.add_argument("--gamma-jitter", type=float, default=0.2,
                   help="tone augmentation: source images raised to a power in [1/(1+j), 1+j]")
    p.add_argument("--min-detail", type=float, default=0.02,
                   help="resample training crops whose sharp frames have less mean |gradient| than this")
    p.add_argument("--exclude", default="retina,moon,clock,cell",
                   help="training sources to leave out (comma-separated; low-detail images)")
    p.add_argument("--loss", choices=("mse", "charbonnier"), default="mse")
    p.add_argument("--eval-speed", type=float, default=EVAL_BLUR.speed, help="camera speed of held-out clips")
    p.add_argument("--lr", type=float, default=5e-4, help="peak Adam learning rate (cosine decay)")
    p.add_argument("--warmup", type=int, default=30, help="linear warm-up iterations")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--no-zero-init-out", dest="zero_init_out", action="store_false",
                   help="keep PyTorch's default init of the output conv (default: zero, so training "
                        "starts from the identity, the model being residual)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=100, help="held-out evaluation period (iterations)")
    p.add_argument("--final-clips", type=int, default=2, help="final evaluation clips per held-out image")
    p.add_argument("--final-frames", type=int, default=8)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.crop % 4:
        p.error("--crop must be a multiple of 4")
    return args


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((x - y) ** 2 + eps * eps).mean()


def detail(frames: np.ndarray) -> float:
    """Mean absolute horizontal + vertical difference of (..., H, W) frames."""
    return float(np.abs(np.diff(frames, axis=-1)).mean() + np.abs(np.diff(frames, axis=-2)).mean())


def training_batch(rng: np.random.Generator, sources: list[tuple[str, np.ndarray, bool]],
                   args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(blurry, sharp) (B, T, 3, crop, crop): random source, trajectory, blur strength, flips."""
    blurry, sharp = [], []
    for _ in range(args.batch):
        for _attempt in range(10):
            _, img, colour = sources[int(rng.integers(len(sources)))]
            if rng.random() < 0.5:
                img = img[:, ::-1]
            if rng.random() < 0.5:  # quarter turn (transpose + flip above)
                img = np.swapaxes(img, 0, 1)
            if colour:  # random channel order
                img = img[..., rng.permutation(3)]
            if args.gamma_jitter > 0:
                g = float(np.exp(rng.uniform(-1.0, 1.0) * math.log1p(args.gamma_jitter)))
                img = np.power(img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0), g)
            still = rng.random() < args.static
            settings = BlurSettings(
                speed=0.0 if still else float(rng.uniform(args.speed_min, args.speed_max)),
                rotation=0.0 if still else float(rng.uniform(0.0, 0.6)),
                zoom=0.0 if still else float(rng.uniform(0.0, 0.01)),
                exposure=float(rng.uniform(0.6, 1.0)),
                scale=float(np.exp(rng.uniform(math.log(args.scale_min), math.log(args.scale_max)))),
            )
            b, s = make_clip(np.ascontiguousarray(img), args.frames, args.crop, args.crop, args.subframes,
                             seed=int(rng.integers(2**31)), settings=settings)
            if detail(s) >= args.min_detail:
                break
        if rng.random() < 0.5:  # play backwards
            b, s = b[::-1], s[::-1]
        blurry.append(np.ascontiguousarray(b))
        sharp.append(np.ascontiguousarray(s))
    return torch.from_numpy(np.stack(blurry)), torch.from_numpy(np.stack(sharp))


def held_out_clips(held: list[tuple[str, np.ndarray]], count: int, frames: int, height: int, width: int,
                   seed: int, blur: BlurSettings = EVAL_BLUR) -> list[dict]:
    clips = []
    for name, img in held:
        for k in range(count):
            clip_seed = 1000 * seed + k
            b, s = make_clip(img, frames, height, width, blur.subframes, seed=clip_seed, settings=blur)
            clips.append({"image": name, "seed": clip_seed, "blurry": b, "sharp": s})
    return clips


def evaluate(model: torch.nn.Module, clips: list[dict]) -> dict:
    """Mean PSNR (dB) over clips of blurry vs sharp and run_clip(model, blurry) vs sharp."""
    per_clip = []
    for c in clips:
        out = run_clip(model, torch.from_numpy(c["blurry"])[None])[0].numpy()
        per_clip.append({"image": c["image"], "seed": c["seed"], "blurry_psnr": psnr(c["blurry"], c["sharp"]),
                         "deblurred_psnr": psnr(out, c["sharp"])})
    blurry = float(np.mean([p["blurry_psnr"] for p in per_clip]))
    deblurred = float(np.mean([p["deblurred_psnr"] for p in per_clip]))
    return {"blurry_psnr": round(blurry, 3), "deblurred_psnr": round(deblurred, 3),
            "gain_db": round(deblurred - blurry, 3), "clips": per_clip}


def colour_check(model: torch.nn.Module, images: list[tuple[str, np.ndarray]], frames: int = 6,
                 height: int = 180, width: int = 320) -> dict:
    """Mean brightness change on SHARP footage (a still camera: nothing to deblur), in 8-bit levels.

    For each photograph a still clip (blurry == sharp) goes through run_clip; the mean of
    output - input over all pixels, per channel and overall. A model that keeps colour stays near 0.
    """
    rows = []
    for name, img in images:
        _, s = make_clip(img, frames, height, width, 1, seed=0, speed=0.0, rotation=0.0, zoom=0.0, turn=0.0)
        out = run_clip(model, torch.from_numpy(s)[None])[0].numpy()
        diff = (np.clip(out, 0.0, 1.0) - s) * 255.0
        rows.append({"image": name, "mean_levels": round(float(diff.mean()), 3),
                     "rgb_levels": [round(float(diff[:, c].mean()), 3) for c in range(3)]})
    worst = max(abs(r["mean_levels"]) for r in rows)
    return {"images": rows, "max_abs_mean_levels": round(worst, 3), "height": height, "width": width,
            "frames": frames, "measured_with": "vdeblur.models.run_clip on still clips (input == sharp)"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train, held = demo_sources(grey=True)
    excluded = {n.strip() for n in args.exclude.split(",") if n.strip()}
    train = [(n, img) for n, img in train if n not in excluded]
    print(f"train sources: {[n for n, _ in train]}; held out: {[n for n, _ in held]}", flush=True)

    pool = [(n, img, bool(np.any(img[..., 0] != img[..., 1]))) for n, img in train]
    model = create(args.preset).train()
    if args.zero_init_out:
        with torch.no_grad():
            model.out.weight.zero_()
            model.out.bias.zero_()
    model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.99))

    def lr_at(it: int) -> float:
        if it < args.warmup:
            return args.lr * (it + 1) / args.warmup
        progress = (it - args.warmup) / max(1, args.iterations - args.warmup)
        return 1e-6 + 0.5 * (args.lr - 1e-6) * (1.0 + math.cos(math.pi * progress))

    eval_blur = BlurSettings(**{**EVAL_BLUR.as_dict(), "speed": args.eval_speed})
    probe = held_out_clips(held, 1, 6, 180, 320, seed=args.seed + 7, blur=eval_blur)
    history: list[dict] = []
    start = time.time()
    losses: list[float] = []

    def log_eval(it: int) -> None:
        ev = evaluate(model, probe)
        entry = {"iteration": it, "elapsed_s": round(time.time() - start, 1),
                 "loss": round(float(np.mean(losses)), 5) if losses else None, "lr": lr_at(max(it - 1, 0)),
                 "heldout_blurry_psnr": ev["blurry_psnr"], "heldout_deblurred_psnr": ev["deblurred_psnr"]}
        history.append(entry)
        losses.clear()
        print(json.dumps(entry), flush=True)

    log_eval(0)
    for it in range(args.iterations):
        for group in opt.param_groups:
            group["lr"] = lr_at(it)
        blurry, sharp = training_batch(rng, pool, args)
        out = model.clip_forward(blurry)
        loss = charbonnier(out, sharp) if args.loss == "charbonnier" else torch.mean((out - sharp) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if (it + 1) % args.eval_every == 0 or it + 1 == args.iterations:
            log_eval(it + 1)
    train_s = time.time() - start

    model = model.to(memory_format=torch.contiguous_format).eval()
    final_clips = held_out_clips(held, args.final_clips, args.final_frames, 180, 320, seed=args.seed, blur=eval_blur)
    final = evaluate(model, final_clips)
    final.update({"height": 180, "width": 320, "frames": args.final_frames, "count": len(final_clips),
                  "blur": eval_blur.as_dict(), "measured_with": "vdeblur.models.run_clip"})
    print(json.dumps({k: v for k, v in final.items() if k != "clips"}), flush=True)
    colour = colour_check(model, natural_images())
    print(json.dumps({"colour": colour}), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    ckpt = args.out / "mtu_demo.pth"
    tmp = ckpt.with_suffix(".pth.partial")
    torch.save(state, tmp)
    os.replace(tmp, ckpt)
    log = {
        "checkpoint": ckpt.name,
        "preset": args.preset,
        "config": model.config() if hasattr(model, "config") else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "train_sources": [n for n, _ in train],
        "excluded_sources": sorted(excluded),
        "heldout_sources": [n for n, _ in held],
        "training_blur": {"speed": [args.speed_min, args.speed_max], "rotation_deg": [0.0, 0.6],
                          "zoom": [0.0, 0.01], "exposure": [0.6, 1.0], "subframes": args.subframes,
                          "scale": [args.scale_min, args.scale_max], "still_fraction": args.static,
                          "augment": "hflip, quarter turn, colour channel order, tone (gamma "
                                     f"1/{1 + args.gamma_jitter:g}..{1 + args.gamma_jitter:g}), time reversal",
                          "min_detail": args.min_detail},
        "loss": f"{args.loss} over all output frames of clip_forward",
        "optimizer": {"name": "Adam", "betas": [0.9, 0.99], "lr": args.lr, "schedule": "linear warm-up, cosine",
                      "grad_clip_norm": 1.0},
        "probe": "held-out clips (1 per held-out image, 6 frames, 320x180), mean PSNR via run_clip",
        "history": history,
        "final_eval": final,
        "colour_check": colour,
        "train_seconds": round(train_s, 1),
        "seconds_per_iteration": round(train_s / max(1, args.iterations), 3),
        "environment": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
                        "machine": platform.machine(), "threads": args.threads},
    }
    (args.out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    print(f"wrote {ckpt} ({ckpt.stat().st_size / 1e6:.2f} MB) in {train_s / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
