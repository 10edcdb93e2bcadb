"""ONNX lowerings of ``vdeblur::FlowWarp``.

trt:      one ``vdeblur:FlowWarp`` node, attribute padding_mode (STRING: "zeros" | "border").
portable: GridSample (bilinear, align_corners=1) on a grid built from the flow (Range, Add, Mul,
          Concat), traced from reference.flow_warp when exporting under ``lowering("portable")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vdeblur.plugins._onnx import PluginNode
from vdeblur.plugins.flow_warp.reference import flow_warp as portable

NODE = PluginNode(
    name="FlowWarp",
    inputs=("x", "flow"),
    outputs=("warped",),
    attributes=(("padding_mode", str),),
)

__all__ = ["NODE", "portable", "translation"]


def translation() -> dict[Any, Callable[..., Any]]:
    """Entry of the ``custom_translation_table`` for the trt lowering."""
    emit = NODE.emitter()

    def flow_warp_trt(x: Any, flow: Any, padding_mode: str) -> Any:
        return emit(x, flow, padding_mode=padding_mode)

    from vdeblur.plugins.flow_warp import op  # noqa: F401

    return {torch.ops.vdeblur.FlowWarp.default: flow_warp_trt}
