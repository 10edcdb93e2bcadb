"""Frame sources: video files (PyAV) and folders of images, as RGB float32 (3, H, W) in [0, 1].

PyAV is imported lazily; this module never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.errors import MissingDependencyError, UsageError, VdeblurError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class MediaError(VdeblurError):
    """A video or image that cannot be read."""


def _av() -> Any:
    try:
        import av
    except ImportError as e:
        raise MissingDependencyError(
            "av: not installed, but reading and writing video needs it. It is a dependency of vdeblur: "
            "reinstall vdeblur or run `pip install av`."
        ) from e
    return av


def image_files(folder: Path) -> list[Path]:
    """The images of a folder in name order (natural order for numbered names)."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]

    def key(p: Path) -> tuple[Any, ...]:
        digits = "".join(ch for ch in p.stem if ch.isdigit())
        return (int(digits) if digits else -1, p.name)

    return sorted(files, key=key)


def _decode_image(path: Path) -> np.ndarray:
    av = _av()
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, StopIteration, OSError) as e:
        raise MediaError(f"{path}: cannot be decoded as an image ({e}). Expected a PNG or JPEG file.") from e


def iter_frames(source: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Frames of a video file or an image folder as uint8 RGB arrays (H, W, 3), in order."""
    path = Path(source)
    if not path.exists():
        raise UsageError(f"{path}: does not exist. Expected a video file or a folder of images.")
    count = 0
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise UsageError(f"{path}: holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        for f in files:
            if max_frames is not None and count >= max_frames:
                return
            yield _decode_image(f)
            count += 1
        return
    av = _av()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{path}: cannot be opened as a video ({e}). Expected mp4, mkv, avi or mov.") from e
    with container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream.")
        try:
            for frame in container.decode(video=0):
                if max_frames is not None and count >= max_frames:
                    return
                yield frame.to_ndarray(format="rgb24")
                count += 1
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: decoding failed after {count} frames ({e}). The file may be corrupt.") from e
    if count == 0:
        raise MediaError(f"{path}: no frame could be decoded.")


def to_float(frame: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]."""
    return np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.float32) / 255.0


def load_frames(source: str | Path, max_frames: int | None = None, height: int | None = None,
                width: int | None = None) -> np.ndarray:
    """Up to ``max_frames`` frames as float32 (T, 3, H, W) in [0, 1].

    With ``height`` and ``width`` the frames are centre-cropped to that size (a frame smaller than
    it is an error: calibration and validation must see the size they are run at).
    """
    frames = []
    for f in iter_frames(source, max_frames):
        if height is not None and width is not None:
            fh, fw = f.shape[:2]
            if fh < height or fw < width:
                raise UsageError(f"{source}: frames are {fw}x{fh}, smaller than the requested {width}x{height}.")
            y, x = (fh - height) // 2, (fw - width) // 2
            f = f[y : y + height, x : x + width]
        frames.append(to_float(f))
    if not frames:
        raise MediaError(f"{source}: no frames.")
    return np.stack(frames)
