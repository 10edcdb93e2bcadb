"""The batcher: sequences of one model share its ONNX Runtime backend; steps waiting together run as
one batch along N, and each sequence's outputs equal its own Stream's."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vdeblur.errors import BackendError
from vdeblur.runtime.backends import open_backend
from vdeblur.runtime.stream import Stream
from vdeblur.serve.batcher import Batcher, SequenceBackend


def _frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 37, 50, 3), dtype=np.uint8)


def _reference(artifact: Path, frames: np.ndarray) -> list[np.ndarray]:
    with Stream(artifact) as s:
        return [o for _, o in [o for f in frames for o in s.push(f)] + s.flush()]


class Gate:
    """Holds the backend's first call until released, so that the other sequences' steps queue up."""

    def __init__(self, run):
        self.run, self.open, self.calls, self.held = run, threading.Event(), [], 0

    def __call__(self, feeds):
        if not self.open.is_set():
            self.held = len(next(iter(feeds.values())))
        self.open.wait(timeout=30)
        self.calls.append(len(next(iter(feeds.values()))))
        return self.run(feeds)


@pytest.mark.parametrize("fixture", ["mtu_artifact", "mmprnn_artifact"])
def test_waiting_steps_run_as_one_batch(fixture: str, request: pytest.FixtureRequest) -> None:
    artifact = request.getfixturevalue(fixture)
    backend = open_backend(artifact, "onnxruntime")
    gate = Gate(backend.run)
    backend.run = gate  # the real session behind a gate
    sizes: list[int] = []
    batcher = Batcher(backend, max_batch=3, on_batch=lambda n, q, c: sizes.append(n))
    videos = [_frames(4, seed=i) for i in range(4)]
    results: dict[int, list[np.ndarray]] = {}

    def sequence(i: int) -> None:
        with Stream(backend=SequenceBackend(batcher)) as s:
            results[i] = [o for _, o in [o for f in videos[i] for o in s.push(f)] + s.flush()]

    threads = [threading.Thread(target=sequence, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while gate.held + batcher.depth < 4:  # the first call holds the gate; the other first steps wait
        assert time.monotonic() < deadline, "the four first steps never queued up"
        time.sleep(0.01)
    gate.open.set()
    for t in threads:
        t.join()
    batcher.close()
    # the held call took 1 to 3 first steps, the next the rest: a batch of 2 or 3, never beyond max_batch
    assert 2 <= max(sizes) <= 3 and max(gate.calls) == max(sizes)
    assert sum(sizes) == sum(len(v) + batcher.iface.flush_steps for v in videos)  # every step ran once
    for i, v in enumerate(videos):
        for a, b in zip(results[i], _reference(artifact, v), strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_failed_batch_fails_its_steps_and_keeps_their_state(mtu_artifact: Path) -> None:
    backend = open_backend(mtu_artifact, "onnxruntime")
    real = backend.run
    fail = {"next": False}

    def flaky(feeds):
        if fail["next"]:
            fail["next"] = False
            raise RuntimeError("device lost")
        return real(feeds)

    backend.run = flaky
    batcher = Batcher(backend, max_batch=4)
    frames = _frames(5, seed=9)
    outs = []
    with Stream(backend=SequenceBackend(batcher)) as s:
        outs += s.push(frames[0]) + s.push(frames[1])
        fail["next"] = True
        with pytest.raises(BackendError, match="the batch of 1 failed .RuntimeError: device lost"):
            s.push(frames[2])
        for f in frames[2:]:
            outs += s.push(f)
        outs += s.flush()
    batcher.close()
    assert [i for i, _ in outs] == list(range(5))
    for (_, a), b in zip(outs, _reference(mtu_artifact, frames), strict=True):
        np.testing.assert_array_equal(a, b)
    assert backend.closed


def test_a_graph_with_a_fixed_batch_runs_one_row_per_call(mtu_artifact: Path, tmp_path: Path) -> None:
    """Artifacts exported before the batch became dynamic declare N = 1: ONNX Runtime refuses more,
    so the batcher runs their steps one by one (and they still serve)."""
    import shutil

    import onnx

    old = tmp_path / "old"
    shutil.copytree(mtu_artifact, old)
    model = onnx.load(str(old / "model.onnx"))
    for i in model.graph.input:
        i.type.tensor_type.shape.dim[0].dim_value = 1  # what the export wrote before
    for o in model.graph.output:
        o.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(old / "model.onnx"))
    fixed = Batcher(open_backend(old, "onnxruntime"), max_batch=8)
    free = Batcher(open_backend(mtu_artifact, "onnxruntime"), max_batch=8)
    assert (fixed.max_batch, free.max_batch) == (1, 8)
    frames = _frames(3, seed=4)
    with Stream(backend=SequenceBackend(fixed)) as s:
        outs = [o for _, o in [o for f in frames for o in s.push(f)] + s.flush()]
    for a, b in zip(outs, _reference(mtu_artifact, frames), strict=True):
        np.testing.assert_array_equal(a, b)
    fixed.close()
    free.close()
