"""ONNX Runtime backend: the portable graph, with the recurrent state kept in OrtValues.

IOBinding binds every input and output to preallocated OrtValues. Two sets of state OrtValues
alternate: step k reads set k % 2 and writes set (k + 1) % 2, so the state never leaves the
device and no step allocates (the frame is copied into its bound OrtValue in place; the output
frame is read from its bound OrtValue). Runs on CUDA when onnxruntime-gpu finds a GPU
(``device="cuda"`` or ``"auto"``), else on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.contract.device import nvidia_device_present
from vdeblur.contract.engines import ORT_MODEL, engine_dir, read_session
from vdeblur.errors import BackendError, missing_dependency
from vdeblur.runtime.backends.base import Backend, StateBuffer


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - a base dependency
        raise missing_dependency("onnxruntime", "dev", "the onnxruntime backend") from e
    return ort


def resolve_device(device: str) -> str:
    ort = _ort()
    cuda_ok = "CUDAExecutionProvider" in ort.get_available_providers() and nvidia_device_present()
    if device == "auto":
        return "cuda" if cuda_ok else "cpu"
    if device == "cuda" and not cuda_ok:
        raise BackendError("onnxruntime: device 'cuda' is not available here. Expected an NVIDIA GPU with "
                           "onnxruntime-gpu's CUDA provider; use --device cpu.")
    if device not in ("cpu", "cuda"):
        raise BackendError(f"onnxruntime: device {device!r} is unknown. Expected auto, cpu or cuda.")
    return device


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, artifact: str | Path, precision: str = "fp32", device: str = "auto",
                 threads: int | None = None, graph: str | Path | None = None,
                 session_options: dict[str, Any] | None = None) -> None:
        """Open the ``precision`` graph of ``artifact``: the engine `vdeblur build` made when there is
        one usable here, else the artifact's portable graph (``graph_info`` says which, and why).

        graph, session_options: run this ONNX file with these session settings (session.json's
        ``session_options`` format) instead; the build's verification uses it.
        threads: intra-op threads (None: the engine's setting, else ONNX Runtime's default).
        """
        ort = _ort()
        super().__init__(artifact, precision)
        self.device = resolve_device(device)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.device == "cuda" else [
            "CPUExecutionProvider"]
        if graph is not None:
            path, settings = Path(graph), {"session_options": dict(session_options or {})}
            self.graph_info: dict[str, Any] = {"file": str(path), "built": False, "verified": None,
                                               "fallback": None, "notes": []}
        else:
            path, settings = self._graph(precision, providers)
        if settings.get("session_options"):
            from vdeblur.contract.engines import ort_session_options

            opts = ort_session_options(ort, {"graph_optimization_level": "ORT_ENABLE_ALL",
                                             **settings["session_options"]})
        else:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if graph is None and not self.graph_info["built"]:
            self._int8_guard(path, opts)
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.threads = opts.intra_op_num_threads or None
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
        """The model `vdeblur build --backend onnxruntime` made, with its session settings, when it
        was built for these providers (a CUDA-optimised model does not load on the CPU provider) and
        its int8 kernels are right on this CPU; else the artifact's portable graph. Sets
        ``graph_info``: the file, whether it is the built engine, the build's fallback, notes."""
        from vdeblur.contract.precision import int8_wrong_here

        artifact = self.iface.artifact
        built = engine_dir(artifact, "onnxruntime", precision)
        settings = read_session(artifact, precision)
        notes: list[str] = []
        if settings is not None:
            model = Path(os.path.normpath(built / settings.get("model", ORT_MODEL)))
            int8 = settings.get("int8") or {}
            fused_wrong = (not int8.get("disable_quant_qdq", False)
                           and int8_wrong_here(int(int8.get("max_abs_weight", 0))))
            if not model.is_file():
                notes.append(f"the built engine {model.name} is missing: rebuild it")
            elif settings.get("optimized_for") != providers:
                notes.append(f"the built engine is for {settings.get('optimized_for')}, not {providers}")
            elif fused_wrong:
                notes.append("the built int8 engine has full-range weights in fused integer kernels and this x86 "
                             "CPU has no VNNI (they would saturate): rebuild it here")
            else:
                fallback = settings.get("fallback")
                self.graph_info = {"file": _rel(model, artifact), "built": True,
                                   "verified": (settings.get("verification") or {}).get("passed"),
                                   "fallback": fallback["reason"] if fallback else None, "notes": notes}
                return model, settings
        path = self.iface.graph_path(precision, "portable")
        notes.append("not built: ONNX Runtime optimises it at load time (unverified); "
                     f"`vdeblur build {artifact} --backend onnxruntime --precision {precision}` verifies it")
        self.graph_info = {"file": _rel(path, artifact), "built": False, "verified": None, "fallback": None,
                           "notes": notes}
        return path, {}

    def _int8_guard(self, path: Path, opts: Any) -> None:
        """An unbuilt int8 graph with full-range weights on a CPU whose U8S8 kernels saturate: run its
        Q/DQ in float (right, not fast) and say so in ``graph_info``."""
        if self.precision not in ("int8", "fp8"):
            return
        from vdeblur.contract.precision import DISABLE_QDQ, int8_settings

        int8 = int8_settings(path)
        if int8 and int8["disable_quant_qdq"]:
            opts.add_session_config_entry(DISABLE_QDQ, "1")
            self.graph_info["notes"].append(int8["note"])

    def describe(self) -> dict[str, Any]:
        """Which graph this backend runs: file (relative to the artifact), built (the verified
        engine of `vdeblur build`), fallback (why the build fell back, or None), notes, threads."""
        return {**self.graph_info, "precision": self.precision, "device": self.device, "threads": self.threads}

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

    # ----- clip graphs --------------------------------------------------------------------

    def clip(self, frames: np.ndarray) -> np.ndarray:
        """A window of padded frames (N, T, 3, Hp, Wp) float32 through the clip graph."""
        self._check_open()
        self.iface.check_clip(frames)
        out = self.session.run([self.iface.frame_output], {self.iface.frame_input: np.ascontiguousarray(frames)})[0]
        return np.asarray(out, dtype=np.float32)

    # ----- stateless ---------------------------------------------------------------------

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds), strict=True))

    def _release(self) -> None:
        self._binding = None
        self._size = None
        self.session = None


def _rel(path: Path, root: Path) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        return str(path)


def open(artifact: str | Path, precision: str = "fp32", device: str = "auto", **options: Any) -> OnnxRuntimeBackend:  # noqa: A001
    return OnnxRuntimeBackend(artifact, precision=precision, device=device, **options)
