"""Per-pixel dynamic filtering (DSTNet's IDynamicDWConv) in plain PyTorch: the spec of the op.

It is also the portable ONNX lowering: one zero Pad of x, then for each of the k*k taps one Slice of
the padded x times one plane of the weight (broadcast over the C/G channels of its group: no
repeat_interleave of the weight), summed. It traces to standard ONNX ops with dynamic N, H and W,
also inside the body of a ``torch._higher_order_ops.scan``:

- no operation takes a size computed from H or W: the tap windows are sliced with static starts and
  ends counted from the end of the padded axis, and no view or reshape names H or W. (In torch 2.13
  a reshape to a shape holding H or W in a scan body can export as ``aten.sym_stride``, which the
  ONNX exporter cannot translate.)
- G == C (DSTNet) and G == 1 need no grouping: the weight plane is (N, C, H, W), or broadcast over
  the channels. Otherwise x is grouped to (N, G, C/G, H, W) by stacking its G channel blocks, and
  the output is ungrouped by concatenating the groups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dynamic_filter(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Filter every pixel of x with its own k x k kernel, shared by a contiguous block of channels.

    x: (N, C, H, W); weight: (N, G, k, k, H, W), G dividing C, k odd. Returns (N, C, H, W) with
    ``out[n, c, y, x] = sum_{i,j} weight[n, c // (C // G), i, j, y, x] * x[n, c, y + i - k//2, x + j - k//2]``,
    x read as 0 outside the image. Computed in the inputs' dtype.
    """
    c = x.shape[1]
    groups, k = weight.shape[1], weight.shape[2]
    r = k // 2
    grouped = 1 < groups < c
    if grouped:
        x = torch.stack(x.chunk(groups, dim=1), dim=1)  # (N, G, C/G, H, W)
    padded = F.pad(x, (r, r, r, r))
    out = None
    for i in range(k):
        for j in range(k):
            plane = weight[:, :, i, j]  # (N, G, H, W): G == 1 broadcasts over the channels
            if grouped:
                plane = plane.unsqueeze(2)  # (N, G, 1, H, W): broadcast over a group's channels
            term = plane * padded[..., i : _end(i, k), j : _end(j, k)]
            out = term if out is None else out + term
    assert out is not None
    return torch.cat(out.unbind(1), dim=1) if grouped else out


def _end(start: int, k: int) -> int | None:
    """The end of a tap's window on the padded axis, counted from its end (no image size needed)."""
    return start - (k - 1) or None
