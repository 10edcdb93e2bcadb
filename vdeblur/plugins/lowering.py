"""The lowering switch: how the plugin ops appear in an exported ONNX graph.

``trt``       one custom node per op (domain ``vdeblur``, op_type = the plugin name, attributes
              plugin_namespace="vdeblur", plugin_version="1", aot=1 and the op's attributes as
              INT/FLOAT/STRING), which TensorRT's ONNX parser maps to our AOT plugins.
``portable``  the reference decomposition in standard ONNX ops, for any ONNX runtime.

The export code selects the mode with ``with lowering("trt"): torch.onnx.export(...,
custom_translation_table=translation_table())``. Outside an export (mode ``None``) the entry
points call the ``vdeblur::`` custom ops, which run the Triton kernel on CUDA tensors and the
reference elsewhere. Everything here is generated from the op registry
(:mod:`vdeblur.plugins.registry`); this module imports neither torch nor onnx until asked.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from vdeblur.contract.precision import LOWERINGS
from vdeblur.errors import UsageError

__all__ = ["LOWERINGS", "check_plugin_nodes", "current_lowering", "lowering", "plugin_nodes",
           "register_tensorrt_plugins", "register_tensorrt_rtx_plugins", "translation_table", "use_reference"]

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
    from vdeblur.plugins._onnx import translation
    from vdeblur.plugins.registry import specs

    table: dict[Any, Callable[..., Any]] = {}
    for spec in specs().values():
        table.update(translation(spec))
    return table


def plugin_nodes() -> dict[str, Any]:
    """op_type -> PluginNode for every plugin op (the ONNX face of each op in ``trt`` mode)."""
    from vdeblur.plugins._onnx import PluginNode
    from vdeblur.plugins.registry import specs

    return {spec.plugin_name: PluginNode(spec) for spec in specs().values()}


def check_plugin_nodes(model: Any, nodes: Mapping[str, Any] | None = None) -> list[str]:
    """Problems with the plugin nodes of an ``onnx.ModelProto`` (empty when every node is as
    TensorRT expects); ``nodes`` defaults to :func:`plugin_nodes`."""
    from vdeblur.plugins._onnx import check_plugin_nodes as check

    return check(model, plugin_nodes() if nodes is None else nodes)


def register_tensorrt_plugins() -> None:
    """Register every vdeblur plugin with TensorRT (import before parsing an ONNX with plugin
    nodes). Idempotent: registering again is a no-op."""
    from vdeblur.plugins.qdp import register
    from vdeblur.plugins.registry import specs

    for spec in specs().values():
        register(spec)


def register_tensorrt_rtx_plugins() -> None:
    """Register every vdeblur plugin with TensorRT-RTX (IPluginV3 creators, :mod:`vdeblur.plugins.rtx`)
    before parsing an ONNX with plugin nodes or deserialising an engine with plugin layers.
    Idempotent: registering again is a no-op."""
    from vdeblur.plugins.registry import specs
    from vdeblur.plugins.rtx import import_tensorrt_rtx, register

    trt = import_tensorrt_rtx("registering the vdeblur TensorRT-RTX plugins")
    for spec in specs().values():
        register(spec, trt)
