"""Model -> pure step function with explicit state (DESIGN.md, "Step contract").

``step(frame_t, [flush,] *state) -> (output_{t-L}, *state')``: everything a stream remembers is a
state tensor (frame history, recurrent features, a step counter), so the runtime is generic. This
module holds the model-agnostic parts:

- :class:`StateSpec`, :class:`FlushSpec`, :class:`StepSpec`: plain, JSON-serialisable descriptions
  of a step graph's inputs, outputs and state (what the manifest carries);
- :func:`step_module`: model -> (step nn.Module, StepSpec); the family-specific step logic lives in
  the model file (``make_step``);
- :class:`PadCropStep`: wraps a step module so it accepts frames of any size (pads, crops back);
- :func:`unroll`: runs a clip through a step module exactly as the runtime does (initial state,
  warm-up, flush), one output per input frame.

State shapes are written with symbols: ``N`` (batch), ``Hp`` and ``Wp`` (frame height and width
padded up to ``pad_multiple``), optionally divided by an integer (``"Hp/4"``); integers are literal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from vdeblur.errors import ShapeError, UsageError
from vdeblur.models.blocks import VideoModel, check_frames, crop_to, pad_to_multiple, padded_size

FORMAT_VERSION = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16, "int32": torch.int32, "int64": torch.int64}
_DIM = re.compile(r"^(N|Hp|Wp)(?:/([1-9][0-9]*))?$")


@dataclass(frozen=True)
class StateSpec:
    """One state tensor: fed as ``input_name``, returned as ``output_name``, fed back next step.

    shape: dims as ints or symbols (``"N"``, ``"Hp"``, ``"Wp"``, ``"Hp/4"``...); dtype: a key of
    DTYPES; initial: the fill value of the tensor before the first step.
    """

    input_name: str
    output_name: str
    shape: list[int | str]
    dtype: str = "float32"
    initial: float = 0.0
    description: str = ""

    def resolve(self, n: int, hp: int, wp: int) -> tuple[int, ...]:
        """The concrete shape for batch n and padded frame size (hp, wp)."""
        return tuple(resolve_dim(d, n, hp, wp) for d in self.shape)

    def initial_tensor(self, n: int, hp: int, wp: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The state before the first step: ``initial`` everywhere, in ``dtype``."""
        return torch.full(self.resolve(n, hp, wp), self.initial, dtype=DTYPES[self.dtype], device=device)


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
class StepSpec:
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

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """The frame size the state shapes refer to (Hp, Wp)."""
        return padded_size(height, self.pad_multiple), padded_size(width, self.pad_multiple)

    def initial_states(
        self, n: int, height: int, width: int, device: torch.device | str = "cpu"
    ) -> list[torch.Tensor]:
        """The state tensors before the first frame of a stream of (height, width) frames."""
        hp, wp = self.padded(height, width)
        return [s.initial_tensor(n, hp, wp, device) for s in self.states]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_names"] = self.input_names
        d["output_names"] = self.output_names
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepSpec:
        d = {k: v for k, v in d.items() if k not in ("input_names", "output_names")}
        d["states"] = [StateSpec(**s) for s in d["states"]]
        d["flush"] = FlushSpec(**d["flush"])
        return cls(**d)


