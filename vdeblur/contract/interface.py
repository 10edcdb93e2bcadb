"""The graph interfaces an artifact promises, and THE shape grammar (DESIGN.md, "Step contract").

``step(frame_t, [flush,] *state) -> (output_{t-L}, *state')``: everything a stream remembers is a
state tensor (frame history, recurrent features, a step counter), so runtimes are generic.

- :class:`StateSpec`, :class:`FlushSpec`, :class:`StepSpec`: plain, JSON-serialisable descriptions
  of a step graph's inputs, outputs and state (the manifest's ``interface``);
- :class:`ClipSpec`: the clip contract of bidirectional models (window, overlap, latency);
- the shape grammar: state dimensions are ints or symbols ``N`` (batch), ``Hp`` and ``Wp`` (frame
  height and width padded up to ``pad_multiple``), optionally divided by an integer (``"Hp/4"``).
  :func:`parse_dim` reads a symbol, :func:`resolve_dim` / :func:`resolve_shape` give concrete sizes.

Torch-free: the torch views (initial state tensors, example inputs, ``dynamic_shapes`` for export)
live in :mod:`vdeblur.export.stepgraph`; the loop that streams frames through a step graph in
:mod:`vdeblur.contract.driver`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from vdeblur.errors import ShapeError

FORMAT_VERSION = 1
DTYPES = ("float32", "float16", "int32", "int64")
PAD_MODES = ("replicate", "reflect", "zeros")
_DIM = re.compile(r"^(N|Hp|Wp)(?:/([1-9][0-9]*))?$")

Dim = int | str


def parse_dim(dim: Dim) -> tuple[str, int] | int:
    """An int dimension as is, or a symbol as (name, divisor): ``"Hp/4"`` -> ("Hp", 4).

    Raises ShapeError for anything else (``"H*2"``, ``"Hq"``, ``"Hp/0"``, negative ints).
    """
    if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool):
        if dim < 0:
            raise ShapeError(f"state shape: dimension {dim} is negative. Expected an int >= 0, N, Hp, Wp or Hp/k.")
        return int(dim)
    m = _DIM.match(str(dim)) if isinstance(dim, str) else None
    if m is None:
        raise ShapeError(f"state shape: dimension {dim!r} is not understood. Expected an int, N, Hp, Wp or Hp/k.")
    return m.group(1), int(m.group(2) or 1)


def check_shape(shape: Sequence[Dim], pad_multiple: int | None = None, subject: str = "state shape") -> None:
    """Every dimension parses; with ``pad_multiple``, every ``Hp/k``, ``Wp/k`` divides the padded size
    for every frame size (k divides the pad multiple)."""
    for d in shape:
        parsed = parse_dim(d)
        if isinstance(parsed, tuple) and pad_multiple is not None:
            name, k = parsed
            if name != "N" and pad_multiple % k:
                raise ShapeError(f"{subject}: {d} does not divide every padded size (pad multiple {pad_multiple}). "
                                 "Expected k to divide the pad multiple.")


def resolve_dim(dim: Dim, n: int, hp: int, wp: int, subject: str = "state shape") -> int:
    """One dimension for batch ``n`` and padded frame size (``hp``, ``wp``); ShapeError when a
    symbol does not divide (the frame was not padded)."""
    parsed = parse_dim(dim)
    if isinstance(parsed, int):
        return parsed
    name, k = parsed
    value = {"N": n, "Hp": hp, "Wp": wp}[name]
    if value % k:
        raise ShapeError(f"{subject}: {name}={value} is not divisible by {k}. Pad the frames first.")
    return value // k


def resolve_shape(shape: Sequence[Dim], n: int, hp: int, wp: int, subject: str = "state shape") -> tuple[int, ...]:
    """A concrete shape from a shape in the grammar (see :func:`resolve_dim`)."""
    return tuple(resolve_dim(d, n, hp, wp, subject) for d in shape)


def padded_size(size: int, multiple: int) -> int:
    """``size`` rounded up to a multiple of ``multiple``."""
    return -(-int(size) // multiple) * multiple


class _GraphInterface:
    """What step and clip interfaces share: names, padding, serialisation (dataclass subclasses)."""

    pad_multiple: int
    input_names: list[str]
    output_names: list[str]

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """The frame size the graph runs at (Hp, Wp): H and W rounded up to the pad multiple."""
        return padded_size(height, self.pad_multiple), padded_size(width, self.pad_multiple)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        d["input_names"] = self.input_names
        d["output_names"] = self.output_names
        return d  # type: ignore[no-any-return]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


@dataclass(frozen=True)
class StateSpec:
    """One state tensor: fed as ``input_name``, returned as ``output_name``, fed back next step.

    shape: dims in the shape grammar; dtype: one of :data:`DTYPES`; initial: the fill value of the
    tensor before the first step.
    """

    input_name: str
    output_name: str
    shape: list[Dim]
    dtype: str = "float32"
    initial: float = 0.0
    description: str = ""

    def resolve(self, n: int, hp: int, wp: int) -> tuple[int, ...]:
        """The concrete shape for batch n and padded frame size (hp, wp)."""
        return resolve_shape(self.shape, n, hp, wp, f"state {self.input_name!r}")

    def initial_array(self, n: int, hp: int, wp: int) -> np.ndarray:
        """The state before the first step: ``initial`` everywhere, in ``dtype`` (numpy)."""
        return np.full(self.resolve(n, hp, wp), self.initial, dtype=np.dtype(self.dtype))


@dataclass(frozen=True)
class FlushSpec:
    """How the stream is finished: after the last frame, run ``steps`` (= lookahead) more steps.

    frame: what to feed as the frame input during flush steps ("repeat_last": the last frame again).
    flag_input: name of an extra int32 (N,) input that is 1 on flush steps and 0 on every other step
    (None when the graph has no such input). It tells the graph to replicate its last per-frame
    features instead of running the recurrent cell on the repeated frame.
    """

    steps: int
    frame: str = "repeat_last"
    flag_input: str | None = None


@dataclass(frozen=True)
class StepSpec(_GraphInterface):
    """Everything a runtime needs to drive a step graph; JSON-serialisable (:meth:`to_json`).

    The graph's inputs are ``input_names`` (frame, then the flush flag if any, then the state
    inputs); its outputs ``output_names`` (output frame, then the state outputs). Frames are NCHW
    float32 RGB in [0, 1]. When ``pads_inside`` is False the frame input must have H and W that are
    multiples of ``pad_multiple``: the runtime pads (``pad_mode``, at the bottom and the right) and
    crops the outputs back. The first ``lookahead`` outputs of a stream are warm-up and discarded.
    """

    family: str
    config: dict[str, Any]
    lookahead: int
    pad_multiple: int
    states: list[StateSpec]
    flush: FlushSpec
    pad_mode: str = "replicate"
    pads_inside: bool = False
    frame_input: str = "frame"
    frame_output: str = "output"
    layout: str = "NCHW"
    value_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    dtype: str = "float32"
    kind: str = "step"
    format_version: int = FORMAT_VERSION

    @property
    def input_names(self) -> list[str]:
        flag = [self.flush.flag_input] if self.flush.flag_input else []
        return [self.frame_input, *flag, *(s.input_name for s in self.states)]

    @property
    def output_names(self) -> list[str]:
        return [self.frame_output, *(s.output_name for s in self.states)]

    def initial_arrays(self, n: int, hp: int, wp: int) -> list[np.ndarray]:
        """The state arrays before the first frame, for padded frames (hp, wp)."""
        return [s.initial_array(n, hp, wp) for s in self.states]

    def check(self) -> None:
        """Raise ShapeError when the spec is inconsistent (shapes, pad mode, flush, duplicate names)."""
        if self.pad_multiple < 1:
            raise ShapeError(f"step interface: pad_multiple={self.pad_multiple}. Expected an int >= 1.")
        if self.pad_mode not in PAD_MODES:
            raise ShapeError(f"step interface: pad_mode {self.pad_mode!r}. Expected one of {', '.join(PAD_MODES)}.")
        if self.flush.frame != "repeat_last":
            raise ShapeError(f"step interface: flush frame policy {self.flush.frame!r} is unknown. "
                             "Expected 'repeat_last'.")
        if self.lookahead < 0 or self.flush.steps < 0:
            raise ShapeError("step interface: lookahead and flush steps must be >= 0.")
        names = self.input_names + self.output_names
        if len(set(names)) != len(names):
            raise ShapeError(f"step interface: tensor names repeat ({names}). Expected unique names.")
        for s in self.states:
            if s.dtype not in DTYPES:
                raise ShapeError(f"state {s.input_name!r}: dtype {s.dtype!r}. Expected one of {', '.join(DTYPES)}.")
            check_shape(s.shape, None if self.pads_inside else self.pad_multiple, f"state {s.input_name!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepSpec:
        d = {k: v for k, v in d.items() if k not in ("input_names", "output_names")}
        d["states"] = [StateSpec(**s) for s in d["states"]]
        d["flush"] = FlushSpec(**d["flush"])
        return cls(**d)


@dataclass(frozen=True)
class ClipSpec(_GraphInterface):
    """The clip contract of bidirectional models: ``clip(frames[T]) -> outputs[T]``, stateless.

    frames are (N, T, 3, H, W) float32 RGB in [0, 1] (``frame_input``, ``frame_output``); T is
    dynamic. The runtime runs windows of ``window`` frames overlapping by ``overlap`` and keeps the
    centre of each; ``latency`` is how many frames after a frame arrives its output is final.
    H and W are padded to ``pad_multiple`` (``pad_mode``) unless ``pads_inside``.
    """

    family: str
    config: dict[str, Any]
    window: int
    overlap: int
    pad_multiple: int
    latency: int | None = None  # None: window - 1 (clip_latency)
    min_frames: int = 1
    pad_mode: str = "replicate"
    pads_inside: bool = False
    frame_input: str = "frames"
    frame_output: str = "outputs"
    layout: str = "NTCHW"
    value_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    dtype: str = "float32"
    kind: str = "clip"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.latency is None and isinstance(self.window, int) and self.window >= 1:
            object.__setattr__(self, "latency", int(self.window) - 1)

    @property
    def input_names(self) -> list[str]:
        return [self.frame_input]

    @property
    def output_names(self) -> list[str]:
        return [self.frame_output]

    def check(self) -> None:
        """Raise ShapeError when the spec is inconsistent (window, overlap, latency, padding, names)."""
        check_window(self.window, self.overlap, "clip interface")
        if self.latency != clip_latency(self.window, self.overlap):
            raise ShapeError(f"clip interface: latency={self.latency} for window {self.window}. "
                             f"Expected {clip_latency(self.window, self.overlap)} (window - 1).")
        if self.pad_multiple < 1:
            raise ShapeError(f"clip interface: pad_multiple={self.pad_multiple}. Expected an int >= 1.")
        if self.pad_mode not in PAD_MODES:
            raise ShapeError(f"clip interface: pad_mode {self.pad_mode!r}. Expected one of {', '.join(PAD_MODES)}.")
        if self.frame_input == self.frame_output:
            raise ShapeError(f"clip interface: input and output are both named {self.frame_input!r}. "
                             "Expected two names.")

    def windowed(self, window: int | None = None, overlap: int | None = None) -> ClipSpec:
        """This spec with another window and/or overlap (the runtime's ``--window``/``--overlap``)."""
        w = self.window if window is None else int(window)
        o = self.overlap if overlap is None else int(overlap)
        if o >= w and overlap is None:  # a shorter window than the exported overlap: keep what fits
            o = w - 1
        check_window(w, o, "clip windows")
        return replace(self, window=w, overlap=o, latency=clip_latency(w, o))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipSpec:
        return cls(**{k: v for k, v in d.items() if k not in ("input_names", "output_names")})


def check_window(window: int, overlap: int, subject: str = "clip windows") -> None:
    """A window of ``window`` >= 1 frames overlapping the next by 0 <= ``overlap`` < ``window``."""
    ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (window, overlap))
    if not ok or window < 1 or not 0 <= overlap < window:
        raise ShapeError(f"{subject}: window={window}, overlap={overlap}. "
                         "Expected window >= 1 and 0 <= overlap < window.")


def clip_latency(window: int, overlap: int) -> int:
    """Frames after a frame arrives until its output is final, at most: ``window - 1``.

    The first window decides the first frame, which waits for the window's last frame; every later
    window keeps frames that came at most ``window - 1 - ceil(overlap / 2)`` frames before it is
    full. (Runtime, not counted here: the time to run a window.)
    """
    check_window(window, overlap)
    return int(window) - 1


def spec_from_dict(d: dict[str, Any]) -> StepSpec | ClipSpec:
    """The interface of a manifest: a StepSpec or a ClipSpec by its ``kind``."""
    return ClipSpec.from_dict(d) if d.get("kind") == "clip" else StepSpec.from_dict(d)
