"""The Backend base class: what a stream needs from an engine, and the lifecycle every backend shares.

A backend runs one artifact's step graph or clip graph (see the manifest's ``interface``) and keeps the
recurrent state itself, where it can keep it without copies (ONNX Runtime OrtValues swapped
between steps, TensorRT ping-pong device buffers). It is a
:class:`vdeblur.contract.driver.Stepper`, so the one driver streams frames through it:

- :meth:`Backend.reset` (re)allocates the state tensors at their initial values for frames of a
  padded size (Hp, Wp) (a stream calls it at its first frame and on a resolution change);
- :meth:`Backend.step` feeds one padded frame (N, 3, Hp, Wp) float32 and returns the output frame
  of the step (N, 3, Hp, Wp), float32, the state updated in place (the array may be a buffer the
  backend reuses at the next step: copy it to keep it);
- :meth:`Backend.clip` (clip graphs) runs padded frames (N, T, 3, Hp, Wp) float32 -> the outputs of
  the same shape; it is a :class:`vdeblur.contract.driver.Clipper`, so the one window driver runs it;
- :meth:`Backend.run` is the stateless escape hatch: every input by name -> every output by name.

The base class reads the manifest (:class:`Interface`), owns the lifecycle (``close`` once, context
manager, ``closed``) and the frame checks; a backend implements ``reset``, ``step``, ``run``,
``describe`` and ``_release`` (free sessions and device memory). This module does not import
torch, onnxruntime or tensorrt.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.contract import manifest as manifest_mod
from vdeblur.contract.interface import ClipSpec, StepSpec
from vdeblur.errors import BackendError, ShapeError, UsageError

BACKENDS = ("torch", "onnxruntime", "tensorrt", "tensorrt-rtx")


@dataclass(frozen=True)
class StateBuffer:
    input_name: str
    output_name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    initial: float

    def initial_array(self) -> np.ndarray:
        return np.full(self.shape, self.initial, dtype=self.dtype)


class Interface:
    """The graph interface of an artifact, from its manifest (no torch, no onnxruntime).

    ``kind`` "step": a step graph (states, lookahead, flush); "clip": a clip graph (``window``,
    ``overlap``, ``latency``; no state: ``states`` is empty, ``lookahead`` is the latency in frames).
    """

    def __init__(self, artifact: str | Path) -> None:
        self.artifact = Path(artifact)
        self.manifest = manifest_mod.read(self.artifact)
        self.kind: str = self.manifest.kind
        spec = self.manifest.spec()
        self.spec: StepSpec | ClipSpec = spec
        self.frame_input: str = spec.frame_input
        self.frame_output: str = spec.frame_output
        self.input_names: list[str] = spec.input_names
        self.output_names: list[str] = spec.output_names
        self.pad_multiple: int = spec.pad_multiple
        self.pad_mode: str = spec.pad_mode
        if isinstance(spec, ClipSpec):
            self.flag_input: str | None = None
            self.flush_steps: int = 0
            self.lookahead: int = spec.latency
            self.states: list[dict[str, Any]] = []
            self.window: int | None = spec.window
            self.overlap: int | None = spec.overlap
        else:
            self.flag_input = spec.flush.flag_input
            self.flush_steps = spec.flush.steps
            self.lookahead = spec.lookahead
            self.states = list(self.manifest.interface["states"])
            self.window = self.overlap = None

    def graph_path(self, precision: str, lowering: str = "portable") -> Path:
        return self.artifact / self.manifest.graph(precision, lowering).file

    def state_buffers(self, n: int, hp: int, wp: int) -> list[StateBuffer]:
        spec = self.spec
        if isinstance(spec, ClipSpec):
            return []
        return [StateBuffer(s.input_name, s.output_name, s.resolve(n, hp, wp), np.dtype(s.dtype), float(s.initial))
                for s in spec.states]

    def check_clip(self, frames: np.ndarray) -> None:
        """Padded clip frames: (N, T, 3, Hp, Wp) float32, T >= 1, Hp and Wp multiples of the pad multiple."""
        if self.kind != "clip":
            raise BackendError(f"{self.artifact}: is a step artifact. Stream it frame by frame (step), not by clips.")
        if frames.ndim != 5 or frames.shape[2] != 3 or frames.shape[1] < 1:
            raise ShapeError(f"clip: frames have shape {frames.shape}. Expected (N, T, 3, H, W) with T >= 1.")
        self._check_padded("clip", frames)

    def check_frame(self, frame: np.ndarray) -> None:
        """A padded step frame: (N, 3, Hp, Wp) float32 with Hp, Wp multiples of the pad multiple."""
        if self.kind != "step":
            raise BackendError(f"{self.artifact}: is a clip artifact. Run it by clips (Backend.clip or Stream), "
                               "not frame by frame.")
        if frame.ndim != 4 or frame.shape[1] != 3:
            raise ShapeError(f"step: frame has shape {frame.shape}. Expected (N, 3, H, W).")
        self._check_padded("step", frame)

    def _check_padded(self, what: str, x: np.ndarray) -> None:
        """float32, and H, W (the last two dimensions) multiples of the pad multiple."""
        if x.dtype != np.float32:
            raise ShapeError(f"{what}: frames have dtype {x.dtype}. Expected float32 in [0, 1].")
        m = self.pad_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ShapeError(f"{what}: frames are {x.shape[-1]}x{x.shape[-2]}. Expected multiples of {m} (pad them, "
                             "or use Stream).")


class Backend:
    """Base of every backend: the artifact's interface, the lifecycle, the common views.

    Subclasses set ``name``, call ``super().__init__(artifact, precision)`` first, and implement
    :meth:`reset`, :meth:`step`, :meth:`run`, :meth:`describe` and :meth:`_release`.
    """

    name = "backend"

    def __init__(self, artifact: str | Path, precision: str = "fp32", iface: Interface | None = None) -> None:
        self.iface = iface if iface is not None else Interface(artifact)
        self.precision = precision
        self.inputs: list[str] = list(self.iface.input_names)
        self.outputs: list[str] = list(self.iface.output_names)
        self.closed = False

    @property
    def spec(self) -> StepSpec | ClipSpec:
        return self.iface.spec

    @property
    def kind(self) -> str:
        return self.iface.kind

    # ----- what each backend implements ---------------------------------------------------

    def reset(self, batch: int, height: int, width: int) -> None:
        raise NotImplementedError

    def step(self, frame: np.ndarray, flush: bool = False) -> np.ndarray:
        raise NotImplementedError

    def clip(self, frames: np.ndarray) -> np.ndarray:
        """Clip graphs: padded frames (N, T, 3, Hp, Wp) float32 -> outputs of the same shape."""
        raise BackendError(f"{self.name} backend: clip graphs are not supported by this backend.")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Which graph or engine this backend runs (file, built, verified, fallback, notes...)."""
        return {"file": None, "notes": [], "precision": self.precision}

    def _release(self) -> None:
        """Free sessions, buffers and device memory (called once, by :meth:`close`)."""

    # ----- the lifecycle ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise BackendError(f"{self.name} backend: it is closed. Open the artifact again.")

    def close(self) -> None:
        """Release everything the backend holds; closing twice is a no-op."""
        if self.closed:
            return
        self.closed = True
        self._release()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe(backend: Any) -> dict[str, Any]:
    """Which graph or engine a backend runs (file, built, fallback, notes), as far as it says."""
    fn = getattr(backend, "describe", None)
    if callable(fn):
        return dict(fn())
    path = getattr(backend, "engine_path", None) or getattr(backend, "graph_file", None)
    return {"file": str(path) if path else None, "notes": []}


def open_backend(artifact: str | Path, backend: str = "onnxruntime", precision: str = "fp32",
                 device: str = "auto", **options: Any) -> Backend:
    """Open ``artifact`` on a backend by name (torch | onnxruntime | tensorrt | tensorrt-rtx)."""
    if backend not in BACKENDS:
        raise UsageError(f"backend {backend!r}: unknown. Expected one of {', '.join(BACKENDS)}.")
    module = importlib.import_module(f"vdeblur.runtime.backends.{backend.replace('-', '_')}")
    return module.open(artifact, precision=precision, device=device, **options)  # type: ignore[no-any-return]