def example_inputs(spec: StepSpec, n: int, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """Inputs of one step, in ``spec.input_names`` order: a random frame (N, 3, H, W), the flush flag
    (zeros) if any, and the initial states. H and W must be multiples of ``pad_multiple`` unless the
    step pads itself."""
    frame = torch.rand(n, 3, height, width)
    flag = [torch.zeros(n, dtype=torch.int32)] if spec.flush.flag_input else []
    return (frame, *flag, *spec.initial_states(n, height, width))


def dynamic_shapes(spec: StepSpec, batch: bool = True) -> tuple[dict[int, Any] | None, ...]:
    """``dynamic_shapes`` for ``torch.export`` / ``torch.onnx.export(dynamo=True)`` of a step graph.

    H and W are dynamic as multiples of ``pad_multiple`` (derived dims H = m * kh, W = m * kw; state
    dims Hp/k follow as (m / k) * kh); the batch dim N is dynamic when ``batch`` is True. Not for
    graphs that pad inside (their state sizes are not linear in H and W).
    """
    from torch.export import Dim

    if spec.pads_inside:
        raise UsageError(
            "dynamic_shapes: the step pads inside. Export the unpadded step (step_module(pad=False))."
        )
    m = spec.pad_multiple
    kh, kw = Dim("kh", min=2, max=8192 // m), Dim("kw", min=2, max=8192 // m)
    n_dim = Dim("N", min=1, max=64) if batch else None

    def sym(dim: int | str) -> Any:
        if isinstance(dim, int):
            return None
        match = _DIM.match(dim)
        if match is None:
            raise UsageError(f"state shape: dimension {dim!r} is not understood. Expected N, Hp, Wp or Hp/k.")
        name, k = match.group(1), int(match.group(2) or 1)
        if name == "N":
            return n_dim
        if m % k:
            raise UsageError(f"dynamic_shapes: {dim} is not a whole multiple of the padded size (pad {m}).")
        base = kh if name == "Hp" else kw
        return base * (m // k) if m // k != 1 else base

    def spec_of(shape: list[int | str]) -> dict[int, Any] | None:
        dims = {i: sym(d) for i, d in enumerate(shape)}
        dims = {i: d for i, d in dims.items() if d is not None}
        return dims or None

    frame = spec_of(["N", 3, "Hp", "Wp"])
    flag = [spec_of(["N"])] if spec.flush.flag_input else []
    return (frame, *flag, *(spec_of(s.shape) for s in spec.states))


def resolve_dim(dim: int | str, n: int, hp: int, wp: int) -> int:
    """One dimension of a StateSpec shape: an int, or ``N`` / ``Hp`` / ``Wp`` optionally ``/k``."""
    if isinstance(dim, int):
        return dim
    m = _DIM.match(str(dim))
    if m is None:
        raise UsageError(
            f"state shape: dimension {dim!r} is not understood. Expected an int, N, Hp, Wp or Hp/k."
        )
    value = {"N": n, "Hp": hp, "Wp": wp}[m.group(1)]
    k = int(m.group(2) or 1)
    if value % k:
        raise ShapeError(f"state shape: {m.group(1)}={value} is not divisible by {k}. Pad the frames first.")
    return value // k


# --------------------------------------------------------------------------------------------
# Step modules
# --------------------------------------------------------------------------------------------


class PadCropStep(nn.Module):
    """Wraps a step module so its frame input may have any H and W.

    The frame (N, 3, H, W) is padded at the bottom and right to ``multiple`` with ``mode``
    ("replicate"), the inner step runs on (N, 3, Hp, Wp) (its states are at that size), and the
    output is cropped back to (N, 3, H, W). Other inputs pass through unchanged.
    """

    def __init__(self, inner: nn.Module, multiple: int, mode: str = "replicate") -> None:
        super().__init__()
        self.inner = inner
        self.multiple = multiple
        self.mode = mode

    def forward(self, frame: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = frame.shape[-2], frame.shape[-1]
        out, *states = self.inner(pad_to_multiple(frame, self.multiple, self.mode), *rest)
        return (crop_to(out, h, w), *states)


def step_module(model: nn.Module, pad: bool = False) -> tuple[nn.Module, StepSpec]:
    """The step graph of a streaming model and its spec.

    ``pad=False``: the frame input must be a multiple of ``spec.pad_multiple`` (the exported graph;
    the runtime pads). ``pad=True``: wrapped in :class:`PadCropStep` (any frame size;
    ``spec.pads_inside`` is True). The module is put in eval mode.
    """
    if not isinstance(model, VideoModel):
        raise UsageError(
            f"step_module: got a {type(model).__name__}. Expected a model built by vdeblur.models.create()."
        )
    if model.kind != "step":
        raise UsageError(
            f"{model.family}: is a {model.kind} model, it has no step graph. "
            "Use the clip contract (clip windows) for bidirectional models."
        )
    model.eval()
    step, spec = model.make_step()
    if pad:
        step = PadCropStep(step, spec.pad_multiple, spec.pad_mode)
        spec = replace(spec, pads_inside=True)
    return step.eval(), spec


def unroll(step: Callable[..., Any], spec: StepSpec, frames: torch.Tensor) -> torch.Tensor:
    """Run a clip through a step module (or any callable with its signature) as the runtime does.

    frames: (N, T, 3, H, W) float RGB in [0, 1], any size (padded per ``spec`` unless the step pads
    itself, outputs cropped back). States start at their initial values; steps 0..T-1 feed the
    frames, then ``spec.flush.steps`` flush steps feed the last frame again (and the flush flag = 1,
    if the graph has one); the first ``spec.lookahead`` outputs are discarded. Returns
    (N, T, 3, H, W): exactly one output per input frame.
    """
    check_frames(frames)
    if spec.flush.frame != "repeat_last":
        raise UsageError(
            f"unroll: flush frame policy {spec.flush.frame!r} is unknown. Expected 'repeat_last'."
        )
    n, t_len, _, h, w = frames.shape
    x = frames.float()
    if not spec.pads_inside:
        x = pad_to_multiple(x, spec.pad_multiple, spec.pad_mode)
    states = spec.initial_states(n, x.shape[-2], x.shape[-1], frames.device)
    outputs = []
    with torch.no_grad():
        for t in range(t_len + spec.flush.steps):
            args = [x[:, min(t, t_len - 1)]]
            if spec.flush.flag_input:
                args.append(torch.full((n,), int(t >= t_len), dtype=torch.int32, device=frames.device))
            out, *states = step(*args, *states)
            if t >= spec.lookahead:
                outputs.append(out)
    return crop_to(torch.stack(outputs, dim=1), h, w)
