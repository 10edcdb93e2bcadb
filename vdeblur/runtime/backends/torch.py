"""The torch backend: the PyTorch reference modules themselves (imports torch when opened).

It rebuilds the model from the manifest (family, configuration, checkpoint; random weights are
re-created with the export's seed), takes its step module (the model's ``make_step``) and runs it with
the state kept as torch tensors; clip models run their clip module (``make_clip``) window by
window. On CUDA the plugin ops run their Triton kernels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.errors import BackendError
from vdeblur.runtime.backends.base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, artifact: str | Path, precision: str = "fp32", device: str = "auto",
                 threads: int | None = None) -> None:
        import torch

        from vdeblur.models import create, load_checkpoint

        if precision != "fp32":
            raise BackendError(f"torch backend: precision {precision!r} is not supported. It runs the fp32 reference.")
        super().__init__(artifact, precision)
        info = self.iface.manifest.model
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        torch.manual_seed(0)  # same seed as the export: random weights are the same weights
        model = create(info["family"], **info["config"])
        checkpoint = info.get("checkpoint")
        if checkpoint:
            if not Path(checkpoint["path"]).is_file():
                raise BackendError(
                    f"torch backend: the artifact's checkpoint {checkpoint['path']} is gone. It runs the model "
                    "code itself and needs it; use the onnxruntime backend, or restore the file."
                )
            load_checkpoint(model, checkpoint["path"])
        model = model.to(self.device).eval()
        # the model layer's step or clip module (no export code here)
        step, self._spec = model.make_step() if self.kind == "step" else model.make_clip()
        self._step = step.eval()
        self._states: list[Any] | None = None
        self._size: tuple[int, int, int] | None = None
        self._threads_before: int | None = None
        if threads and int(threads) != torch.get_num_threads():
            self._threads_before = torch.get_num_threads()  # restored by close(): the setting is process-wide
            torch.set_num_threads(int(threads))
        self.threads = torch.get_num_threads()

    def describe(self) -> dict[str, Any]:
        """What this backend runs: the model code itself (the fp32 reference), no graph file."""
        return {"file": None, "built": False, "verified": None, "fallback": None,
                "notes": ["the model code in PyTorch (the fp32 reference)"], "precision": "fp32",
                "device": str(self.device), "threads": self.threads}

    def reset(self, batch: int, height: int, width: int) -> None:
        import torch

        self._states = [torch.from_numpy(a).to(self.device) for a in self._spec.initial_arrays(batch, height, width)]
        self._size = (batch, height, width)

    def step(self, frame: np.ndarray, flush: bool = False) -> np.ndarray:
        import torch

        if self._states is None or (frame.shape[0], frame.shape[2], frame.shape[3]) != self._size:
            self.iface.check_frame(frame)
            self.reset(frame.shape[0], frame.shape[2], frame.shape[3])
        args = [torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)).to(self.device)]
        if self._spec.flush.flag_input:
            args.append(torch.full((frame.shape[0],), int(flush), dtype=torch.int32, device=self.device))
        with torch.inference_mode():
            out, *self._states = self._step(*args, *self._states)
        return out.float().cpu().numpy()

    def clip(self, frames: np.ndarray) -> np.ndarray:
        """A window of padded frames (N, T, 3, Hp, Wp) float32 through the model's clip module."""
        import torch

        self._check_open()
        self.iface.check_clip(frames)
        with torch.inference_mode():
            out = self._step(torch.from_numpy(np.ascontiguousarray(frames)).to(self.device))
        return out.float().cpu().numpy()  # type: ignore[no-any-return]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(feeds[name]).to(self.device) for name in self.inputs]
        with torch.inference_mode():
            outs = self._step(*args)
        return {name: o.cpu().numpy() for name, o in zip(self.outputs, outs, strict=True)}

    def _release(self) -> None:
        self._states = None
        self._size = None
        if self._threads_before is not None:
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None


def open(artifact: str | Path, precision: str = "fp32", device: str = "auto", **options: Any) -> TorchBackend:  # noqa: A001
    threads = options.pop("threads", None)
    if options:
        raise BackendError(f"torch backend: unknown options {sorted(options)}. Expected threads=N at most.")
    return TorchBackend(artifact, precision=precision, device=device, threads=threads)
