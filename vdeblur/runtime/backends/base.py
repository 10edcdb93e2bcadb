"""The Backend protocol: what a stream needs from an engine.

A backend runs one artifact's step graph (see the manifest's ``interface``) and keeps the
recurrent state itself, where it can keep it without copies (ONNX Runtime OrtValues swapped
between steps, TensorRT ping-pong device buffers):

- :meth:`Backend.reset` (re)allocates the state tensors at their initial values for frames of a
  padded size (Hp, Wp) (a stream calls it at its first frame and on a resolution change);
- :meth:`Backend.step` feeds one padded frame (N, 3, Hp, Wp) float32 and returns the output frame
  of the step (N, 3, Hp, Wp), float32, the state updated in place (the array may be a buffer the
  backend reuses at the next step: copy it to keep it);
- :meth:`Backend.run` is the stateless escape hatch: every input by name -> every output by name.

Backends are context managers (``close`` releases sessions and device memory). This module does
not import torch, onnxruntime or tensorrt.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vdeblur.errors import UsageError

BACKENDS = ("torch", "onnxruntime", "tensorrt")


@runtime_checkable
class Backend(Protocol):
    name: str
    inputs: list[str]
    outputs: list[str]

    def reset(self, batch: int, height: int, width: int) -> None: ...

    def step(self, frame: np.ndarray, flush: bool = False) -> np.ndarray: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...


def describe(backend: Any) -> dict[str, Any]:
    """Which graph or engine a backend runs (file, built, fallback, notes), as far as it says."""
    fn = getattr(backend, "describe", None)
    if callable(fn):
        return dict(fn())
    path = getattr(backend, "engine_path", None) or getattr(backend, "graph_file", None)
    return {"file": str(path) if path else None, "notes": []}


def open_backend(artifact: str | Path, backend: str = "onnxruntime", precision: str = "fp32",
                 device: str = "auto", **options: Any) -> Backend:
    """Open ``artifact`` on a backend by name (torch | onnxruntime | tensorrt)."""
    if backend not in BACKENDS:
        raise UsageError(f"backend {backend!r}: unknown. Expected one of {', '.join(BACKENDS)}.")
    module = importlib.import_module(f"vdeblur.runtime.backends.{backend}")
    return module.open(artifact, precision=precision, device=device, **options)  # type: ignore[no-any-return]
