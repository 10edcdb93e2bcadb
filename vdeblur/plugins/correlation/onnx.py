"""ONNX lowerings of ``vdeblur::Correlation``.

trt:      one ``vdeblur:Correlation`` node, attributes max_displacement (INT), stride (INT).
portable: the reference decomposition (Pad, Slice, Mul, ReduceSum, Concat), traced from
          reference.correlation when exporting under ``lowering("portable")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vdeblur.plugins._onnx import PluginNode
from vdeblur.plugins.correlation.reference import correlation as portable

NODE = PluginNode(
    name="Correlation",
    inputs=("f1", "f2"),
    outputs=("cost",),
    attributes=(("max_displacement", int), ("stride", int)),
)

__all__ = ["NODE", "portable", "translation"]


def translation() -> dict[Any, Callable[..., Any]]:
    """Entry of the ``custom_translation_table`` for the trt lowering."""
    emit = NODE.emitter()

    def correlation_trt(f1: Any, f2: Any, max_displacement: int, stride: int) -> Any:
        return emit(f1, f2, max_displacement=max_displacement, stride=stride)

    # importing op registers torch.ops.vdeblur.Correlation
    from vdeblur.plugins.correlation import op  # noqa: F401

    return {torch.ops.vdeblur.Correlation.default: correlation_trt}
