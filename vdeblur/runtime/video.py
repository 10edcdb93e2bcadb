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


def probe_fps(source: str | Path, default: float = 30.0) -> float:
    """Frame rate of a video file (the default for image folders or unknown rates)."""
    path = Path(source)
    if not path.exists():
        raise UsageError(f"{path}: does not exist. Expected a video file or a folder of images.")
    if path.is_dir():
        return default
    av = _av()
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate if container.streams.video else None
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{path}: cannot be opened as a video ({e}). Expected mp4, mkv, avi or mov.") from e
    return float(rate) if rate else default


def encode_png(frame: np.ndarray) -> bytes:
    """uint8 RGB (H, W, 3) -> PNG bytes."""
    av = _av()
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
    packets = ctx.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
    packets += ctx.encode(None)
    return b"".join(bytes(p) for p in packets)


class FrameSink:
    """Writes frames to a video file (H.264) or a folder of PNGs, atomically.

    Frames go to a hidden temporary file or folder beside ``path``; :meth:`commit` renames it into
    place, :meth:`abort` (or leaving the ``with`` block with an exception) deletes it, so a failed
    run leaves no partial output.
    """

    def __init__(self, path: str | Path, fps: float = 30.0, crf: int = 18) -> None:
        import os
        import tempfile

        self.path = Path(path)
        self.is_video = self.path.suffix.lower() in VIDEO_SUFFIXES
        if self.path.exists() and (self.path.is_file() or any(self.path.iterdir())):
            raise UsageError(f"{self.path}: exists. Expected a new output path (nothing is overwritten).")
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            if self.is_video:
                fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.partial-", suffix=self.path.suffix, dir=parent)
                os.close(fd)
                self._tmp = Path(tmp)
            else:
                self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=parent))
        except OSError as e:
            raise UsageError(f"{self.path}: cannot be written ({e.strerror or e}).") from e
        self.fps = fps
        self.crf = crf
        self.count = 0
        self._container: Any = None
        self._stream: Any = None

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB frame (H, W, 3)."""
        if self.is_video:
            self._write_video(frame)
        else:
            (self._tmp / f"{self.count:06d}.png").write_bytes(encode_png(frame))
        self.count += 1

    def _write_video(self, frame: np.ndarray) -> None:
        av = _av()
        if self._container is None:
            from fractions import Fraction

            self._container = av.open(str(self._tmp), "w")
            stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height = frame.shape[1], frame.shape[0]
            even = frame.shape[0] % 2 == 0 and frame.shape[1] % 2 == 0
            stream.pix_fmt = "yuv420p" if even else "yuv444p"  # 4:2:0 needs even sizes
            stream.options = {"crf": str(self.crf), "preset": "medium"}
            self._stream = stream
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def commit(self) -> Path:
        import os

        if self.is_video:
            if self._container is None:
                self.abort()
                raise MediaError(f"{self.path}: no frames to write.")
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
        umask = os.umask(0)
        os.umask(umask)
        self._tmp.chmod((0o777 if self._tmp.is_dir() else 0o666) & ~umask)  # mkstemp/mkdtemp use 0600/0700
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        import shutil

        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - cleaning up after a failure
                pass
            self._container = None
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> FrameSink:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.abort()
