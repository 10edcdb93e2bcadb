"""Frame sources: video files (PyAV) and folders of images, as RGB float32 (3, H, W) in [0, 1].

Colour follows ffmpeg's conventions and what players do. A YUV video is converted to RGB with the
matrix and range its frames are tagged with. Untagged frames are taken as BT.709 when they are HD
(height above 576 or width above 1024) and as BT.601 otherwise, in limited ("tv") range. A video
written by :class:`FrameSink` is converted back with the colour of its source (:func:`probe_color`,
or the same by-size rule) and tagged explicitly (matrix, primaries, transfer, range), so that
players do not have to guess.

PyAV is imported lazily; this module never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.contract.files import default_mode
from vdeblur.errors import MissingDependencyError, UsageError, VdeblurError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class MediaError(VdeblurError):
    """A video or image that cannot be read."""


# AVColorSpace (frame / stream tags) -> swscale's SWS_CS_* matrix constants; names as ffmpeg prints them.
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_MATRIX_NAMES = {1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}
_PRIMARIES_NAMES = {1: "bt709", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020"}
_TRANSFER_NAMES = {1: "bt709", 6: "smpte170m", 7: "smpte240m", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12"}
_RANGE_NAMES = {1: "tv", 2: "pc"}
_UNSPECIFIED = 2  # AVCOL_SPC / AVCOL_PRI / AVCOL_TRC_UNSPECIFIED


@dataclass(frozen=True)
class Color:
    """A video's colour description as ffmpeg tags it (AVColorSpace, AVColorPrimaries,
    AVColorTransferCharacteristic, AVColorRange integers); ``assumed``: the source was untagged
    and the values follow the by-size rule."""

    matrix: int
    primaries: int
    transfer: int
    range: int
    assumed: bool = False

    @classmethod
    def for_size(cls, width: int, height: int) -> Color:
        """What players assume for an untagged video: BT.709 for HD, BT.601 (SMPTE 170M) for SD, tv range."""
        if height > 576 or width > 1024:
            return cls(1, 1, 1, 1, assumed=True)
        return cls(6, 6, 6, 1, assumed=True)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["names"] = {"matrix": _MATRIX_NAMES.get(self.matrix, str(self.matrix)),
                      "primaries": _PRIMARIES_NAMES.get(self.primaries, str(self.primaries)),
                      "transfer": _TRANSFER_NAMES.get(self.transfer, str(self.transfer)),
                      "range": _RANGE_NAMES.get(self.range, str(self.range))}
        return d


def frame_color(frame: Any) -> Color:
    """The colour of a decoded PyAV video frame, untagged fields filled by :meth:`Color.for_size`."""
    guess = Color.for_size(frame.width, frame.height)
    matrix = frame.colorspace if frame.colorspace in _SWS_MATRIX else None
    primaries = frame.color_primaries if frame.color_primaries not in (0, _UNSPECIFIED) else None
    transfer = frame.color_trc if frame.color_trc not in (0, _UNSPECIFIED) else None
    rng = frame.color_range if frame.color_range in (1, 2) else None
    return Color(matrix or guess.matrix, primaries or guess.primaries, transfer or guess.transfer,
                 rng or guess.range, assumed=matrix is None)


def _sws_flags() -> Any:
    """swscale flags for colour conversion: accurate rounding and full chroma interpolation in and
    out (ffmpeg's ``-sws_flags +accurate_rnd+full_chroma_int+full_chroma_inp``). swscale's defaults
    shift the mean of a 4:2:0 round trip by about -1.2 levels; these keep it within 0.2."""
    from av.video.reformatter import Interpolation as interp

    return interp.BILINEAR | interp.ACCURATE_RND | interp.FULL_CHR_H_INT | interp.FULL_CHR_H_INP


def bit_depth(frame: Any) -> int:
    """Bits per component of a decoded frame's pixel format (8 for rgb24/yuv420p, 10 for yuv420p10le)."""
    comps = frame.format.components
    return max((c.bits for c in comps), default=8) if comps else 8


def frame_to_rgb(frame: Any, deep: bool = False) -> np.ndarray:
    """A decoded PyAV video frame as RGB (H, W, 3): uint8, or uint16 (0..65535) with ``deep`` (for
    inputs of more than 8 bits), YUV converted with the frame's own matrix and range
    (:func:`frame_color`)."""
    fmt = "rgb48le" if deep else "rgb24"
    if frame.format.is_rgb or frame.format.name in ("gray", "gray8", "pal8", "gbrp"):
        return frame.to_ndarray(format=fmt)
    color = frame_color(frame)
    sws = _SWS_MATRIX[color.matrix]
    rgb = frame.reformat(format=fmt, src_colorspace=sws, dst_colorspace=sws, src_color_range=color.range,
                         dst_color_range=2, interpolation=_sws_flags())
    return rgb.to_ndarray()


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
                yield frame_to_rgb(frame)
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


def load_calibration(source: str | Path, height: int, width: int, max_frames: int = 16) -> np.ndarray:
    """Calibration frames for an int8/fp8 export: up to ``max_frames`` frames of a video file or an
    image folder, centre-cropped to ``height`` x ``width``, float32 (T, 3, H, W) in [0, 1]. The source
    is checked first (exists, is a video, holds images) with an error naming what is expected."""
    path = Path(source)
    expected = "Expected --calibration to name a video file or a folder of images."
    if not path.exists():
        raise UsageError(f"{path}: does not exist. {expected}")
    if path.is_dir() and not image_files(path):
        raise UsageError(f"{path}: holds no images ({', '.join(IMAGE_SUFFIXES)}). {expected}")
    if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UsageError(f"{path}: is not a video ({', '.join(VIDEO_SUFFIXES)}). {expected}")
    return load_frames(path, max_frames=max_frames, height=height, width=width)


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


def probe_frame_count(source: str | Path) -> int | None:
    """How many frames a source holds: the images of a folder, or the video stream's frame count
    (or duration x rate) from the container; None when the container does not say."""
    path = Path(source)
    if path.is_dir():
        return len(image_files(path))
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            if stream.duration and stream.time_base and stream.average_rate:
                return int(round(float(stream.duration * stream.time_base * stream.average_rate)))
    except (av.error.FFmpegError, OSError):
        return None
    return None


def probe_color(source: str | Path) -> Color | None:
    """The colour of a video file's first frame (:func:`frame_color`); None for image folders,
    image files and RGB videos (nothing to convert)."""
    path = Path(source)
    if path.is_dir():
        return None
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            frame = next(container.decode(video=0), None)
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{path}: cannot be opened as a video ({e}). Expected mp4, mkv, avi or mov.") from e
    if frame is None or frame.format.is_rgb or frame.format.name == "gbrp":
        return None
    return frame_color(frame)


class VideoSource:
    """A video file or an image folder, read for `vdeblur run`: frames with their timestamps, over
    a span, with the input's colour and its audio streams.

    start: seconds to skip (video: frames whose timestamp is before ``start`` are decoded and
    dropped, as ``ffmpeg -ss`` after ``-i`` does); frames: at most this many frames; fps: the rate
    of an image folder (default 30). Iterating yields ``(rgb uint8 (H, W, 3), t)`` with ``t`` in
    seconds from the start of the span (the input's own timestamps: variable frame rates stay
    variable); frames of inputs with more than 8 bits per component come as uint16 RGB. With
    ``audio_sink`` (a :class:`FrameSink`), the input's audio streams are announced
    to it (:meth:`FrameSink.add_audio`) and every audio packet met while reading is handed to it
    (:meth:`FrameSink.audio_packet`). Image folders must hold one frame size (a clear error otherwise).
    """

    def __init__(self, path: str | Path, start: float = 0.0, frames: int | None = None,
                 fps: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UsageError(f"{self.path}: does not exist. Expected a video file or a folder of images.")
        if start < 0 or (frames is not None and frames < 1):
            raise UsageError(f"run: --start {start} / --frames {frames} are invalid. Expected start >= 0 and "
                             "frames >= 1.")
        if fps is not None and not fps > 0:
            raise UsageError(f"run: --fps {fps} is invalid. Expected a positive frame rate.")
        self.start, self.max_frames = float(start), frames
        self.is_folder = self.path.is_dir()
        if not self.is_folder and fps is not None:
            raise UsageError(f"{self.path}: --fps is for image folders; a video file keeps its own timestamps.")
        self.fps = fps or (30.0 if self.is_folder else probe_fps(self.path))
        self.color = None if self.is_folder else probe_color(self.path)
        total = probe_frame_count(self.path)
        if total is not None:
            skipped = int(round(self.start * self.fps))
            total = max(0, total - skipped)
            total = min(total, frames) if frames is not None else total
        self.total = total
        self.end = 0.0  # the span's end (seconds from its start), known once read
        self.bit_depth: int | None = 8 if self.is_folder else None  # video: from the first frame

    def frames(self, audio_sink: Any = None) -> Iterator[tuple[np.ndarray, float]]:
        if self.is_folder:
            yield from self._folder()
        else:
            yield from self._video(audio_sink)

    def _folder(self) -> Iterator[tuple[np.ndarray, float]]:
        files = image_files(self.path)
        if not files:
            raise UsageError(f"{self.path}: holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        first = int(round(self.start * self.fps))
        size = None
        for k, f in enumerate(files[first:]):
            if self.max_frames is not None and k >= self.max_frames:
                break
            image = _decode_image(f)
            if size is not None and image.shape != size:
                raise UsageError(f"{f}: is {image.shape[1]}x{image.shape[0]}, the folder's first frame "
                                 f"{size[1]}x{size[0]}. Expected one frame size per folder (resize them first).")
            size = image.shape
            self.end = (k + 1) / self.fps
            yield image, k / self.fps

    def _video(self, audio_sink: Any) -> Iterator[tuple[np.ndarray, float]]:
        av = _av()
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as e:
            raise MediaError(f"{self.path}: cannot be opened as a video ({e}).") from e
        count = 0
        with container:
            if not container.streams.video:
                raise MediaError(f"{self.path}: has no video stream.")
            video = container.streams.video[0]
            # Times count from the container's start (e.g. MPEG-TS starts at 1.4 s), for video and audio alike.
            origin = float(container.start_time) / 1e6 if container.start_time else 0.0
            audio = list(container.streams.audio) if audio_sink is not None else []
            if audio:
                audio_sink.add_audio(audio, start=origin + self.start)
            streams = [video, *audio]
            tb = float(video.time_base) if video.time_base else 1.0 / self.fps
            try:
                for packet in container.demux(*streams):
                    if packet.stream.type == "audio":
                        audio_sink.audio_packet(packet)
                        continue
                    for frame in packet.decode():
                        t = frame.pts * tb - origin if frame.pts is not None else count / self.fps
                        if t < self.start - 1e-6:
                            continue
                        if self.max_frames is not None and count >= self.max_frames:
                            return
                        rate = float(video.average_rate) if video.average_rate else self.fps
                        self.end = t - self.start + 1.0 / rate
                        if self.bit_depth is None:
                            self.bit_depth = bit_depth(frame)
                        yield frame_to_rgb(frame, deep=self.bit_depth > 8), t - self.start
                        count += 1
            except av.error.FFmpegError as e:
                raise MediaError(f"{self.path}: decoding failed after {count} frames ({e}). The file may be "
                                 "corrupt.") from e
        if count == 0:
            raise MediaError(f"{self.path}: no frame in the span (start {self.start} s).")


def _to_uint(frame: np.ndarray, bits: int) -> np.ndarray:
    """uint8 / uint16 / float [0, 1] RGB -> uint8 (bits 8) or uint16 (bits 16), rounded."""
    if frame.dtype == (np.uint8 if bits == 8 else np.uint16):
        return frame
    peak = 255.0 if bits == 8 else 65535.0
    if frame.dtype == np.uint8:
        x = frame.astype(np.float32) / 255.0
    elif frame.dtype == np.uint16:
        x = frame.astype(np.float32) / 65535.0
    else:
        x = np.clip(frame, 0.0, 1.0)
    return (x * peak + 0.5).astype(np.uint8 if bits == 8 else np.uint16)


def encode_png(frame: np.ndarray) -> bytes:
    """uint8 RGB (H, W, 3) -> PNG bytes."""
    av = _av()
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
    packets = ctx.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
    packets += ctx.encode(None)
    return b"".join(bytes(p) for p in packets)


# The temporary file's name keeps its suffix, but name the muxer anyway (m4v -> mp4).
_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}
# Output container -> (encoder, its quality option, default quality): H.264 for mp4/mov/mkv/avi
# (ffmpeg's CRF 18: visually lossless), VP9 for webm (CRF 31 with an unconstrained bitrate, as the
# VP9 guides recommend).
CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".avi": "libx264",
          ".webm": "libvpx-vp9"}
DEFAULT_CRF = {"libx264": 18, "libvpx-vp9": 31}
CODEC_NAMES = {"h264": "libx264", "vp9": "libvpx-vp9"}  # --codec


def output_kind(path: str | Path) -> str:
    """"video" for a known video extension, "folder" for a PNG folder (a path ending with "/" or an
    existing empty directory); anything else is a UsageError (never a silent folder)."""
    text = str(path)
    p = Path(text)
    if p.suffix.lower() in CODECS:
        return "video"
    if text.endswith(("/", "\\")) or (p.is_dir() and not any(p.iterdir())):
        return "folder"
    what = f"extension {p.suffix!r}" if p.suffix else "no extension"
    raise UsageError(f"{p}: {what} is not an output vdeblur writes. Expected a video file "
                     f"({', '.join(sorted(CODECS))}) or a folder for PNG frames, written with a trailing '/'.")


class FrameSink:
    """Writes frames to a video file (H.264 for mp4/mov/mkv/avi, VP9 for webm) or a folder of PNGs,
    atomically.

    Frames go to a hidden temporary file or folder beside ``path``; :meth:`commit` renames it into
    place, :meth:`abort` (or leaving the ``with`` block with an exception) deletes it, so a failed
    run leaves no partial output. The parent directory must exist (as with ffmpeg); an unknown
    extension is an error (:func:`output_kind`). crf: the encoder's quality (default per codec:
    :data:`DEFAULT_CRF`).
    """

    def __init__(self, path: str | Path, fps: float = 30.0, crf: int | None = None, color: Color | None = None,
                 codec: str | None = None, bit_depth: int = 8) -> None:
        import os
        import tempfile

        kind = output_kind(path)
        self.path = Path(path)
        self.is_video = kind == "video"
        if self.path.exists() and (self.path.is_file() or any(self.path.iterdir())):
            raise UsageError(f"{self.path}: exists. Expected a new output path (nothing is overwritten).")
        parent = self.path.parent
        if not parent.is_dir():
            raise UsageError(f"{self.path}: the directory {parent} does not exist. Create it first (nothing is "
                             "created silently).")
        self.codec = CODECS.get(self.path.suffix.lower()) if self.is_video else "png"
        if codec is not None and self.is_video:
            wanted = CODEC_NAMES.get(codec)
            allowed = ("libvpx-vp9",) if self.path.suffix.lower() == ".webm" else ("libx264", "libvpx-vp9")
            if wanted not in allowed:
                raise UsageError(f"{self.path}: --codec {codec!r} cannot be written to {self.path.suffix}. Expected "
                                 f"one of {', '.join(k for k, v in CODEC_NAMES.items() if v in allowed)}.")
            self.codec = wanted
        try:
            if self.is_video:
                fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.partial-", suffix=self.path.suffix, dir=parent)
                os.close(fd)
                self._tmp = Path(tmp)
            else:
                self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=parent))
        except OSError as e:
            raise UsageError(f"{self.path}: cannot be written ({e.strerror or e}).") from e
        self.fps = fps
        self.crf = crf if crf is not None else DEFAULT_CRF.get(self.codec or "", 18)
        self.bit_depth = bit_depth  # wanted; the video's is in self.written_depth once the first frame is in
        self.written_depth: int | None = None
        self.size_out: tuple[int, int] | None = None
        self.notes: list[str] = []  # what differs from the input, said once
        self._audio_in: list[Any] = []  # input audio streams to carry over (add_audio)
        self._audio_out: dict[int, Any] = {}  # input stream index -> (output stream, encoder or None)
        self._pending: list[tuple[float, int, Any]] = []  # held audio: (time, input stream index, packet/frame)
        self._copyable: dict[int, bool] = {}
        self._last_t = -1.0
        self.audio: list[dict[str, Any]] = []  # what was done with each audio stream
        self.color = color  # None: by the frame size (Color.for_size), written as explicit tags
        self.count = 0
        self._container: Any = None
        self._stream: Any = None
        self._last_pts = -1

    def add_audio(self, streams: list[Any], start: float = 0.0) -> None:
        """Carry these input audio streams into the video: packets are copied when the container
        takes the codec, else re-encoded (AAC; Opus for webm). ``start``: the span's start in the
        input (seconds); packets before it are dropped and the rest shifted, so audio and video
        stay in step. Call before the first :meth:`write`; then pass packets to :meth:`audio_packet`."""
        if self.is_video:
            self._audio_in = list(streams)
            self._audio_start = float(start)

    def audio_packet(self, packet: Any) -> None:
        """One audio packet of an input stream given to :meth:`add_audio`, in demux order, while the
        input is open. It is held until the video has passed its time (then it is certainly inside
        the span) and dropped if it falls outside the span."""
        if not self.is_video or packet.pts is None or packet.stream not in self._audio_in:
            return
        t = float(packet.pts * packet.time_base) - self._audio_start
        if t < -1e-6:
            return
        if not self._probe_copy(packet.stream):
            for frame in packet.decode():  # decoded now: the input closes before commit
                self._pending.append((t, packet.stream.index, frame))
        else:
            self._pending.append((t, packet.stream.index, packet))
        if self._container is not None:
            self._flush_audio(self._last_t)

    def _probe_copy(self, stream: Any) -> bool:
        """Whether this output container takes the stream's codec as it is (asked once per stream)."""
        if stream.index not in self._copyable:
            av = _av()
            fmt = _MUXERS.get(self.path.suffix.lower())
            try:
                with av.open(os.devnull, "w", format=fmt) as probe:
                    probe.add_stream_from_template(stream)
                self._copyable[stream.index] = True
            except (ValueError, av.error.FFmpegError):
                self._copyable[stream.index] = False
        return self._copyable[stream.index]

    def _flush_audio(self, until: float) -> None:
        """Mux the held audio with time up to ``until`` (seconds from the span's start)."""
        keep = []
        for t, index, item in self._pending:
            if t > until:
                keep.append((t, index, item))
                continue
            out, encoder = self._audio_out.get(index, (None, None))
            if out is None:
                continue
            if encoder is None:
                shift = int(round(self._audio_start / float(item.time_base)))
                item.pts -= shift
                if item.dts is not None:
                    item.dts -= shift
                item.stream = out
                self._container.mux(item)
            else:
                item.pts = None
                for p in out.encode(item):
                    self._container.mux(p)
        self._pending = keep

    def _open_audio(self) -> None:
        for s in self._audio_in:
            entry = {"index": s.index, "codec_in": s.codec_context.name}
            if self._probe_copy(s):
                out = self._container.add_stream_from_template(s)
                self._audio_out[s.index] = (out, None)
                entry.update(codec_out=s.codec_context.name, how="copied")
            else:
                codec = "libopus" if self.path.suffix.lower() == ".webm" else "aac"
                rate = 48000 if codec == "libopus" else (s.codec_context.sample_rate or 48000)
                out = self._container.add_stream(codec, rate=rate)
                out.layout = s.codec_context.layout.name if s.codec_context.layout else "stereo"
                self._audio_out[s.index] = (out, True)
                entry.update(codec_out=codec, how="re-encoded (the container does not take "
                             f"{s.codec_context.name})")
            self.audio.append(entry)

    def write(self, frame: np.ndarray, t: float | None = None) -> None:
        """Append one RGB frame (H, W, 3): uint8, uint16, or float in [0, 1]; ``t``: its time in seconds
        from the start (default ``count / fps``), kept so that variable frame rates stay variable."""
        if self.is_video:
            self._write_video(frame, self.count / self.fps if t is None else t)
        else:
            (self._tmp / f"{self.count:06d}.png").write_bytes(encode_png(_to_uint(frame, 8)))
        self.count += 1

    def _write_video(self, frame: np.ndarray, t: float) -> None:
        av = _av()
        if self._container is None:
            from fractions import Fraction

            self._container = av.open(str(self._tmp), "w", format=_MUXERS.get(self.path.suffix.lower()))
            stream = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
            h, w = frame.shape[:2]
            if self.codec == "libx264" and (h % 2 or w % 2):
                # H.264 4:2:0 needs even sizes, and many players refuse 4:4:4: pad the last row/column.
                self.notes.append(f"odd size {w}x{h} padded to {w + w % 2}x{h + h % 2} (edge replicated) for "
                                  "4:2:0, which players expect")
                h, w = h + h % 2, w + w % 2
            self.size_out = (w, h)
            stream.width, stream.height = w, h
            deep = self.bit_depth > 8 and self.codec == "libx264"
            if self.bit_depth > 8 and not deep:
                self.notes.append(f"{self.bit_depth}-bit input written as 8-bit: this {self.codec} encoder has no "
                                  "high-bit-depth format (use .mp4/.mkv with h264)")
            self.written_depth = 10 if deep else 8
            stream.pix_fmt = "yuv420p10le" if deep else "yuv420p"
            if self.codec == "libvpx-vp9":
                stream.options = {"crf": str(self.crf), "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}
            else:
                stream.options = {"crf": str(self.crf), "preset": "medium"}
            if self.color is None or self.color.matrix not in _SWS_MATRIX:
                self.color = Color.for_size(frame.shape[1], frame.shape[0])
            self.color = replace(self.color, assumed=False)  # written as explicit tags
            ctx = stream.codec_context
            ctx.colorspace, ctx.color_primaries = self.color.matrix, self.color.primaries
            ctx.color_trc, ctx.color_range = self.color.transfer, self.color.range
            self._time_base = Fraction(1, 90000)  # MPEG's clock: any input timestamp fits
            stream.codec_context.time_base = self._time_base
            self._stream = stream
            self._open_audio()
        c = self.color
        assert c is not None and self.size_out is not None
        deep = self.written_depth is not None and self.written_depth > 8
        pixels = _to_uint(frame, 16 if deep else 8)
        w, h = self.size_out
        if pixels.shape[:2] != (h, w):
            pixels = np.pad(pixels, ((0, h - pixels.shape[0]), (0, w - pixels.shape[1]), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb48le" if deep else "rgb24").reformat(
            format=self._stream.pix_fmt, src_colorspace=_SWS_MATRIX[c.matrix], dst_colorspace=_SWS_MATRIX[c.matrix],
            src_color_range=2, dst_color_range=c.range, interpolation=_sws_flags())
        vf.colorspace, vf.color_range = c.matrix, c.range
        vf.color_primaries, vf.color_trc = c.primaries, c.transfer
        pts = int(round(t / self._time_base))
        if pts <= self._last_pts:  # strictly increasing, whatever the input's rounding
            pts = self._last_pts + 1
        vf.pts, vf.time_base = pts, self._time_base
        self._last_pts = pts
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self._last_t = t
        self._flush_audio(t)

    def commit(self, end: float | None = None) -> Path:
        """Finish the file and move it into place. ``end``: the span's end in seconds (audio past it
        is not written)."""
        import os

        if self.is_video:
            if self._container is None:
                self.abort()
                raise MediaError(f"{self.path}: no frames to write.")
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._flush_audio(float("inf") if end is None else end - 1e-9)
            self._pending = []
            for out, encoder in self._audio_out.values():
                if encoder is not None:
                    for packet in out.encode(None):
                        self._container.mux(packet)
            self._container.close()
            self._container = None
        default_mode(self._tmp)  # mkstemp/mkdtemp use 0600/0700
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
