"""`vdeblur run` on real video files and PNG folders; `vdeblur compare`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vdeblur.data.texture import moving_texture
from vdeblur.errors import UsageError
from vdeblur.metrics import psnr
from vdeblur.runtime.run import compare_backends, run_video
from vdeblur.runtime.stream import Stream
from vdeblur.runtime.video import FrameSink, MediaError, encode_png, iter_frames, probe_fps


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vdeblur", *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def clip_u8() -> np.ndarray:
    return (moving_texture(9, 36, 52).transpose(0, 2, 3, 1) * 255 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory, clip_u8: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("video") / "in.mp4"
    with FrameSink(path, fps=24) as sink:
        for f in clip_u8:
            sink.write(f)
        sink.commit()
    return path


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory: pytest.TempPathFactory, clip_u8: np.ndarray) -> Path:
    folder = tmp_path_factory.mktemp("pngs")
    for i, f in enumerate(clip_u8):
        (folder / f"frame_{i + 1}.png").write_bytes(encode_png(f))  # 1..9: natural order, not lexicographic
    return folder


def test_mp4_in_mp4_out(mtu_artifact: Path, mp4: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    proc = cli("run", str(mtu_artifact), str(mp4), str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["frames"] == 9 and summary["fps"] > 0 and summary["size"] == [52, 36]
    assert set(summary["latency_ms"]) == {"min", "p50", "p90", "p99", "max", "mean"}
    # the source's colour (untagged SD: BT.601, assumed), written as explicit tags
    assert summary["color_in"]["names"]["matrix"] == "smpte170m"
    assert summary["color_out"]["names"] == summary["color_in"]["names"]
    assert summary["color_out"]["assumed"] is False  # the output carries explicit tags
    assert summary["graph"]["file"] == "model.onnx" and summary["output_fps"] == pytest.approx(24.0)
    assert probe_fps(out) == pytest.approx(24.0)
    decoded = list(iter_frames(out))
    assert len(decoded) == 9 and decoded[0].shape == (36, 52, 3)
    # What was written is what the stream produced (up to H.264 at crf 18).
    with Stream(mtu_artifact) as s:
        expected = [o for f in iter_frames(mp4) for _, o in s.push(f)] + [o for _, o in s.flush()]
    assert psnr(np.stack(decoded) / 255.0, np.stack(expected) / 255.0) > 30.0


def test_png_folder_in_png_folder_out(mmprnn_artifact: Path, png_folder: Path, clip_u8: np.ndarray,
                                      tmp_path: Path) -> None:
    out = tmp_path / "frames"
    summary = run_video(mmprnn_artifact, png_folder, f"{out}/")  # a folder output is written with a trailing /
    assert summary["frames"] == 9
    written = sorted(out.iterdir())
    assert [p.name for p in written] == [f"{i:06d}.png" for i in range(9)]
    with Stream(mmprnn_artifact) as s:
        expected = [o for f in clip_u8 for _, o in s.push(f)] + [o for _, o in s.flush()]
    for path, exp in zip(written, expected, strict=True):
        np.testing.assert_array_equal(_read_png(path), exp)


def _read_png(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def test_corrupt_input_fails_and_leaves_nothing(mtu_artifact: Path, mp4: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    data = mp4.read_bytes()
    broken.write_bytes(data[: len(data) // 3] + b"\0" * 500)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    for source in (garbage, broken):
        out = tmp_path / f"out_{source.stem}.mp4"
        proc = cli("run", str(mtu_artifact), str(source), str(out))
        if source is broken and proc.returncode == 0:
            continue  # a truncated mp4 may still decode its first frames cleanly; nothing to assert then
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert "error:" in proc.stderr
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_missing_input_and_existing_output(mtu_artifact: Path, mp4: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        run_video(mtu_artifact, tmp_path / "nope.mp4", tmp_path / "o.mp4")
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep")
    with pytest.raises(UsageError, match="exists. Expected a new output path"):
        run_video(mtu_artifact, mp4, existing)
    assert existing.read_bytes() == b"keep"
    with pytest.raises(MediaError, match="cannot be opened as a video"):
        list(iter_frames(Path(__file__)))


def test_compare_backends(mtu_artifact: Path) -> None:
    result = compare_backends(mtu_artifact, ["torch", "onnxruntime", "tensorrt"], frames=5, height=28, width=36)
    (pair,) = result["pairs"]
    assert (pair["a"], pair["b"]) == ("torch", "onnxruntime")
    assert pair["psnr_db"] == "inf" or pair["psnr_db"] >= 50.0
    assert pair["fraction_within_tol"] >= 0.999
    assert "tensorrt" in result["skipped"]  # no TensorRT or GPU here: reported with the reason


def test_compare_cli_on_a_video(mtu_artifact: Path, mp4: Path) -> None:
    proc = cli("compare", str(mtu_artifact), "--backends", "torch,onnxruntime", "--input", str(mp4), "--frames", "4",
               "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["frames"] == 4 and result["size"] == [36, 52]
    assert len(result["pairs"]) == 1


@pytest.mark.parametrize(("name", "match"), [
    ("out.gif", "extension '.gif' is not an output vdeblur writes"),
    ("out", "no extension is not an output vdeblur writes"),
    ("missing/out.mp4", "does not exist. Create it first"),
])
def test_bad_outputs_are_errors_not_surprises(mtu_artifact: Path, mp4: Path, tmp_path: Path, name: str,
                                              match: str) -> None:
    with pytest.raises(UsageError, match=match):
        run_video(mtu_artifact, mp4, tmp_path / name)
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing created


def test_webm_is_vp9_and_an_empty_folder_takes_pngs(mtu_artifact: Path, mp4: Path, tmp_path: Path) -> None:
    import av

    out = tmp_path / "out.webm"
    summary = run_video(mtu_artifact, mp4, out)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
    assert len(list(iter_frames(out))) == summary["frames"] == 9
    folder = tmp_path / "frames"
    folder.mkdir()  # an existing empty directory is a folder output without the trailing /
    assert run_video(mtu_artifact, mp4, folder)["frames"] == 9 and len(list(folder.iterdir())) == 9


def test_run_shows_progress_with_total_and_eta_off_a_terminal(mtu_artifact: Path, mp4: Path, tmp_path: Path) -> None:
    proc = cli("run", str(mtu_artifact), str(mp4), str(tmp_path / "out.mkv"))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("progress:")]
    assert lines and lines[-1].startswith("progress: 100% 9/9 frames") and "ETA 0:00:00" in lines[-1]
    assert len(lines) <= 11  # a line per tenth, not per frame
    quiet = cli("run", str(mtu_artifact), str(mp4), str(tmp_path / "out2.mkv"), "--json")
    assert "progress:" not in quiet.stderr and json.loads(quiet.stdout)["frames"] == 9
