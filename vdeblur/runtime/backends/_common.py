"""Pieces shared by the backends: the artifact's interface, state shapes, frame checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.errors import BackendError, ShapeError
from vdeblur.export import manifest as manifest_mod

_DIM = re.compile(r"^(N|Hp|Wp)(?:/([1-9][0-9]*))?$")


def resolve_shape(shape: list[int | str], n: int, hp: int, wp: int) -> tuple[int, ...]:
    """Concrete shape of a manifest state shape (ints, N, Hp, Wp, Hp/k...)."""
    dims = []
    for d in shape:
        if isinstance(d, int):
            dims.append(d)
            continue
        m = _DIM.match(str(d))
        if m is None:
            raise BackendError(f"manifest: state dimension {d!r} is not understood. Re-export the artifact.")
        value = {"N": n, "Hp": hp, "Wp": wp}[m.group(1)] // int(m.group(2) or 1)
        dims.append(value)
    return tuple(dims)


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
    """The step-graph interface of an artifact, from its manifest (no torch, no onnxruntime)."""

    def __init__(self, artifact: str | Path) -> None:
        self.artifact = Path(artifact)
        self.manifest = manifest_mod.read(self.artifact)
        if self.manifest.kind != "step":
            raise BackendError(f"{artifact}: is a {self.manifest.kind} artifact. Only step graphs are supported.")
        iface: dict[str, Any] = self.manifest.interface
        self.frame_input: str = iface["frame_input"]
        self.frame_output: str = iface["frame_output"]
        self.input_names: list[str] = list(iface["input_names"])
        self.output_names: list[str] = list(iface["output_names"])
        self.flag_input: str | None = iface["flush"].get("flag_input")
        self.flush_steps: int = int(iface["flush"]["steps"])
        self.lookahead: int = int(iface["lookahead"])
        self.pad_multiple: int = int(iface["pad_multiple"])
        self.pad_mode: str = iface.get("pad_mode", "replicate")
        self.states: list[dict[str, Any]] = list(iface["states"])

    def graph_path(self, precision: str, lowering: str = "portable") -> Path:
        return self.artifact / self.manifest.graph(precision, lowering).file

    def state_buffers(self, n: int, hp: int, wp: int) -> list[StateBuffer]:
        return [
            StateBuffer(s["input_name"], s["output_name"], resolve_shape(s["shape"], n, hp, wp),
                        np.dtype(s["dtype"]), float(s["initial"]))
            for s in self.states
        ]

    def check_frame(self, frame: np.ndarray) -> None:
        """A padded step frame: (N, 3, Hp, Wp) float32 with Hp, Wp multiples of the pad multiple."""
        if frame.ndim != 4 or frame.shape[1] != 3:
            raise ShapeError(f"step: frame has shape {frame.shape}. Expected (N, 3, H, W).")
        if frame.dtype != np.float32:
            raise ShapeError(f"step: frame has dtype {frame.dtype}. Expected float32 in [0, 1].")
        m = self.pad_multiple
        if frame.shape[2] % m or frame.shape[3] % m:
            raise ShapeError(
                f"step: frame is {frame.shape[3]}x{frame.shape[2]}. Expected multiples of {m} (pad it, or use Stream)."
            )
