"""THE loop that streams frames through a step graph (DESIGN.md, "Step contract").

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

Torch-free (numpy only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from vdeblur.contract.interface import StepSpec
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
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ShapeError(f"drive: frames have shape {frames.shape}. Expected (N, T, 3, H, W).")
    n, t_len, _, h, w = frames.shape
    if t_len < 1:
        raise ShapeError("drive: the clip has no frames. Expected T >= 1.")
    x = frames if spec.pads_inside else pad_frames(frames, spec.pad_multiple, spec.pad_mode)
    driver = StepDriver.for_spec(stepper, spec)
    driver.begin(n, *spec.padded(h, w))  # states are at the padded size (also when the graph pads itself)
    outputs = []
    for t in range(t_len):
        out = driver.push(x[:, t])
        if out is not None:
            outputs.append(np.array(out, copy=True))  # a backend may reuse its output buffer
    outputs += driver.finish()
    return np.stack(outputs, axis=1)[..., :h, :w]


def session_stepper(session: Any, spec: StepSpec,
                    record: Callable[[dict[str, np.ndarray]], None] | None = None) -> FeedbackStepper:
    """A :class:`FeedbackStepper` over an ONNX Runtime InferenceSession (or anything with its ``run``)."""
    names = spec.output_names

    def run(feeds: Mapping[str, np.ndarray]) -> Sequence[Any]:
        return session.run(names, dict(feeds))  # type: ignore[no-any-return]

    return FeedbackStepper(spec, run, record)
