"""``vdeblur::FlowWarp``: bilinear backward warp by a flow in pixels (op card: README.md)."""

from __future__ import annotations

from vdeblur.plugins import spec as op

BLOCK = 128  # pixels per program


def _grid(s: op.Shapes, a: op.Attrs, cdiv) -> tuple:  # type: ignore[no-untyped-def]
    n, _, h, w = s[0]
    return cdiv(h * w, BLOCK), n, 1


SPEC = op.OpSpec(
    id="vdeblur::FlowWarp",
    name="flow_warp",
    summary="Backward warp: out(y, x) = x_in(y + flow_y, x + flow_x), bilinear, align_corners=True.",
    inputs=(op.Input("x", min_hw=2),
            op.Input("flow", channels=2, like="x", like_dims="NHW", doc="x, y displacement in pixels")),
    attrs=(op.Attr("padding_mode", op.STRING, default="zeros", choices=("zeros", "border")),),
    outputs=(op.Output("warped", op.like_first, doc="like x"),),
    reference="vdeblur.plugins.flow_warp.reference:flow_warp",
    launch=op.Launch(
        kernel="vdeblur.plugins.flow_warp.kernel:flow_warp_kernel",
        grid=_grid,
        scalars=("x.C", "x.H", "x.W"),
        constexprs=lambda a: {"BORDER": a["padding_mode"] == "border", "BLOCK": BLOCK},
    ),
    autograd="reference",
    card="flow_warp/README.md",
    examples=(
        op.Example(((1, 2, 5, 6), (1, 2, 5, 6)), {"padding_mode": "border"}),
        op.Example(((1, 1, 2, 2), (1, 2, 2, 2)), {"padding_mode": "zeros"}),
        op.Example(((2, 3, 13, 11), (2, 2, 13, 11)), {"padding_mode": "border"}),
        op.Example(((1, 8, 20, 35), (1, 2, 20, 35)), {"padding_mode": "zeros"}),
    ),
    # grid_sample rounds the sample position by a few ulps of the coordinate (see the op card).
    tolerances=op.Tolerances(kernel=op.Tolerance(atol=1e-4), half=op.Tolerance(atol=1e-2, rtol=1e-2),
                             onnx=op.Tolerance(atol=1e-4)),
)
