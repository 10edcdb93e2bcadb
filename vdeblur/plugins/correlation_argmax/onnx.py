"""ONNX lowerings of ``vdeblur::CorrelationArgmax``.

trt:      one ``vdeblur:CorrelationArgmax`` node, attributes max_displacement (INT), pool (INT);
          output flow is float32 whatever the input type.
portable: the reference decomposition (ReduceL2-based normalisation, the correlation
          decomposition, AveragePool, ArgMax, Mod/Div/Sub, Cast, Concat), traced from
          reference.correlation_argmax when exporting under ``lowering("portable")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vdeblur.plugins._onnx import PluginNode
from vdeblur.plugins.correlation_argmax.reference import correlation_argmax as portable

NODE = PluginNode(
    name="CorrelationArgmax",
    inputs=("f1", "f2"),
    outputs=("flow",),
    attributes=(("max_displacement", int), ("pool", int)),
    output_types=("tensor(float)",),
)

__all__ = ["NODE", "portable", "translation"]


def translation() -> dict[Any, Callable[..., Any]]:
    """Entry of the ``custom_translation_table`` for the trt lowering."""
    emit = NODE.emitter()

    def correlation_argmax_trt(f1: Any, f2: Any, max_displacement: int, pool: int) -> Any:
        return emit(f1, f2, max_displacement=max_displacement, pool=pool)

    from vdeblur.plugins.correlation_argmax import op  # noqa: F401

    return {torch.ops.vdeblur.CorrelationArgmax.default: correlation_argmax_trt}
