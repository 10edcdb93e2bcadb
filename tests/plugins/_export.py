"""Plugin ops to ONNX and back through ONNX Runtime (test helpers shared by the op tests)."""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any

import onnx
import torch

from vdeblur.plugins import call, lowering, specs, translation_table
from vdeblur.plugins.spec import Example, OpSpec


def export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], mode: str,
           layouts: tuple[str, ...] | None = None) -> onnx.ModelProto:
    """ONNX of ``module(*args)`` with dynamic H and W on every input (the H and W of ``layouts``)."""
    h = torch.export.Dim("H", min=4, max=4096)
    w = torch.export.Dim("W", min=4, max=4096)
    layouts = layouts or tuple("NCHW" for _ in args)
    dynamic: tuple = tuple({i: d for i, d in ((lay.find("H"), h), (lay.find("W"), w)) if i >= 0} for lay in layouts)
    if any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(module.forward).parameters.values()):
        dynamic = (dynamic,)  # forward(*inputs): one argument holding the tuple
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


class Op(torch.nn.Module):
    """A module that runs one plugin op through its entry point with fixed attributes."""

    def __init__(self, spec: OpSpec, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.name, self.attrs = spec.name, dict(attrs)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return call(self.name, *inputs, **self.attrs)


def example_inputs(spec: OpSpec, example: Example, dtype: torch.dtype = torch.float32, seed: int = 0,
                   grow: tuple[int, int] = (0, 0)) -> list[torch.Tensor]:
    """Random inputs of the example's shapes (H and W grown by ``grow``), unit scale."""
    g = torch.Generator().manual_seed(seed + sum(sum(s) for s in example.shapes))
    tensors = []
    for decl, shape in zip(spec.inputs, example.shapes, strict=True):
        shape = list(shape)
        for letter, extra in zip("HW", grow, strict=True):
            if letter in decl.layout:
                shape[decl.layout.index(letter)] += extra
        tensors.append(torch.randn(*shape, generator=g).to(dtype))
    return tensors


EXPORT_EXAMPLE = -1  # the example each op is exported with


@functools.cache
def exported(name: str, mode: str) -> onnx.ModelProto:
    """Op ``name`` exported in ``mode`` with its export example (cached: the op tests share it)."""
    spec = specs()[name]
    example = spec.examples[EXPORT_EXAMPLE]
    return export(Op(spec, dict(example.attrs)), tuple(example_inputs(spec, example)), mode,
                  tuple(i.layout for i in spec.inputs))
