"""The lowering switch: how the plugin ops appear in an exported ONNX graph.

``trt``       one custom node per op (domain ``vdeblur``, op_type = the plugin name, attributes
              plugin_namespace="vdeblur", plugin_version="1", aot=1 and the op's attributes as
              INT/FLOAT), which TensorRT's ONNX parser maps to our AOT plugins.
``portable``  the reference decomposition in standard ONNX ops, for any ONNX runtime.

The export code selects the mode with ``with lowering("trt"): torch.onnx.export(...,
custom_translation_table=translation_table())``. Outside an export (mode ``None``) the entry
points call the ``vdeblur::`` custom ops, which run the Triton kernel on CUDA tensors and the
reference elsewhere.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from vdeblur.errors import UsageError

LOWERINGS = ("trt", "portable")

_state = threading.local()


def current_lowering() -> str | None:
    """The active lowering mode, or None outside an export."""
    return getattr(_state, "mode", None)


@contextlib.contextmanager
def lowering(mode: str) -> Iterator[None]:
    """Select how plugin ops are traced while exporting: "trt" or "portable"."""
    if mode not in LOWERINGS:
        raise UsageError(f"plugins: lowering mode {mode!r} is unknown. Expected one of {', '.join(LOWERINGS)}.")
    previous = current_lowering()
    _state.mode = mode
    try:
        yield
    finally:
        _state.mode = previous


def use_reference() -> bool:
    """True when an entry point must trace the reference decomposition instead of the custom op."""
    return current_lowering() == "portable"


def translation_table() -> dict[Any, Callable[..., Any]]:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)`` in ``trt`` mode."""
    from vdeblur.plugins.correlation import onnx as corr_onnx
    from vdeblur.plugins.correlation_argmax import onnx as argmax_onnx
    from vdeblur.plugins.flow_warp import onnx as warp_onnx

    table: dict[Any, Callable[..., Any]] = {}
    for module in (corr_onnx, argmax_onnx, warp_onnx):
        table.update(module.translation())
    return table


def plugin_nodes() -> dict[str, Any]:
    """op_type -> PluginNode for every plugin op (the ONNX face of each op in ``trt`` mode)."""
    from vdeblur.plugins.correlation.onnx import NODE as corr
    from vdeblur.plugins.correlation_argmax.onnx import NODE as argmax
    from vdeblur.plugins.flow_warp.onnx import NODE as warp

    return {n.name: n for n in (corr, argmax, warp)}


def register_tensorrt_plugins() -> None:
    """Register every vdeblur plugin with TensorRT (import before parsing an ONNX with plugin nodes)."""
    from vdeblur.plugins.correlation import trt as corr_trt
    from vdeblur.plugins.correlation_argmax import trt as argmax_trt
    from vdeblur.plugins.flow_warp import trt as warp_trt

    for module in (corr_trt, argmax_trt, warp_trt):
        module.register()
