"""Stream: frames in, deblurred frames out, with the model's recurrent state kept by the backend.

    with Stream("artifact/", backend="onnxruntime") as s:
        for frame in frames:               # (H, W, 3) uint8, or float in [0, 1]
            for index, out in s.push(frame):
                ...                        # out: same size and type as the input frames
        for index, out in s.flush():
            ...

Semantics (the manifest's interface):
- exactly one output per input frame, in order, with the input's index;
- the first ``lookahead`` steps are warm-up: their outputs are discarded, so a frame's output comes
  ``lookahead`` pushes later; :meth:`flush` runs ``flush.steps`` more steps on the last frame (with
  the flush flag when the graph has one) and returns the remaining outputs, then the stream starts
  over (states reset, indices from 0);
- frames are padded at the bottom and right to the model's pad multiple (edge replication) and
  cropped back; uint8 frames are returned as uint8 (rounded, clipped), float frames as float32
  (clipped to [0, 1]);
- a frame of another size than the previous ones ends the current sequence: the stream flushes
  it (those outputs are returned by the same :meth:`push`), resets the state for the new size and
  continues; indices keep counting;
- :meth:`reset` drops pending frames without outputs and starts over.

Clip artifacts (bidirectional models) run by windows (:class:`vdeblur.contract.driver.ClipDriver`):
``window`` frames overlapping by ``overlap`` (the manifest's, or ``window=``/``overlap=`` here),
the centre of each window kept; a frame's output comes when the window that decides it is full
(``latency`` frames later at most) and :meth:`flush` runs the video's last window. A sequence no
longer than one window runs as one clip of its own length.

This module does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.contract.driver import ClipDriver, StepDriver, pad_in_place
from vdeblur.contract.interface import ClipSpec
from vdeblur.errors import ShapeError
from vdeblur.runtime.backends import open_backend
from vdeblur.runtime.backends.base import Backend


class Stream:
    def __init__(self, artifact: str | Path | None = None, backend: str | Backend = "onnxruntime",
                 precision: str = "fp32", device: str = "auto", window: int | None = None,
                 overlap: int | None = None, **options: Any) -> None:
        """``window``, ``overlap``: clip artifacts only, the windows to run (default: the manifest's)."""
        if isinstance(backend, str):
            if artifact is None:
                raise ShapeError("Stream: no artifact given. Expected an artifact directory or an open Backend.")
            backend = open_backend(artifact, backend, precision=precision, device=device, **options)
        self.backend: Backend = backend
        iface = self.backend.iface
        self.kind: str = iface.kind
        self.flush_steps: int = iface.flush_steps
        self.pad_multiple: int = iface.pad_multiple
        self._pad_mode = iface.pad_mode
        self.window: int | None = None
        self.overlap: int | None = None
        self._driver: StepDriver | ClipDriver
        if isinstance(iface.spec, ClipSpec):
            spec = iface.spec.windowed(window, overlap)
            self.window, self.overlap = spec.window, spec.overlap
            self.lookahead: int = spec.latency
            self._driver = ClipDriver(self.backend, spec.window, spec.overlap)  # the one window loop
        else:
            if window is not None or overlap is not None:
                raise ShapeError("Stream: window/overlap are for clip artifacts. This one is a step graph.")
            self.lookahead = iface.lookahead
            self._driver = StepDriver(self.backend, self.lookahead, self.flush_steps)  # the one streaming loop
        self._next_index = 0
        self.reset()

    # ----- public API ----------------------------------------------------------------------

    def reset(self) -> None:
        """Forget pending frames (no outputs for them) and start a new sequence at index 0."""
        self._emitted = 0  # outputs returned in the current sequence
        self._first_index = self._next_index = 0
        self._size: tuple[int, int] | None = None
        self._dtype: np.dtype | None = None

    def push(self, frame: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Feed one frame (H, W, 3); returns the outputs that became ready, as (index, frame)."""
        frame = np.asarray(frame)
        self._check(frame)
        ready: list[tuple[int, np.ndarray]] = []
        h, w = frame.shape[:2]
        if self._size is not None and (h, w) != self._size:
            ready += self._finish()
        if self._size is None:
            self._begin(h, w, frame.dtype)
        self._prepare(frame)
        out = self._driver.push(self._padded)
        self._next_index += 1
        if isinstance(out, list):  # clip windows: the outputs this frame completed
            ready += [self._emit(o) for o in out]
        elif out is not None:
            ready.append(self._emit(out))
        return ready

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """End the sequence: the outputs still pending, in order. The stream then starts over."""
        ready = self._finish()
        self._next_index = 0
        self._first_index = 0
        return ready

    @property
    def windows_run(self) -> int:
        """Clip artifacts: windows run so far (0 for step artifacts)."""
        return self._driver.windows_run if isinstance(self._driver, ClipDriver) else 0

    @property
    def last_window_frames(self) -> int:
        """Clip artifacts: frames of the last window run (0 for step artifacts)."""
        return self._driver.last_window_frames if isinstance(self._driver, ClipDriver) else 0

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- internals ------------------------------------------------------------------------

    def _check(self, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ShapeError(f"Stream.push: frame has shape {frame.shape}. Expected (H, W, 3) RGB.")
        if frame.dtype != np.uint8 and not np.issubdtype(frame.dtype, np.floating):
            raise ShapeError(f"Stream.push: frame has dtype {frame.dtype}. Expected uint8 or float in [0, 1].")
        if frame.shape[0] < 2 or frame.shape[1] < 2:
            raise ShapeError(f"Stream.push: frame is {frame.shape[1]}x{frame.shape[0]}. Expected at least 2x2.")
        if self._dtype is not None and frame.dtype != self._dtype and self._size is not None:
            raise ShapeError(f"Stream.push: frame has dtype {frame.dtype} after {self._dtype} frames. "
                             "Expected one dtype per stream.")

    def _begin(self, h: int, w: int, dtype: np.dtype) -> None:
        m = self.pad_multiple
        hp, wp = -(-h // m) * m, -(-w // m) * m
        self._size = (h, w)
        self._dtype = dtype
        self._padded = np.zeros((1, 3, hp, wp), dtype=np.float32)  # reused for every frame of the sequence
        self._emitted = 0
        self._first_index = self._next_index
        self._driver.begin(1, hp, wp)

    def _prepare(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        chw = frame.transpose(2, 0, 1)
        if frame.dtype == np.uint8:
            np.divide(chw, np.float32(255.0), out=self._padded[0, :, :h, :w])
        else:
            self._padded[0, :, :h, :w] = chw
        pad_in_place(self._padded, h, w, self._pad_mode)

    def _emit(self, out: np.ndarray) -> tuple[int, np.ndarray]:
        assert self._size is not None and self._dtype is not None
        h, w = self._size
        index = self._first_index + self._emitted
        self._emitted += 1
        hwc = np.clip(out[0, :, :h, :w].transpose(1, 2, 0), 0.0, 1.0)
        if self._dtype == np.uint8:
            result = (hwc * 255.0 + 0.5).astype(np.uint8)
        else:
            result = np.ascontiguousarray(hwc, dtype=np.float32)
        return index, result

    def _finish(self) -> list[tuple[int, np.ndarray]]:
        if self._size is None:
            return []
        ready = [self._emit(out) for out in self._driver.finish()]  # flush steps on the last frame
        self._size = None
        return ready
