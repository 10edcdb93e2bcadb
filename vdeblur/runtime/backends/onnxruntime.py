"""ONNX Runtime backend: the portable graph, with the recurrent state kept in OrtValues.

IOBinding binds every input and output to preallocated OrtValues. Two sets of state OrtValues
alternate: step k reads set k % 2 and writes set (k + 1) % 2, so the state never leaves the
device and no step allocates (the frame is copied into its bound OrtValue in place; the output
frame is read from its bound OrtValue). Runs on CUDA when onnxruntime-gpu finds a GPU
(``device="cuda"`` or ``"auto"``), else on the CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.errors import BackendError, missing_dependency
from vdeblur.runtime.backends._common import Interface, StateBuffer

SESSION_SETTINGS = "session.json"


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - a base dependency
        raise missing_dependency("onnxruntime", "dev", "the onnxruntime backend") from e
    return ort


def _has_gpu() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg")


def resolve_device(device: str) -> str:
    ort = _ort()
    cuda_ok = "CUDAExecutionProvider" in ort.get_available_providers() and _has_gpu()
    if device == "auto":
        return "cuda" if cuda_ok else "cpu"
    if device == "cuda" and not cuda_ok:
        raise BackendError("onnxruntime: device 'cuda' is not available here. Expected an NVIDIA GPU with "
                           "onnxruntime-gpu's CUDA provider; use --device cpu.")
    if device not in ("cpu", "cuda"):
        raise BackendError(f"onnxruntime: device {device!r} is unknown. Expected auto, cpu or cuda.")
    return device


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, artifact: str | Path, precision: str = "fp32", device: str = "auto",
                 threads: int | None = None) -> None:
        ort = _ort()
        self.iface = Interface(artifact)
        self.precision = precision
        self.device = resolve_device(device)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.device == "cuda" else [
            "CPUExecutionProvider"]
        path, settings = self._graph(precision, providers)
        if settings:
            from vdeblur.export.engines import ort_session_options

            opts = ort_session_options(ort, settings["session_options"])
        else:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # ORT raises its own exception types
            raise BackendError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]}).") from e
        self.graph_file = path
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._binding: Any = None
        self._size: tuple[int, int, int] | None = None

    def _graph(self, precision: str, providers: list[str]) -> tuple[Path, dict[str, Any]]:
        """The model `vdeblur build --backend onnxruntime` optimised, with its session settings, when it
        was built for these providers (a CUDA-optimised model does not load on the CPU provider);
        else the artifact's portable graph."""
        built = self.iface.artifact / "engines" / "onnxruntime" / precision
        settings_file = built / SESSION_SETTINGS
        if settings_file.is_file():
            settings = json.loads(settings_file.read_text())
            model = built / settings.get("model", "model.optimized.onnx")
            if model.is_file() and settings.get("optimized_for") == providers:
                return model, settings
        return self.iface.graph_path(precision, "portable"), {}

    # ----- stateful stepping -------------------------------------------------------------

    def reset(self, batch: int, height: int, width: int) -> None:
        ort = _ort()
        dev = self.device
        self._states: list[StateBuffer] = self.iface.state_buffers(batch, height, width)
        self._sets = [
            [ort.OrtValue.ortvalue_from_numpy(s.initial_array(), dev, 0) for s in self._states],
            [ort.OrtValue.ortvalue_from_shape_and_type(s.shape, s.dtype, dev, 0) for s in self._states],
        ]
        shape = (batch, 3, height, width)
        if dev == "cpu":
            # OrtValues over our own numpy buffers: the frame is copied in with np.copyto and the
            # output is read where ONNX Runtime wrote it; nothing is allocated per frame.
            self._frame_host = np.zeros(shape, np.float32)
            self._out_host = np.zeros(shape, np.float32)
            self._frame = ort.OrtValue.ortvalue_from_numpy(self._frame_host)
            self._out = ort.OrtValue.ortvalue_from_numpy(self._out_host)
        else:
            self._frame_host = self._out_host = None
            self._frame = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, dev, 0)
            self._out = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, dev, 0)
        self._flag_values = None
        if self.iface.flag_input:
            self._flag_values = [
                ort.OrtValue.ortvalue_from_numpy(np.full((batch,), v, dtype=np.int32), dev, 0) for v in (0, 1)
            ]
        self._parity = 0
        self._size = (batch, height, width)
        self._binding = self.session.io_binding()

    def step(self, frame: np.ndarray, flush: bool = False) -> np.ndarray:
        if self._size is None or frame.shape != (self._size[0], 3, self._size[1], self._size[2]):
            self.iface.check_frame(frame)
            self.reset(frame.shape[0], frame.shape[2], frame.shape[3])
        if self._frame_host is not None:
            np.copyto(self._frame_host, frame)
        else:
            self._frame.update_inplace(np.ascontiguousarray(frame, dtype=np.float32))
        b = self._binding
        read, write = self._sets[self._parity], self._sets[1 - self._parity]
        b.bind_ortvalue_input(self.iface.frame_input, self._frame)
        if self._flag_values is not None and self.iface.flag_input:
            b.bind_ortvalue_input(self.iface.flag_input, self._flag_values[int(flush)])
        for s, v in zip(self._states, read, strict=True):
            b.bind_ortvalue_input(s.input_name, v)
        b.bind_ortvalue_output(self.iface.frame_output, self._out)
        for s, v in zip(self._states, write, strict=True):
            b.bind_ortvalue_output(s.output_name, v)
        self.session.run_with_iobinding(b)
        self._parity = 1 - self._parity
        # On the CPU this is the bound buffer itself, overwritten by the next step: copy to keep it.
        return self._out_host if self._out_host is not None else self._out.numpy()

    # ----- stateless ---------------------------------------------------------------------

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds), strict=True))

    def close(self) -> None:
        self._binding = None
        self._size = None

    def __enter__(self) -> OnnxRuntimeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(artifact: str | Path, precision: str = "fp32", device: str = "auto", **options: Any) -> OnnxRuntimeBackend:  # noqa: A001
    return OnnxRuntimeBackend(artifact, precision=precision, device=device, **options)
