"""Custom ops, one folder each: reference math, Triton kernel, torch custom op, ONNX lowerings,
TensorRT plugin. See DESIGN.md "Plugins" and each op's README.md (op card).

Importing this package does not import torch: the entry points load their op module (torch, the
custom op registration) on first call, so the TensorRT plugin registration
(``vdeblur.plugins.lowering.register_tensorrt_plugins``) also works in processes without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Load the op packages (torch-free) before binding the entry points: importing a subpackage later
# would otherwise rebind the package attribute of the same name to the module.
from vdeblur.plugins import correlation as _correlation_pkg  # noqa: F401
from vdeblur.plugins import correlation_argmax as _correlation_argmax_pkg  # noqa: F401
from vdeblur.plugins import flow_warp as _flow_warp_pkg  # noqa: F401
from vdeblur.plugins.lowering import LOWERINGS, current_lowering, lowering, translation_table

if TYPE_CHECKING:
    import torch

__all__ = ["LOWERINGS", "correlation", "correlation_argmax", "current_lowering", "flow_warp", "lowering",
           "translation_table"]


def correlation(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, stride: int = 1) -> torch.Tensor:
    """Local correlation cost volume: see :func:`vdeblur.plugins.correlation.op.correlation`."""
    from vdeblur.plugins.correlation.op import correlation as impl

    return impl(f1, f2, max_displacement, stride)


def correlation_argmax(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, pool: int = 5) -> torch.Tensor:
    """MTU's fused motion search: see :func:`vdeblur.plugins.correlation_argmax.op.correlation_argmax`."""
    from vdeblur.plugins.correlation_argmax.op import correlation_argmax as impl

    return impl(f1, f2, max_displacement, pool)


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Bilinear backward warp: see :func:`vdeblur.plugins.flow_warp.op.flow_warp`."""
    from vdeblur.plugins.flow_warp.op import flow_warp as impl

    return impl(x, flow, padding_mode)
