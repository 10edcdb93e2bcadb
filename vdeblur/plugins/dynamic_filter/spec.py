"""``vdeblur::DynamicFilter``: per-pixel k x k filtering with group-shared kernels (op card: README.md)."""

from __future__ import annotations

from vdeblur.plugins import spec as op

BLOCK = 128  # pixels per program


SQUARE, ODD = op.kernel_rules("weight", "(N, G, k, k, H, W)")
GROUPS = op.ShapeRule(lambda s: s["x"]["C"] % s["weight"]["G"] == 0,
                      "weight has G={weight.G} groups, which do not divide the C={x.C} channels of x. "
                      "Expected G dividing C (channel c uses group c // (C // G)).")

SPEC = op.OpSpec(
    id="vdeblur::DynamicFilter",
    name="dynamic_filter",
    summary="Per-pixel dynamic filtering: out[n,c,y,x] = sum_ij weight[n, c // (C/G), i, j, y, x] * "
            "x[n, c, y+i-k//2, x+j-k//2], zero padding.",
    inputs=(op.Input("x"),
            op.Input("weight", layout="NGKLHW", like="x", like_dims="NHW",
                     doc="(N, G, k, k, H, W): G groups of contiguous channels, k x k taps per pixel")),
    attrs=(),
    outputs=(op.Output("out", op.like_first, doc="like x"),),
    reference="vdeblur.plugins.dynamic_filter.reference:dynamic_filter",
    launch=op.Launch(
        kernel="vdeblur.plugins.dynamic_filter.kernel:dynamic_filter_kernel",
        grid=op.pixel_channel_grid(BLOCK),
        scalars=("x.C", "x.H", "x.W", "weight.G", "weight.K"),
        constexprs=lambda a: {"BLOCK": BLOCK},
    ),
    autograd="reference",
    card="dynamic_filter/README.md",
    examples=(
        op.Example(((1, 2, 5, 6), (1, 2, 3, 3, 5, 6))),  # G == C, k = 3 (DSTNet)
        op.Example(((2, 6, 7, 5), (2, 3, 5, 5, 7, 5))),  # G < C, k = 5
        op.Example(((1, 4, 4, 9), (1, 1, 1, 1, 4, 9))),  # one group, k = 1
        op.Example(((2, 8, 11, 13), (2, 4, 3, 3, 11, 13))),
    ),
    # fp32: the kernel sums the taps in the reference's order (FMA on a GPU may move the last bits);
    # fp16 inputs: float32 accumulation, one rounding of the output (<= 2^-11 relative).
    tolerances=op.Tolerances(kernel=op.Tolerance(atol=1e-4, rtol=1e-5), half=op.Tolerance(atol=1e-3, rtol=1e-3),
                             onnx=op.Tolerance(atol=1e-5, rtol=1e-5)),
    shape_rules=(SQUARE, ODD, GROUPS),
)
