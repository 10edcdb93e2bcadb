"""``vdeblur::VolumeAggregate``: ARVo's all-range softmax aggregation (op card: README.md)."""

from __future__ import annotations

from vdeblur.plugins import spec as op

BLOCK_M = 64  # query pixels per program
BLOCK_N = 32  # key pixels per tile
BLOCK_C = 32  # q/k channels per step of the logit loop
BLOCK_D = 64  # value channels per program


def _out_shape(s: op.Shapes, a: op.Attrs) -> tuple:
    n, _, h, w = s[0]
    return n, s[2][1], h, w


def _grid(s: op.Shapes, a: op.Attrs, cdiv) -> tuple:  # type: ignore[no-untyped-def]
    n, _, h, w = s[0]
    return cdiv(h * w, BLOCK_M), cdiv(s[2][1], BLOCK_D), n  # BLOCK_M queries x BLOCK_D value channels


SPEC = op.OpSpec(
    id="vdeblur::VolumeAggregate",
    name="volume_aggregate",
    summary="All-range softmax aggregation: out[n,:,y,x] = sum_uv softmax_uv(<q[n,:,y,x], k[n,:,u,v]>) v[n,:,u,v].",
    inputs=(op.Input("q", doc="(N, C, H, W) queries"),
            op.Input("k", layout="NCUV", like="q", like_dims="NC", doc="(N, C, h, w) keys; h, w independent of H, W"),
            op.Input("v", layout="NDUV", like="k", like_dims="NUV", doc="(N, Cv, h, w) values, one per key")),
    attrs=(),
    outputs=(op.Output("out", _out_shape, doc="(N, Cv, H, W)"),),
    reference="vdeblur.plugins.volume_aggregate.reference:volume_aggregate",
    launch=op.Launch(
        kernel="vdeblur.plugins.volume_aggregate.kernel:volume_aggregate_kernel",
        grid=_grid,
        scalars=("q.C", "q.H", "q.W", "k.U", "k.V", "v.D"),
        constexprs=lambda a: {"BLOCK_M": BLOCK_M, "BLOCK_N": BLOCK_N, "BLOCK_C": BLOCK_C, "BLOCK_D": BLOCK_D},
        num_warps=8,  # 4 warps spill on sm_80 (float32: IEEE products)
    ),
    autograd="reference",
    card="volume_aggregate/README.md",
    examples=(
        op.Example(((1, 3, 5, 6), (1, 3, 4, 7), (1, 2, 4, 7))),  # tiny (gradcheck), H, W != h, w
        op.Example(((2, 5, 7, 9), (2, 5, 11, 13), (2, 3, 11, 13))),  # several key tiles, odd channels
        op.Example(((1, 37, 9, 10), (1, 37, 6, 5), (1, 70, 6, 5))),  # C > BLOCK_C, Cv > BLOCK_D
        op.Example(((1, 8, 12, 10), (1, 8, 23, 29), (1, 33, 23, 29))),  # h*w = 667 > CHUNK: two chunks
    ),
    # Weighted means of unit-scale values: float32 errors are a few ulps of the accumulation; float16
    # inputs: P is rounded to float16 for the P @ V product (as in flash attention) and the output once.
    tolerances=op.Tolerances(kernel=op.Tolerance(atol=1e-5, rtol=1e-5), half=op.Tolerance(atol=1e-2, rtol=1e-2),
                             onnx=op.Tolerance(atol=1e-5, rtol=1e-5)),
)
