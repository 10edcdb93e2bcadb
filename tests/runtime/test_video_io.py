"""`vdeblur run` on real encoded files (made here with PyAV): a span (--start/--frames) with its
audio, audio copied or re-encoded as the container needs, variable frame rates kept, image folders
(--fps, mixed sizes), codecs."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vdeblur.errors import UsageError
from vdeblur.runtime.run import run_video
from vdeblur.runtime.video import VideoSource, encode_png

W, H = 64, 48


def _av_file(path: Path, times: list[float], audio_seconds: float = 0.0) -> Path:
    """H.264 video with a frame at each of ``times`` (seconds; irregular = variable rate) and, if
    asked, an AAC stereo tone of ``audio_seconds``."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=24)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        v.codec_context.time_base = Fraction(1, 1000)
        a = None
        if audio_seconds:
            a = c.add_stream("aac", rate=48000)
            a.layout = "stereo"
        for i, t in enumerate(times):
            f = av.VideoFrame.from_ndarray(np.full((H, W, 3), (i * 20) % 256, np.uint8), format="rgb24")
            f.pts, f.time_base = int(round(t * 1000)), Fraction(1, 1000)
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        if a is not None:
            t = 0
            while t < audio_seconds * 48000:
                tone = np.sin(np.arange(t, t + 1024) / 8).astype(np.float32)[None].repeat(2, 0)
                af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="stereo")
                af.sample_rate, af.pts = 48000, t
                t += 1024
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
    return path


def _streams(path: Path) -> dict[str, object]:
    with av.open(str(path)) as c:
        video = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = [(s.codec_context.name, s) for s in c.streams.audio]
        names = [n for n, _ in audio]
        samples = sum(f.samples for f in c.decode(audio=0)) if audio else 0
        rate = audio[0][1].codec_context.sample_rate if audio else 1
    return {"video_times": video, "audio_codecs": names, "audio_seconds": samples / rate}


@pytest.fixture(scope="module")
def with_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _av_file(tmp_path_factory.mktemp("io") / "in.mp4", [i / 24 for i in range(24)], audio_seconds=1.0)


def test_a_span_keeps_its_audio(mtu_artifact: Path, with_audio: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    summary = run_video(mtu_artifact, with_audio, out, start=0.25, frames=10)
    assert summary["frames"] == 10 and summary["span_s"][0] == 0.25
    assert summary["audio"] == [{"index": 1, "codec_in": "aac", "codec_out": "aac", "how": "copied"}]
    got = _streams(out)
    assert len(got["video_times"]) == 10 and got["video_times"][0] == pytest.approx(0.0, abs=1e-3)
    assert got["audio_codecs"] == ["aac"]
    assert got["audio_seconds"] == pytest.approx(10 / 24, abs=0.05)  # the span, to an AAC packet (21 ms)


def test_webm_reencodes_audio_to_opus(mtu_artifact: Path, with_audio: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.webm"
    summary = run_video(mtu_artifact, with_audio, out, frames=12)
    assert summary["codec"] == "libvpx-vp9" and summary["audio"][0]["codec_out"] == "libopus"
    assert "re-encoded" in summary["audio"][0]["how"]
    got = _streams(out)
    assert got["audio_codecs"] == ["opus"] and got["audio_seconds"] == pytest.approx(0.5, abs=0.06)


def test_variable_frame_rate_stays_variable(mtu_artifact: Path, tmp_path: Path) -> None:
    times = [0.0, 0.03, 0.1, 0.12, 0.25, 0.3, 0.41, 0.45]
    source = _av_file(tmp_path / "vfr.mp4", times)
    out = tmp_path / "out.mkv"
    summary = run_video(mtu_artifact, source, out)
    assert summary["frames"] == len(times)
    np.testing.assert_allclose(_streams(out)["video_times"], times, atol=2e-3)
    assert summary["audio"] == []


def test_h264_or_vp9_on_request(mtu_artifact: Path, with_audio: Path, tmp_path: Path) -> None:
    summary = run_video(mtu_artifact, with_audio, tmp_path / "a.mp4", frames=3, codec="vp9", crf=40)
    assert summary["codec"] == "libvpx-vp9"
    with pytest.raises(UsageError, match="--codec 'h264' cannot be written to .webm"):
        run_video(mtu_artifact, with_audio, tmp_path / "b.webm", frames=3, codec="h264")


def test_image_folders(mtu_artifact: Path, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i:03d}.png").write_bytes(encode_png(np.full((H, W, 3), 40 * i, np.uint8)))
    out = tmp_path / "out.mp4"
    summary = run_video(mtu_artifact, folder, out, fps=12.0, start=0.25)  # 0.25 s at 12 fps: 3 frames skipped
    assert summary["frames"] == 3 and summary["output_fps"] == 12.0
    np.testing.assert_allclose(_streams(out)["video_times"], [0, 1 / 12, 2 / 12], atol=2e-3)
    (folder / "009.png").write_bytes(encode_png(np.zeros((H + 2, W, 3), np.uint8)))
    with pytest.raises(UsageError, match=r"009\.png: is 64x50, the folder's first frame 64x48"):
        run_video(mtu_artifact, folder, tmp_path / "mixed.mp4")
    with pytest.raises(UsageError, match="--fps is for image folders"):
        run_video(mtu_artifact, out, tmp_path / "x.mp4", fps=10.0)
    with pytest.raises(UsageError, match="--start -1.0 / --frames None are invalid"):
        run_video(mtu_artifact, folder, tmp_path / "y.mp4", start=-1.0)


def _ten_bit_file(path: Path, frames: int = 4) -> Path:
    """H.264 High 10 (yuv420p10le): a smooth ramp that 8 bits would band."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=24)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p10le"
        ramp = (np.linspace(0, 65535, W, dtype=np.float64)[None, :, None] * np.ones((H, 1, 3))).astype(np.uint16)
        for _ in range(frames):
            for p in v.encode(av.VideoFrame.from_ndarray(ramp, format="rgb48le")):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return path


def test_ten_bit_in_ten_bit_out(mtu_artifact: Path, tmp_path: Path) -> None:
    source = _ten_bit_file(tmp_path / "in10.mp4")
    first, _ = next(VideoSource(source).frames())
    assert first.dtype == np.uint16 and (first % 257 != 0).mean() > 0.5  # 10-bit values, not 8-bit ones scaled
    out = tmp_path / "out.mkv"
    summary = run_video(mtu_artifact, source, out)
    assert (summary["bit_depth_in"], summary["bit_depth_out"], summary["notes"]) == (10, 10, [])
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    webm = run_video(mtu_artifact, source, tmp_path / "out.webm")  # VP9 here has no 10-bit encoder: said so
    assert webm["bit_depth_out"] == 8 and "10-bit input written as 8-bit" in webm["notes"][0]


def test_odd_sizes_are_padded_to_a_playable_4_2_0(mtu_artifact: Path, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(encode_png(np.full((37, 51, 3), 60 * i, np.uint8)))
    out = tmp_path / "out.mp4"
    summary = run_video(mtu_artifact, folder, out)
    assert summary["size"] == [51, 37] and summary["size_out"] == [52, 38]
    assert "odd size 51x37 padded to 52x38" in summary["notes"][0]
    with av.open(str(out)) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.pix_fmt, ctx.width, ctx.height) == ("yuv420p", 52, 38)
