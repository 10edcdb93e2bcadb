"""Stream: parity with run_clip, one output per input, reset, resolution changes, dtypes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vdeblur.contract.manifest import read
from vdeblur.data.texture import moving_texture
from vdeblur.errors import ShapeError
from vdeblur.metrics import psnr
from vdeblur.models import create, run_clip
from vdeblur.runtime.stream import Stream


def reference(artifact: Path, frames_hwc: np.ndarray) -> np.ndarray:
    """run_clip of the artifact's model (same seed as the export: same random weights)."""
    info = read(artifact).model
    torch.manual_seed(0)
    model = create(info["family"], **info["config"])
    clip = torch.from_numpy(frames_hwc.transpose(0, 3, 1, 2).copy())[None]
    return run_clip(model, clip)[0].numpy().transpose(0, 2, 3, 1)


def stream_all(stream: Stream, frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
    outs = []
    for f in frames:
        outs += stream.push(f)
    return outs + stream.flush()


@pytest.mark.parametrize("fixture", ["mtu_artifact", "mmprnn_artifact"])
def test_stream_on_onnxruntime_equals_run_clip(fixture: str, request: pytest.FixtureRequest) -> None:
    artifact = request.getfixturevalue(fixture)
    frames = moving_texture(7, 37, 51).transpose(0, 2, 3, 1)  # not a multiple of the pad size
    with Stream(artifact, backend="onnxruntime") as s:
        outs = stream_all(s, frames)
    assert [i for i, _ in outs] == list(range(7))
    got = np.stack([o for _, o in outs])
    assert got.shape == frames.shape and got.dtype == np.float32
    assert psnr(got, np.clip(reference(artifact, frames), 0, 1)) >= 50.0


@pytest.mark.parametrize("fixture", ["mtu_artifact", "mmprnn_artifact"])
def test_one_output_per_input_for_every_length(fixture: str, request: pytest.FixtureRequest) -> None:
    artifact = request.getfixturevalue(fixture)
    lookahead = read(artifact).interface["lookahead"]
    frames = (moving_texture(2 * lookahead + 3, 24, 32).transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    with Stream(artifact) as s:
        for n in range(1, 2 * lookahead + 4):
            pushed = []
            for f in frames[:n]:
                pushed += s.push(f)
            assert [i for i, _ in pushed] == list(range(max(0, n - lookahead)))
            rest = s.flush()
            indices = [i for i, _ in pushed + rest]
            assert indices == list(range(n)), (n, indices)
            assert all(o.dtype == np.uint8 and o.shape == (24, 32, 3) for _, o in pushed + rest)


def test_reset_and_flush_start_independent_sequences(mtu_artifact: Path) -> None:
    frames = moving_texture(5, 24, 32).transpose(0, 2, 3, 1)
    other = moving_texture(5, 24, 32, seed=3).transpose(0, 2, 3, 1)
    with Stream(mtu_artifact) as s:
        first = stream_all(s, frames)
        for f in other[:3]:  # a half-done sequence, dropped
            s.push(f)
        s.reset()
        again = stream_all(s, frames)
    assert [i for i, _ in again] == list(range(5))
    for (_, a), (_, b) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_resolution_change_flushes_and_continues(mmprnn_artifact: Path) -> None:
    small = moving_texture(4, 24, 32).transpose(0, 2, 3, 1)
    large = moving_texture(3, 40, 56, seed=1).transpose(0, 2, 3, 1)
    with Stream(mmprnn_artifact) as s:
        outs = []
        for f in small:
            outs += s.push(f)
        outs += s.push(large[0])  # ends the first sequence: its pending outputs come out here
        assert [i for i, _ in outs] == [0, 1, 2, 3]
        for f in large[1:]:
            outs += s.push(f)
        outs += s.flush()
    assert [i for i, _ in outs] == list(range(7))
    assert [o.shape[:2] for _, o in outs] == [(24, 32)] * 4 + [(40, 56)] * 3
    # The second sequence is exactly a fresh stream over the large frames.
    with Stream(mmprnn_artifact) as s:
        fresh = stream_all(s, large)
    for (_, a), (_, b) in zip(outs[4:], fresh, strict=True):
        np.testing.assert_array_equal(a, b)


def test_torch_backend_matches_onnxruntime(mtu_artifact: Path) -> None:
    frames = moving_texture(5, 28, 36).transpose(0, 2, 3, 1)
    with Stream(mtu_artifact, backend="torch") as s:
        a = np.stack([o for _, o in stream_all(s, frames)])
    with Stream(mtu_artifact, backend="onnxruntime") as s:
        b = np.stack([o for _, o in stream_all(s, frames)])
    assert psnr(a, b) >= 50.0


def test_bad_frames_fail_clearly(mtu_artifact: Path) -> None:
    with Stream(mtu_artifact) as s:
        with pytest.raises(ShapeError, match=r"Expected \(H, W, 3\) RGB"):
            s.push(np.zeros((3, 24, 32), np.float32))
        with pytest.raises(ShapeError, match="Expected uint8 or float"):
            s.push(np.zeros((24, 32, 3), np.int32))
        s.push(np.zeros((24, 32, 3), np.uint8))
        with pytest.raises(ShapeError, match="Expected one dtype per stream"):
            s.push(np.zeros((24, 32, 3), np.float32))


def test_runtime_imports_neither_torch_nor_tensorrt() -> None:
    code = (
        "import sys, vdeblur.runtime, vdeblur.runtime.stream, vdeblur.runtime.video, vdeblur.runtime.run, "
        "vdeblur.runtime.backends.onnxruntime; "
        "bad = [m for m in ('torch', 'tensorrt') if m in sys.modules]; assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
