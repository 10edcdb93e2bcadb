"""Model -> pure step function with explicit state (DESIGN.md, "Step contract") or clip function
("Clip contract"), the torch side.

The interface types and the shape grammar are torch-free and live in
:mod:`vdeblur.contract.interface` (:class:`StepSpec`, :class:`StateSpec`, :class:`FlushSpec`); the
loop that streams frames in :mod:`vdeblur.contract.driver`. This module holds what needs torch:

- :func:`step_module`: model -> (step nn.Module, StepSpec); the family-specific step logic lives in
  the model file (``make_step``); :func:`clip_module`: bidirectional model -> (clip nn.Module,
  ClipSpec) (``make_clip``); :func:`graph_module` picks by the model's kind;
- :class:`PadCropStep`: wraps a step module so it accepts frames of any size (pads, crops back);
- :func:`initial_states`, :func:`example_inputs`, :func:`dynamic_shapes`: torch tensors and
  ``torch.export`` dims for a spec;
- :func:`unroll`: runs a clip through a step module with the one driver, exactly as the runtime
  does (initial state, warm-up, flush), one output per input frame; :func:`run_windows` runs a video
  through a clip module by windows, as the runtime does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from vdeblur.contract.driver import FeedbackStepper, FunctionClipper, drive, drive_clip
from vdeblur.contract.interface import ClipSpec, FlushSpec, StateSpec, StepSpec, parse_dim
from vdeblur.errors import UsageError
from vdeblur.models.blocks import VideoModel, check_frames, crop_to, pad_to_multiple

__all__ = ["ClipSpec", "FlushSpec", "PadCropStep", "StateSpec", "StepSpec", "clip_module", "dynamic_shapes",
           "example_inputs", "graph_module", "initial_states", "run_windows", "step_module", "unroll"]

# The longest clip a clip graph is exported for (the dynamic T's upper bound; engines' profiles are
# narrower: 1 .. the window).
MAX_CLIP_FRAMES = 1024

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int32": torch.int32, "int64": torch.int64}


def initial_states(spec: StepSpec, n: int, height: int, width: int,
                   device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """The state tensors before the first frame of a stream of (height, width) frames."""
    hp, wp = spec.padded(height, width)
    return [torch.full(s.resolve(n, hp, wp), s.initial, dtype=TORCH_DTYPES[s.dtype], device=device)
            for s in spec.states]


def example_inputs(spec: StepSpec | ClipSpec, n: int, height: int, width: int,
                   frames: int = 3) -> tuple[torch.Tensor, ...]:
    """Inputs of one step, in ``spec.input_names`` order: a random frame (N, 3, H, W), the flush flag
    (zeros) if any, and the initial states. H and W must be multiples of ``pad_multiple`` unless the
    step pads itself. Clip graphs: random frames (N, ``frames``, 3, H, W)."""
    if isinstance(spec, ClipSpec):
        return (torch.rand(n, frames, 3, height, width),)
    frame = torch.rand(n, 3, height, width)
    flag = [torch.zeros(n, dtype=torch.int32)] if spec.flush.flag_input else []
    return (frame, *flag, *initial_states(spec, n, height, width))


def dynamic_shapes(spec: StepSpec | ClipSpec, batch: bool = True) -> tuple[dict[int, Any] | None, ...]:
    """``dynamic_shapes`` for ``torch.export`` / ``torch.onnx.export(dynamo=True)`` of a step graph.

    H and W are dynamic as multiples of ``pad_multiple`` (derived dims H = m * kh, W = m * kw; state
    dims Hp/k follow as (m / k) * kh); the batch dim N is dynamic when ``batch`` is True. Not for
    graphs that pad inside (their state sizes are not linear in H and W). Clip graphs: the number of
    frames T is dynamic too (1 <= T <= MAX_CLIP_FRAMES).
    """
    from torch.export import Dim

    if spec.pads_inside:
        raise UsageError(
            "dynamic_shapes: the step pads inside. Export the unpadded step (step_module(pad=False))."
        )
    spec.check()  # every Hp/k divides the pad multiple
    m = spec.pad_multiple
    kh, kw = Dim("kh", min=2, max=8192 // m), Dim("kw", min=2, max=8192 // m)
    n_dim = Dim("N", min=1, max=64) if batch else None
    if isinstance(spec, ClipSpec):
        t_dim = Dim("T", min=1, max=MAX_CLIP_FRAMES)
        dims = {1: t_dim, 3: kh * m if m > 1 else kh, 4: kw * m if m > 1 else kw}
        return ({**({0: n_dim} if n_dim is not None else {}), **dims},)

    def sym(dim: int | str) -> Any:
        parsed = parse_dim(dim)
        if isinstance(parsed, int):
            return None
        name, k = parsed
        if name == "N":
            return n_dim
        base = kh if name == "Hp" else kw
        return base * (m // k) if m // k != 1 else base

    def spec_of(shape: Sequence[int | str]) -> dict[int, Any] | None:
        dims = {i: sym(d) for i, d in enumerate(shape)}
        dims = {i: d for i, d in dims.items() if d is not None}
        return dims or None

    frame = spec_of(["N", 3, "Hp", "Wp"])
    flag = [spec_of(["N"])] if spec.flush.flag_input else []
    return (frame, *flag, *(spec_of(s.shape) for s in spec.states))


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


def clip_module(model: nn.Module, window: int | None = None, overlap: int | None = None) -> tuple[nn.Module, ClipSpec]:
    """The clip graph of a bidirectional model and its spec (``window``/``overlap``: the windows the
    runtime runs by default; the model's when None). Frames must be multiples of
    ``spec.pad_multiple`` (the runtime pads). The module is put in eval mode."""
    if not isinstance(model, VideoModel):
        raise UsageError(
            f"clip_module: got a {type(model).__name__}. Expected a model built by vdeblur.models.create()."
        )
    if model.kind != "clip":
        raise UsageError(f"{model.family}: is a {model.kind} model, it has no clip graph. Use its step graph.")
    model.eval()
    module, spec = model.make_clip()
    spec = spec.windowed(window, overlap)
    spec.check()
    return module.eval(), spec


def graph_module(model: nn.Module, window: int | None = None,
                 overlap: int | None = None) -> tuple[nn.Module, StepSpec | ClipSpec]:
    """The graph a model deploys as: its step graph (streaming models) or its clip graph."""
    if isinstance(model, VideoModel) and model.kind == "clip":
        return clip_module(model, window, overlap)
    if window is not None or overlap is not None:
        raise UsageError(f"{getattr(model, 'family', 'model')}: --window/--overlap are for clip models "
                         "(DSTNet, AHFNet). This one streams frame by frame.")
    return step_module(model)


def run_windows(clip: Callable[..., Any], spec: ClipSpec, frames: torch.Tensor) -> torch.Tensor:
    """Run a video through a clip module by windows as the runtime does (:func:`drive_clip`)."""
    check_frames(frames)
    device = frames.device

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = clip(torch.from_numpy(np.ascontiguousarray(feeds[spec.frame_input])).to(device))
        return [out.detach().cpu().numpy()]

    x = frames.detach().float().cpu().numpy()
    return torch.from_numpy(drive_clip(FunctionClipper(spec, run), spec, x)).to(device)


def unroll(step: Callable[..., Any], spec: StepSpec, frames: torch.Tensor) -> torch.Tensor:
    """Run a clip through a step module (or any callable with its signature) as the runtime does.

    frames: (N, T, 3, H, W) float RGB in [0, 1], any size (padded per ``spec`` unless the step pads
    itself, outputs cropped back). The one driver (:func:`vdeblur.contract.driver.drive`) runs it:
    states start at their initial values; steps 0..T-1 feed the frames, then ``spec.flush.steps``
    flush steps feed the last frame again (and the flush flag = 1, if the graph has one); the first
    ``spec.lookahead`` outputs are discarded. Returns (N, T, 3, H, W): one output per input frame.
    """
    check_frames(frames)
    device = frames.device
    names = spec.input_names

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[k])).to(device) for k in names]
        with torch.no_grad():
            outs = step(*args)
        return [o.detach().cpu().numpy() for o in outs]

    x = frames.detach().float().cpu().numpy()
    return torch.from_numpy(drive(FeedbackStepper(spec, run), spec, x)).to(device)
