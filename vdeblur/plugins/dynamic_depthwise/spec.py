"""``vdeblur::DynamicDepthwise``: per-sample depthwise convolution (op card: README.md)."""

from __future__ import annotations

from vdeblur.plugins import spec as op

BLOCK = 128  # pixels per program


SQUARE, ODD = op.kernel_rules("weight", "(N, C, k, k)")


SPEC = op.OpSpec(
    id="vdeblur::DynamicDepthwise",
    name="dynamic_depthwise",
    summary="Per-sample depthwise convolution: out[n,c,y,x] = sum_ij weight[n,c,i,j] * x[n,c,y+i-k//2,x+j-k//2] "
            "+ bias[c], zero padding.",
    inputs=(op.Input("x"),
            op.Input("weight", layout="NCKL", like="x", like_dims="NC",
                     doc="(N, C, k, k): one kernel per sample and channel"),
            op.Input("bias", layout="C", like="x", like_dims="C",
                     doc="(C,); the typed entry point passes zeros for None")),
    attrs=(),
    outputs=(op.Output("out", op.like_first, doc="like x"),),
    reference="vdeblur.plugins.dynamic_depthwise.reference:dynamic_depthwise",
    launch=op.Launch(
        kernel="vdeblur.plugins.dynamic_depthwise.kernel:dynamic_depthwise_kernel",
        grid=op.pixel_channel_grid(BLOCK),
        scalars=("x.C", "x.H", "x.W", "weight.K"),
        constexprs=lambda a: {"BLOCK": BLOCK},
    ),
    autograd="reference",
    card="dynamic_depthwise/README.md",
    examples=(
        op.Example(((1, 2, 5, 6), (1, 2, 3, 3), (2,))),
        op.Example(((2, 3, 7, 5), (2, 3, 5, 5), (3,))),
        op.Example(((1, 4, 4, 9), (1, 4, 1, 1), (4,))),
        op.Example(((2, 8, 11, 13), (2, 8, 3, 3), (8,))),
    ),
    # fp32: the kernel sums the taps in the reference's order (FMA on a GPU may move the last bits);
    # fp16 inputs: float32 accumulation, one rounding of the output (<= 2^-11 relative).
    tolerances=op.Tolerances(kernel=op.Tolerance(atol=1e-4, rtol=1e-5), half=op.Tolerance(atol=1e-3, rtol=1e-3),
                             onnx=op.Tolerance(atol=1e-5, rtol=1e-5)),
    shape_rules=(SQUARE, ODD),
)
