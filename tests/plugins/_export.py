"""Export a small module built from plugin ops to ONNX in one lowering mode (test helper)."""

from __future__ import annotations

import warnings

import onnx
import torch

from vdeblur.plugins import lowering, translation_table


def export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], mode: str) -> onnx.ModelProto:
    """ONNX of ``module(*args)`` with dynamic H and W on every input."""
    h = torch.export.Dim("H", min=4, max=4096)
    w = torch.export.Dim("W", min=4, max=4096)
    dynamic = tuple({2: h, 3: w} for _ in args)
    with warnings.catch_warnings(), lowering(mode):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(), args, dynamo=True, dynamic_shapes=dynamic, opset_version=18, verbose=False,
            custom_translation_table=translation_table() if mode == "trt" else None,
        )
    assert program is not None
    return program.model_proto


def run_ort(model: onnx.ModelProto, *inputs: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)}
    return torch.from_numpy(session.run(None, feeds)[0])
