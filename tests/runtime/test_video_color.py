"""Colour in and out (vdeblur.runtime.video): the input's matrix and range are used to decode, untagged
input follows the players' rule (BT.709 for HD, BT.601 for SD), and outputs carry explicit tags.
Real files, encoded here with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vdeblur.runtime.video import Color, FrameSink, iter_frames, probe_color

# BT.709 and BT.601 limited-range Y'CbCr of pure green (R, G, B) = (0, 255, 0).
GREEN_709 = (173, 42, 26)
GREEN_601 = (145, 54, 34)


def _yuv_file(path: Path, width: int, height: int, yuv: tuple[int, int, int], tags: dict[str, int] | None) -> Path:
    """A short H.264 4:4:4 file whose every pixel is the given Y'CbCr, tagged as ``tags`` (or untagged)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.options = {"qp": "0"}  # lossless: the decoder sees exactly these values
        for key, value in (tags or {}).items():
            setattr(stream.codec_context, key, value)
        planes = np.stack([np.full((height, width), v, np.uint8) for v in yuv])
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(planes, format="yuv444p")
            for key, value in (tags or {}).items():
                setattr(frame, key, value)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.mark.parametrize(("width", "height", "yuv", "tags"), [
    (1280, 720, GREEN_709, None),                                            # untagged HD: BT.709
    (320, 180, GREEN_601, None),                                             # untagged SD: BT.601
    (320, 180, GREEN_709, {"colorspace": 1, "color_range": 1}),              # tagged BT.709 wins over size
    (1280, 720, GREEN_601, {"colorspace": 6, "color_range": 1}),             # tagged BT.601 HD
])
def test_decoding_uses_the_input_matrix(tmp_path: Path, width: int, height: int, yuv: tuple[int, int, int],
                                        tags: dict[str, int] | None) -> None:
    path = _yuv_file(tmp_path / "in.mp4", width, height, yuv, tags)
    frame = next(iter_frames(path))
    assert np.abs(frame[height // 2, width // 2].astype(int) - [0, 255, 0]).max() <= 2
    color = probe_color(path)
    assert color is not None and color.assumed is (tags is None)


@pytest.mark.parametrize(("width", "height", "names"), [
    (1280, 720, ("bt709", "bt709", "bt709", "tv")),
    (320, 180, ("smpte170m", "smpte170m", "smpte170m", "tv")),
])
def test_outputs_carry_explicit_tags_and_round_trip(tmp_path: Path, width: int, height: int,
                                                    names: tuple[str, ...]) -> None:
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 1] = 255
    rgb[: height // 2, :, 0] = 200  # a second colour, in a block: chroma subsampling stays exact inside
    out = tmp_path / "out.mp4"
    with FrameSink(out, fps=24) as sink:
        sink.write(rgb)
        sink.commit()
    color = probe_color(out)
    assert color is not None and not color.assumed
    d = color.to_dict()["names"]
    assert (d["matrix"], d["primaries"], d["transfer"], d["range"]) == names
    back = next(iter_frames(out))
    for y in (height // 4, 3 * height // 4):  # inside each block
        assert np.abs(back[y, width // 2].astype(int) - rgb[y, width // 2]).max() <= 3


def test_output_keeps_the_source_colour(tmp_path: Path) -> None:
    """An SD source tagged BT.709 gives an SD output tagged BT.709 (what the model does not change, kept)."""
    source = _yuv_file(tmp_path / "in.mp4", 320, 180, GREEN_709, {"colorspace": 1, "color_range": 1,
                                                                 "color_primaries": 1, "color_trc": 1})
    color = probe_color(source)
    assert color == Color(1, 1, 1, 1, assumed=False)
    out = tmp_path / "out.mp4"
    with FrameSink(out, fps=24, color=color) as sink:
        for f in iter_frames(source):
            sink.write(f)
        sink.commit()
    assert probe_color(out) == color
    assert np.abs(next(iter_frames(out))[90, 160].astype(int) - [0, 255, 0]).max() <= 2


def test_round_trip_keeps_the_mean_colour(tmp_path: Path) -> None:
    """4:2:0 with swscale's default flags shifts the mean by about -1.2 levels; ours keeps it within
    0.5 (a textured HD frame, written and read back)."""
    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 256, (3, 23, 41)).astype(np.float32)
    ys, xs = np.linspace(0, 22, 720), np.linspace(0, 40, 1280)
    frame = np.stack([np.interp(xs, np.arange(41), c[int(y)]) for y in ys for c in coarse[:1]], 0)
    rgb = np.stack([np.roll(frame, 60 * k, axis=1) for k in range(3)], -1)
    rgb = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
    out = tmp_path / "hd.mp4"
    with FrameSink(out, fps=24) as sink:
        sink.write(rgb)
        sink.commit()
    back = next(iter_frames(out)).astype(np.float64)
    shift = back.mean((0, 1)) - rgb.astype(np.float64).mean((0, 1))
    assert np.abs(shift).max() < 0.5, shift
