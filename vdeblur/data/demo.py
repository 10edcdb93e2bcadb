"""Where the bundled demo assets live (vdeblur/assets/demo): the small trained MTU checkpoint and a
held-out synthetic blurry clip with its sharp ground truth. Paths only: no torch, no decoding."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdeblur.errors import UsageError

DEMO_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo"
DEMO_PRESET = "mtu2"


@dataclass(frozen=True)
class DemoAssets:
    """checkpoint: raw official-format state_dict of ``preset`` (torch.save); blurry / sharp: lossless
    RGB H.264 clips of the same frames (read them with vdeblur.runtime.video.iter_frames); clip_meta:
    the clip's metadata (source, seed, fps, blur settings, PSNRs); training_log: how the
    checkpoint was trained and its held-out PSNRs."""

    preset: str
    checkpoint: Path
    blurry: Path
    sharp: Path
    clip_meta: dict[str, Any]
    training_log: Path


def demo_assets(directory: str | Path | None = None) -> DemoAssets:
    """The bundled demo assets (or those of ``directory``), checked to exist."""
    root = Path(directory) if directory is not None else DEMO_DIR
    meta_path = root / "clip.json"
    paths = [root / "mtu_demo.pth", root / "clip_blurry.mp4", root / "clip_sharp.mp4", meta_path,
             root / "training_log.json"]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"{root}: demo asset(s) {', '.join(missing)} missing. Expected the files made by "
                         "scripts/train_demo.py and scripts/make_demo_clip.py (reinstall vdeblur).")
    return DemoAssets(DEMO_PRESET, paths[0], paths[1], paths[2], json.loads(meta_path.read_text()), paths[4])
