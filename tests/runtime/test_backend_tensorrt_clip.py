"""The TensorRT backend on a clip artifact, without TensorRT or a GPU: the fake CUDA of
test_backend_tensorrt.py and a fake engine computing a known clip function (every output depends on
the whole window), driven by Stream's window schedule; the engine's profile over T is enforced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.runtime.test_backend_tensorrt import FakeContext, FakeCuda
from vdeblur.contract.driver import FunctionClipper, drive_clip
from vdeblur.contract.interface import ClipSpec
from vdeblur.errors import ShapeError
from vdeblur.runtime.backends.base import Interface
from vdeblur.runtime.backends.tensorrt import EngineInfo, TensorInfo, TensorRTBackend

SPEC = ClipSpec(family="toy", config={}, window=4, overlap=2, pad_multiple=4)


def clip_fn(frames: np.ndarray) -> np.ndarray:
    """A clip function where every output sees the whole window (reversed in time, plus its mean)."""
    return frames[:, ::-1] * 0.5 + frames.mean(axis=1, keepdims=True)


class FakeClipContext(FakeContext):
    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes["frames"]

    def execute_async_v3(self, stream: int) -> bool:
        cuda = self.engine.cuda
        assert stream == cuda.stream_handle
        x = cuda.view(self.addresses["frames"], self.shapes["frames"], np.float32).copy()
        cuda.view(self.addresses["outputs"], x.shape, np.float32)[...] = clip_fn(x)
        self.executions += 1
        return True


class FakeClipEngine:
    def __init__(self, cuda: FakeCuda, info: EngineInfo) -> None:
        self.cuda, self.info = cuda, info
        self.contexts: list[FakeClipContext] = []

    def create_execution_context(self) -> FakeClipContext:
        ctx = FakeClipContext(self)  # type: ignore[arg-type]
        self.contexts.append(ctx)
        return ctx


def make_backend(tmp_path: Path, max_frames: int = 4) -> tuple[TensorRTBackend, FakeClipEngine]:
    directory = tmp_path / "artifact"
    directory.mkdir()
    manifest = {
        "format_version": 1, "model": {"family": "toy"}, "kind": "clip", "interface": SPEC.to_dict(),
        "clip": {"window": 4, "overlap": 2, "latency": 3},
        "graphs": [{"file": "model.onnx", "precision": "fp32", "lowering": "trt", "sha256": "b" * 64}],
        "plugins": [], "opset": 18, "versions": {},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    info = EngineInfo()
    info.tensors["frames"] = TensorInfo("frames", True, np.dtype("float32"), (1, -1, 3, -1, -1),
                                        ((1, 1, 3, 8, 8), (1, 4, 3, 8, 8), (1, max_frames, 3, 64, 64)))
    info.tensors["outputs"] = TensorInfo("outputs", False, np.dtype("float32"))
    cuda = FakeCuda()
    engine = FakeClipEngine(cuda, info)
    backend = TensorRTBackend(Interface(directory), engine, info, cuda)  # type: ignore[arg-type]
    return backend, engine


def _stream(backend: Any, video: np.ndarray, **options: Any) -> np.ndarray:
    from vdeblur.runtime.stream import Stream

    stream = Stream(backend=backend, **options)
    outs = [o for f in video for o in stream.push(f)] + stream.flush()
    assert [i for i, _ in outs] == list(range(len(video)))
    return np.stack([o for _, o in outs])


@pytest.mark.parametrize("frames", [3, 9, 10])
def test_tensorrt_backend_runs_the_windows(tmp_path: Path, frames: int) -> None:
    backend, engine = make_backend(tmp_path)
    video = np.random.default_rng(frames).random((frames, 10, 14, 3), dtype=np.float32)
    got = _stream(backend, video)
    run = lambda feeds: [clip_fn(feeds["frames"])]  # noqa: E731
    want = drive_clip(FunctionClipper(SPEC, run), SPEC, video.transpose(0, 3, 1, 2)[None])[0]
    np.testing.assert_allclose(got, np.clip(want.transpose(0, 2, 3, 1), 0, 1), atol=1e-6)
    assert sum(c.executions for c in engine.contexts) >= 1
    backend.close()


def test_tensorrt_backend_clip_checks(tmp_path: Path) -> None:
    backend, _ = make_backend(tmp_path, max_frames=4)
    video = np.random.default_rng(0).random((6, 8, 8, 3), dtype=np.float32)
    with pytest.raises(ShapeError, match="optimisation profile"):  # the engine was built for windows of 4
        _stream(backend, video, window=6, overlap=0)
    with pytest.raises(ShapeError, match="Expected multiples of 4"):
        backend.clip(np.zeros((1, 2, 3, 6, 8), np.float32))
    with pytest.raises(ShapeError, match="Expected float32"):
        backend.clip(np.zeros((1, 2, 3, 8, 8), np.float64))
    from vdeblur.errors import BackendError

    with pytest.raises(BackendError, match="clip artifact"):
        backend.iface.check_frame(np.zeros((1, 3, 8, 8), np.float32))
    backend.close()
