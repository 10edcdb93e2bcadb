"""THE loops that stream frames through a step graph or a clip graph (DESIGN.md, "Step contract",
"Clip contract").

Every place that runs a step graph over frames goes through here, so they agree on the semantics:
export validation and calibration (ONNX Runtime sessions), engine verification at build time,
:func:`vdeblur.export.stepgraph.unroll` (torch modules) and :class:`vdeblur.runtime.stream.Stream`
(backends that keep the state on their device).

- :class:`Stepper`: what the loop drives: ``reset(n, hp, wp)`` (states at their initial values for
  padded frames of that size) and ``step(frame, flush) -> output`` (one padded frame (N, 3, Hp, Wp)
  float32, the states fed back inside). Backends are steppers; :class:`FeedbackStepper` makes one of
  any stateless ``run(feeds) -> outputs`` function (an ONNX Runtime session, a torch module), keeping
  the states as arrays.
- :class:`StepDriver`: the sequence: the first ``lookahead`` outputs are warm-up; after the last
  frame, ``flush.steps`` steps on the last frame again (flush flag raised) give the pending outputs.
- :func:`pad_frames` / :func:`drive`: the padding (bottom and right, ``pad_mode``) and a whole clip
  (N, T, 3, H, W) -> (N, T, 3, H, W), one output per input frame.
- Clip graphs (bidirectional models): :class:`Clipper` (``clip(frames) -> outputs``, (N, T, 3, Hp,
  Wp) both), :class:`ClipDriver` (windows of ``window`` frames overlapping by ``overlap``; the
  centre of each window is kept; a sequence no longer than one window is one clip of its own
  length), :func:`drive_clip`. :func:`runner` / :func:`drive_spec` pick the step or the clip loop
  from the spec, so export validation, calibration and build verification serve both kinds.

Torch-free (numpy only).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from vdeblur.contract.interface import ClipSpec, StepSpec, check_window
from vdeblur.errors import ShapeError

NUMPY_PAD = {"replicate": "edge", "reflect": "reflect", "zeros": "constant"}


class Stepper(Protocol):
    def reset(self, batch: int, height: int, width: int) -> None: ...

    def step(self, frame: np.ndarray, flush: bool = False) -> np.ndarray: ...


def pad_frames(frames: np.ndarray, multiple: int, mode: str = "replicate") -> np.ndarray:
    """(..., H, W) padded at the bottom and right up to multiples of ``multiple`` (``mode``: replicate,
    reflect or zeros); the array itself when no padding is needed."""
    h, w = frames.shape[-2:]
    hp, wp = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    if (hp, wp) == (h, w):
        return frames
    pad = [(0, 0)] * (frames.ndim - 2) + [(0, hp - h), (0, wp - w)]
    return np.pad(frames, pad, mode=_numpy_mode(mode))  # type: ignore[call-overload]


def pad_in_place(buffer: np.ndarray, h: int, w: int, mode: str = "replicate") -> None:
    """Pad in place: ``buffer`` (..., Hp, Wp) holds a frame in its top-left (h, w) corner; the rest
    is filled as :func:`pad_frames` would (replicate and zeros allocate nothing: a stream's path)."""
    hp, wp = buffer.shape[-2:]
    if (hp, wp) == (h, w):
        return
    if mode == "replicate":
        buffer[..., h:, :w] = buffer[..., h - 1 : h, :w]
        buffer[..., :, w:] = buffer[..., :, w - 1 : w]
    elif mode == "zeros":
        buffer[..., h:, :] = 0
        buffer[..., :h, w:] = 0
    else:
        pad = [(0, 0)] * (buffer.ndim - 2) + [(0, hp - h), (0, wp - w)]
        buffer[...] = np.pad(buffer[..., :h, :w], pad, mode=_numpy_mode(mode))  # type: ignore[call-overload]


def _numpy_mode(mode: str) -> str:
    if mode not in NUMPY_PAD:
        raise ShapeError(f"pad: mode {mode!r} is unknown. Expected one of {', '.join(NUMPY_PAD)}.")
    return NUMPY_PAD[mode]


def step_feeds(spec: StepSpec, frame: np.ndarray, flush: bool, states: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs of one step by name: the frame, the flush flag (int32 (N,)) if the graph has one,
    and the states."""
    feeds: dict[str, np.ndarray] = {spec.frame_input: np.ascontiguousarray(frame)}
    if spec.flush.flag_input:
        feeds[spec.flush.flag_input] = np.full((frame.shape[0],), int(flush), dtype=np.int32)
    feeds.update(zip((s.input_name for s in spec.states), states, strict=True))
    return feeds


class FeedbackStepper:
    """A stateless step function made a :class:`Stepper`: the states are kept here and fed back.

    ``run(feeds) -> outputs``: inputs by name, outputs in ``spec.output_names`` order (an ONNX
    Runtime ``lambda f: session.run(spec.output_names, f)``, a torch module behind an adapter).
    ``record``, when given, sees a copy of every step's feeds (calibration data).
    """

    def __init__(self, spec: StepSpec, run: Callable[[dict[str, np.ndarray]], Sequence[Any]],
                 record: Callable[[dict[str, np.ndarray]], None] | None = None) -> None:
        self.spec = spec
        self._run = run
        self._record = record
        self.states: list[Any] = []

    def reset(self, batch: int, height: int, width: int) -> None:
        self.states = self.spec.initial_arrays(batch, height, width)

    def step(self, frame: np.ndarray, flush: bool = False) -> np.ndarray:
        feeds = step_feeds(self.spec, frame, flush, self.states)
        if self._record is not None:
            self._record({k: np.array(v, copy=True) for k, v in feeds.items()})
        out, *self.states = self._run(feeds)
        return out  # type: ignore[no-any-return]


class StepDriver:
    """The streaming schedule over a :class:`Stepper` for one sequence of same-size padded frames.

    :meth:`begin` resets the states; :meth:`push` runs one step and returns the output that became
    ready (None during the ``lookahead`` warm-up steps); :meth:`finish` runs the flush steps on the
    last frame and returns the outputs still pending, in order. One output per pushed frame in all.
    """

    def __init__(self, stepper: Stepper, lookahead: int, flush_steps: int) -> None:
        self.stepper = stepper
        self.lookahead = int(lookahead)
        self.flush_steps = int(flush_steps)
        self.steps = 0
        self._last: np.ndarray | None = None

    @classmethod
    def for_spec(cls, stepper: Stepper, spec: StepSpec) -> StepDriver:
        return cls(stepper, spec.lookahead, spec.flush.steps)

    def begin(self, batch: int, hp: int, wp: int) -> None:
        self.stepper.reset(batch, hp, wp)
        self.steps = 0
        self._last = None

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        out = self.stepper.step(frame, False)
        self.steps += 1
        self._last = frame
        return out if self.steps > self.lookahead else None

    def finish(self) -> list[np.ndarray]:
        if self._last is None:
            return []
        ready: list[np.ndarray] = []
        pending = min(self.steps, self.lookahead)  # pushed frames whose output is not out yet
        for _ in range(self.flush_steps):
            out = self.stepper.step(self._last, True)
            self.steps += 1
            if self.steps > self.lookahead and len(ready) < pending:
                ready.append(np.array(out, copy=True))
        self._last = None
        return ready


def drive(stepper: Stepper, spec: StepSpec, frames: np.ndarray) -> np.ndarray:
    """A whole clip through a step graph as every runtime streams it.

    frames: (N, T, 3, H, W) float32 in [0, 1], any H and W (padded per ``spec`` unless the graph pads
    itself, outputs cropped back). Returns (N, T, 3, H, W): one output per input frame.
    """
    x = _padded_video(frames, spec)
    n, t_len, _, h, w = frames.shape
    driver = StepDriver.for_spec(stepper, spec)
    driver.begin(n, *spec.padded(h, w))  # states are at the padded size (also when the graph pads itself)
    outputs = []
    for t in range(t_len):
        out = driver.push(x[:, t])
        if out is not None:
            outputs.append(np.array(out, copy=True))  # a backend may reuse its output buffer
    outputs += driver.finish()
    return np.stack(outputs, axis=1)[..., :h, :w]


def _padded_video(frames: np.ndarray, spec: StepSpec | ClipSpec) -> np.ndarray:
    """A video (N, T >= 1, 3, H, W) padded per ``spec`` (unless the graph pads itself)."""
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ShapeError(f"drive: frames have shape {frames.shape}. Expected (N, T, 3, H, W).")
    if frames.shape[1] < 1:
        raise ShapeError("drive: the clip has no frames. Expected T >= 1.")
    return frames if spec.pads_inside else pad_frames(frames, spec.pad_multiple, spec.pad_mode)


def session_stepper(session: Any, spec: StepSpec,
                    record: Callable[[dict[str, np.ndarray]], None] | None = None) -> FeedbackStepper:
    """A :class:`FeedbackStepper` over an ONNX Runtime InferenceSession (or anything with its ``run``)."""
    stepper = runner(session, spec, record)
    assert isinstance(stepper, FeedbackStepper)
    return stepper


# --------------------------------------------------------------------------------------------
# Clip graphs: windows with overlap
# --------------------------------------------------------------------------------------------


class Clipper(Protocol):
    def clip(self, frames: np.ndarray) -> np.ndarray: ...


class FunctionClipper:
    """A :class:`Clipper` over a stateless ``run(feeds) -> outputs`` (an ONNX Runtime session, a torch
    module behind an adapter): feeds ``{spec.frame_input: frames}``, returns the first output.
    ``record``, when given, sees a copy of every window's feeds (calibration data)."""

    def __init__(self, spec: ClipSpec, run: Callable[[dict[str, np.ndarray]], Sequence[Any]],
                 record: Callable[[dict[str, np.ndarray]], None] | None = None) -> None:
        self.spec = spec
        self._run = run
        self._record = record

    def clip(self, frames: np.ndarray) -> np.ndarray:
        feeds = {self.spec.frame_input: np.ascontiguousarray(frames, dtype=np.float32)}
        if self._record is not None:
            self._record({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self._run(feeds)[0]  # type: ignore[no-any-return]


class ClipDriver:
    """The window schedule over a :class:`Clipper` for one sequence of same-size padded frames.

    Windows of ``window`` frames start every ``window - overlap`` frames; each window keeps the
    centre of its overlaps: it drops its first ``ceil(overlap / 2)`` outputs (not the first window)
    and holds back its last ``overlap // 2`` (the next window gives them). :meth:`push` runs a
    window when one is full and returns the outputs it decides; :meth:`finish` returns the rest:
    the held outputs when the sequence ended with a window, otherwise those of one last window of
    the last ``window`` frames (the video's end; its outputs for frames already decided are
    dropped: the earlier window wins), or of the whole sequence as one clip of its own length
    when it is no longer than a window. One output per pushed frame in all, in order.

    ``overlap=0`` is the official DSTNet test split: clips of ``window`` frames, the last clip = the
    last ``window`` frames keeping only the frames no earlier clip gave.
    """

    def __init__(self, clipper: Clipper, window: int, overlap: int) -> None:
        check_window(window, overlap)
        self.clipper = clipper
        self.window = int(window)
        self.overlap = int(overlap)
        self.windows_run = 0  # windows run since construction (benchmarks time them)
        self.last_window_frames = 0  # frames of the last window run
        self.begin()

    @classmethod
    def for_spec(cls, clipper: Clipper, spec: ClipSpec) -> ClipDriver:
        return cls(clipper, spec.window, spec.overlap)

    def begin(self, batch: int = 1, hp: int = 0, wp: int = 0) -> None:
        """Start a sequence (the arguments match :meth:`StepDriver.begin`; a clip graph keeps no state)."""
        self._frames: deque[np.ndarray] = deque(maxlen=self.window)  # the last `window` frames
        self.pushed = 0  # frames pushed in this sequence
        self.emitted = 0  # outputs returned in this sequence
        self._start = 0  # first frame of the next full window
        self._held: list[np.ndarray] = []  # outputs of the last window for frames emitted .. pushed-1

    def push(self, frame: np.ndarray) -> list[np.ndarray]:
        self._frames.append(np.array(frame, dtype=np.float32, copy=True))
        self.pushed += 1
        if self.pushed - self._start < self.window:
            return []
        outs = self._run()  # the window [start, start + window) ends with this frame
        keep_end = self._start + self.window - self.overlap // 2
        first = self.pushed - self.window
        ready = [outs[:, i - first] for i in range(self.emitted, keep_end)]
        self._held = [outs[:, i - first] for i in range(keep_end, self.pushed)]
        self.emitted = keep_end
        self._start += self.window - self.overlap
        return ready

    def finish(self) -> list[np.ndarray]:
        """The outputs still pending, in order; the driver is then ready for a new sequence."""
        if self.emitted < self.pushed:
            if len(self._held) == self.pushed - self.emitted:
                ready = self._held
            else:
                outs = self._run()  # the last min(window, pushed) frames
                first = self.pushed - len(self._frames)
                ready = [outs[:, i - first] for i in range(self.emitted, self.pushed)]
        else:
            ready = []
        self.begin()
        return ready

    def _run(self) -> np.ndarray:
        frames = np.stack(list(self._frames), axis=1)  # (N, T, 3, Hp, Wp)
        outs = np.asarray(self.clipper.clip(frames))
        if outs.shape != frames.shape:
            raise ShapeError(f"clip: the graph returned {outs.shape} for frames {frames.shape}. "
                             "Expected the same shape.")
        self.windows_run += 1
        self.last_window_frames = int(frames.shape[1])
        return outs


def drive_clip(clipper: Clipper, spec: ClipSpec, frames: np.ndarray) -> np.ndarray:
    """A whole video through a clip graph as every runtime streams it (windows per ``spec``; use
    ``spec.windowed(window, overlap)`` for others). frames: (N, T, 3, H, W) float32 in [0, 1], any
    H and W (padded per ``spec``, outputs cropped back). Returns (N, T, 3, H, W)."""
    x = _padded_video(frames, spec)
    _, t_len, _, h, w = frames.shape
    driver = ClipDriver.for_spec(clipper, spec)
    outputs: list[np.ndarray] = []
    for t in range(t_len):
        outputs += driver.push(x[:, t])
    outputs += driver.finish()
    return np.stack(outputs, axis=1)[..., :h, :w]


def runner(session: Any, spec: StepSpec | ClipSpec,
           record: Callable[[dict[str, np.ndarray]], None] | None = None) -> FeedbackStepper | FunctionClipper:
    """A stepper (step graphs) or a clipper (clip graphs) over an ONNX Runtime session."""
    names = spec.output_names

    def run(feeds: Mapping[str, np.ndarray]) -> Sequence[Any]:
        return session.run(names, dict(feeds))  # type: ignore[no-any-return]

    if isinstance(spec, ClipSpec):
        return FunctionClipper(spec, run, record)
    return FeedbackStepper(spec, run, record)


def drive_spec(run: FeedbackStepper | FunctionClipper | Any, spec: StepSpec | ClipSpec,
               frames: np.ndarray) -> np.ndarray:
    """:func:`drive` (step graphs) or :func:`drive_clip` (clip graphs) by the spec's kind."""
    if isinstance(spec, ClipSpec):
        return drive_clip(run, spec, frames)
    return drive(run, spec, frames)
