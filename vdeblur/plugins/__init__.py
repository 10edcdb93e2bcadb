"""Custom ops, one folder each: spec.py (the OpSpec), reference.py (the math), kernel.py (Triton),
README.md (the op card). The torch custom op, the ONNX lowerings and schemas and the TensorRT
plugin are generated from the specs (see spec.py, README.md and DESIGN.md "Plugins").

Importing this package does not import torch: the entry points load the torch side on first call,
so the TensorRT plugin registration (``vdeblur.plugins.lowering.register_tensorrt_plugins``) also
works in processes without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

# Import the op packages (torch-free) before binding the entry points: importing a subpackage later
# would otherwise rebind the package attribute of the same name to the module.
from vdeblur.plugins.lowering import LOWERINGS, current_lowering, lowering, translation_table
from vdeblur.plugins.registry import specs

if TYPE_CHECKING:
    import torch

specs()

__all__ = ["LOWERINGS", "call", "correlation", "correlation_argmax", "current_lowering", "dynamic_depthwise",
           "dynamic_filter", "flow_warp", "lowering", "specs", "translation_table", "volume_aggregate"]


def call(name: str, *inputs: torch.Tensor, **attrs: Any) -> Any:
    """Run op ``name`` (an op folder, e.g. "correlation") on ``inputs`` with attributes ``attrs``."""
    from vdeblur.plugins.registry import get
    from vdeblur.plugins.torchop import call as run

    return run(get(name), *inputs, **attrs)


def correlation(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, stride: int = 1) -> torch.Tensor:
    """Local correlation cost volume (FlowNet style, kernel 1, zero padding).

    f1, f2: (N, C, H, W). Returns (N, K*K, H, W), K = 2 * (max_displacement // stride) + 1,
    channel i*K + j holding ``sum_c f1(y, x) * f2(y + dy_i, x + dx_j)`` with dy, dx in
    ``range(-d, d + 1, stride)`` (row-major over (dy, dx)). See plugins/correlation/README.md.
    """
    return call("correlation", f1, f2, max_displacement=max_displacement, stride=stride)


def correlation_argmax(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, pool: int = 5) -> torch.Tensor:
    """MTU's motion search, fused: normalise, correlate, average-pool, argmax.

    f1, f2: (N, C, H, W). Returns flow (N, 2, H, W) float32 holding integer displacements
    (channel 0 = x, channel 1 = y) in [-d, d]; the first maximum wins at ties (as torch.argmax).
    Not differentiable (the argmax has no gradient). See plugins/correlation_argmax/README.md.
    """
    return call("correlation_argmax", f1, f2, max_displacement=max_displacement, pool=pool)


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Backward warp: ``out(y, x) = x_in(y + flow_y, x + flow_x)``, bilinear, align_corners=True.

    x: (N, C, H, W); flow: (N, 2, H, W) in pixels (channel 0 = x, channel 1 = y); padding_mode
    "zeros" or "border"; H, W >= 2. Differentiable in x and flow. See plugins/flow_warp/README.md.
    """
    return call("flow_warp", x, flow, padding_mode=padding_mode)


def volume_aggregate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """All-range softmax aggregation (ARVo's exp-normalised all-range correlation applied to values).

    q: (N, C, H, W) queries; k: (N, C, h, w) keys; v: (N, Cv, h, w) values (H, W independent of h, w).
    Returns (N, Cv, H, W):
    ``out[n, :, y, x] = sum_{u,v} softmax_{(u,v)}(sum_c q[n, c, y, x] * k[n, c, u, v]) * v[n, :, u, v]``
    (no scale factor, max-subtracted). The (H*W) x (h*w) volume is never materialised (online softmax
    over key chunks; a flash-attention style kernel on GPU). Differentiable in q, k and v. See
    plugins/volume_aggregate/README.md.
    """
    return call("volume_aggregate", q, k, v)


def dynamic_filter(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-pixel dynamic filtering (DSTNet's IDynamicDWConv), zero padding, stride 1, no bias.

    x: (N, C, H, W); weight: (N, G, k, k, H, W) with G dividing C and k odd. Returns (N, C, H, W):
    ``out[n, c, y, x] = sum_{i,j} weight[n, c // (C // G), i, j, y, x] * x[n, c, y + i - k//2, x + j - k//2]``
    (channel c uses the kernel of its contiguous block of C // G channels). Differentiable in x and
    weight. See plugins/dynamic_filter/README.md.
    """
    return call("dynamic_filter", x, weight)


def dynamic_depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample depthwise convolution (DSTNet's channel-wise KPN), zero padding k//2, stride 1.

    x: (N, C, H, W); weight: (N, C, k, k), k odd; bias: (C,) or None (the op always takes a bias:
    None passes zeros). Returns (N, C, H, W):
    ``out[n, c, y, x] = sum_{i,j} weight[n, c, i, j] * x[n, c, y + i - k//2, x + j - k//2] + bias[c]``.
    Differentiable in x, weight and bias. See plugins/dynamic_depthwise/README.md.
    """
    if bias is None:
        import torch

        # Zeros of x's channels, dtype and device; a malformed x is reported by the checks instead.
        valid = isinstance(x, torch.Tensor) and x.dim() == 4
        return call("dynamic_depthwise", x, weight, x.new_zeros(x.shape[1]) if valid else cast(Any, None))
    return call("dynamic_depthwise", x, weight, bias)
