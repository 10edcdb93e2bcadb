"""Custom ops, one folder each: reference math, Triton kernel, torch custom op, ONNX lowerings,
TensorRT plugin. See DESIGN.md "Plugins" and each op's README.md (op card)."""

from vdeblur.plugins.correlation.op import correlation
from vdeblur.plugins.correlation_argmax.op import correlation_argmax
from vdeblur.plugins.flow_warp.op import flow_warp
from vdeblur.plugins.lowering import LOWERINGS, current_lowering, lowering, translation_table

__all__ = [
    "LOWERINGS",
    "correlation",
    "correlation_argmax",
    "current_lowering",
    "flow_warp",
    "lowering",
    "translation_table",
]
