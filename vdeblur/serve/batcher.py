"""One backend shared by every sequence of a model, with the work of concurrent sequences batched.

A :class:`Batcher` owns one open backend and one worker thread. Sequences never touch the backend:
each has a :class:`SequenceBackend`, a :class:`vdeblur.runtime.backends.base.Backend` that keeps the
sequence's own recurrent state (numpy arrays, for step graphs) and submits each step (or clip window)
to the batcher. So every sequence is an ordinary :class:`vdeblur.runtime.stream.Stream` (padding,
lookahead, flush, clip windows: the same code as ``vdeblur run``), while the model is loaded once.

Batching: the worker takes every submission waiting when it becomes free (no added delay, like
Triton's dynamic batcher with ``max_queue_delay_microseconds: 0``), groups those with the same key
(kind and padded shape), concatenates them along N (frames, flush flags and states; every step graph
input and output has N first, see the shape grammar) up to ``max_batch`` and runs each group as one
call (:func:`batch_limit`: backends that take one row run every submission alone). A failed call
fails its group only; a sequence's state is replaced only when its step succeeds, so an error loses
no state.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vdeblur.contract.interface import ClipSpec, parse_dim
from vdeblur.errors import BackendError, ServiceError, VdeblurError
from vdeblur.runtime.backends.base import Backend

Key = tuple[Any, ...]


@dataclass
class _Job:
    key: Key
    feeds: dict[str, np.ndarray]
    submitted: float = field(default_factory=time.perf_counter)
    result: dict[str, np.ndarray] | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def batch_limit(backend: Backend) -> int | None:
    """The most rows one call of ``backend`` takes: 1 when the batch is fixed, None when free.

    Every state must have the batch N first (the shape grammar allows other layouts); an ONNX Runtime
    graph exported with a fixed batch of 1 (artifacts of vdeblur before the batch became dynamic)
    takes one row; TensorRT engines are built with a profile of batch 1 (one stream per context)."""
    spec = backend.iface.spec
    if not isinstance(spec, ClipSpec) and not all(s.shape and parse_dim(s.shape[0]) == ("N", 1)
                                                  for s in spec.states):
        return 1
    if backend.name in ("tensorrt", "tensorrt-rtx"):
        return 1
    session = getattr(backend, "session", None)
    if session is not None and any(i.shape and i.shape[0] == 1 for i in session.get_inputs()):
        return 1
    return None


class Batcher:
    """Runs the steps and clip windows of many sequences on one backend, batched.

    ``on_batch(size, queued_s, compute_s)`` is called after every backend call (metrics).
    """

    def __init__(self, backend: Backend, max_batch: int = 8,
                 on_batch: Callable[[int, float, float], None] | None = None) -> None:
        if max_batch < 1:
            raise ServiceError(f"batcher: max_batch {max_batch}. Expected >= 1.")
        self.backend = backend
        self.iface = backend.iface
        self.max_batch = min(max_batch, batch_limit(backend) or max_batch)
        self._on_batch = on_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"vdeblur-batcher-{self.iface.artifact.name}",
                                        daemon=True)
        self._closed = False
        self._thread.start()

    @property
    def depth(self) -> int:
        """Submissions waiting for the backend."""
        return self._queue.qsize()

    def submit(self, key: Key, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one submission (N = 1 in every input) and wait for its outputs (N = 1)."""
        if self._closed:
            raise ServiceError("server: it is shutting down. Retry on another server.", "UNAVAILABLE")
        job = _Job(key, feeds)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def close(self) -> None:
        """Finish what was submitted, stop the worker, close the backend."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self.backend.close()

    # ----- the worker ----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            stop = False
            while True:  # everything that is waiting now
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
            groups: dict[Key, list[_Job]] = {}
            for j in jobs:
                groups.setdefault(j.key, []).append(j)
            for group in groups.values():
                for i in range(0, len(group), self.max_batch):
                    self._run(group[i:i + self.max_batch])
            if stop:
                return

    def _run(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            if len(jobs) == 1:
                results = [self._call(jobs[0].key, jobs[0].feeds)]
            else:
                feeds = {name: np.concatenate([j.feeds[name] for j in jobs], axis=0) for name in jobs[0].feeds}
                out = self._call(jobs[0].key, feeds)
                results = [{name: v[i:i + 1] for name, v in out.items()} for i in range(len(jobs))]
            for j, r in zip(jobs, results, strict=True):
                j.result = r
        except VdeblurError as e:
            for j in jobs:
                j.error = e
        except Exception as e:  # noqa: BLE001 - a backend's own exception fails this group, not the server
            err = BackendError(f"{self.backend.name} backend: the batch of {len(jobs)} failed "
                               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}).")
            for j in jobs:
                j.error = err
        finished = time.perf_counter()
        if self._on_batch is not None:
            self._on_batch(len(jobs), started - min(j.submitted for j in jobs), finished - started)
        for j in jobs:
            j.done.set()

    def _call(self, key: Key, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if key[0] == "clip":
            frames = feeds[self.iface.frame_input]
            return {self.iface.frame_output: self.backend.clip(np.ascontiguousarray(frames))}
        return self.backend.run(feeds)


class SequenceBackend(Backend):
    """One sequence's view of a shared backend: its own state, the batcher's compute.

    A :class:`vdeblur.contract.driver.Stepper` and ``Clipper`` like every backend, so a
    :class:`vdeblur.runtime.stream.Stream` runs it. Closing it frees the state, not the backend.
    """

    name = "shared"

    def __init__(self, batcher: Batcher) -> None:
        super().__init__(batcher.iface.artifact, batcher.backend.precision, iface=batcher.iface)
        self.name = batcher.backend.name
        self._batcher = batcher
        self._states: dict[str, np.ndarray] = {}
        self._pairs: list[tuple[str, str]] = []
        self._flag = self.iface.flag_input
        self._flags = {False: np.zeros((1,), np.int32), True: np.ones((1,), np.int32)}

    def reset(self, batch: int, height: int, width: int) -> None:
        if batch != 1:
            raise ServiceError(f"sequence: batch {batch}. Expected one frame per step.")
        buffers = self.iface.state_buffers(batch, height, width)
        self._states = {b.input_name: b.initial_array() for b in buffers}
        self._pairs = [(b.input_name, b.output_name) for b in buffers]

    def step(self, frame: np.ndarray, flush: bool = False) -> np.ndarray:
        self._check_open()
        self.iface.check_frame(frame)
        feeds = {self.iface.frame_input: np.array(frame, copy=True)}  # the stream reuses its frame buffer
        if self._flag:
            feeds[self._flag] = self._flags[bool(flush)]
        feeds.update(self._states)
        out = self._batcher.submit(("step", frame.shape[2], frame.shape[3]), feeds)
        for name_in, name_out in self._pairs:  # the state moves on only when the step succeeded
            self._states[name_in] = out[name_out]
        return out[self.iface.frame_output]

    def clip(self, frames: np.ndarray) -> np.ndarray:
        self._check_open()
        self.iface.check_clip(frames)
        out = self._batcher.submit(("clip",) + tuple(frames.shape[1:]),
                                   {self.iface.frame_input: np.array(frames, copy=True)})
        return out[self.iface.frame_output]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise BackendError("shared backend: run() is not offered per sequence. Use step() or clip().")

    def describe(self) -> dict[str, Any]:
        from vdeblur.runtime.backends.base import describe

        return describe(self._batcher.backend)

    def state_bytes(self) -> int:
        return sum(a.nbytes for a in self._states.values())

    def _release(self) -> None:
        self._states = {}
