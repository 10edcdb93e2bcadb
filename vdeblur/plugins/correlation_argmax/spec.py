"""``vdeblur::CorrelationArgmax``: MTU's fused motion search (op card: README.md)."""

from __future__ import annotations

from vdeblur.plugins import spec as op

TILE = 16  # output pixels per program along each axis


def _flow_shape(s: op.Shapes, a: op.Attrs) -> tuple:
    n, _, h, w = s[0]
    return n, 2, h, w


def _grid(s: op.Shapes, a: op.Attrs, cdiv) -> tuple:  # type: ignore[no-untyped-def]
    n, _, h, w = s[0]
    return cdiv(w, TILE), cdiv(h, TILE), n


SPEC = op.OpSpec(
    id="vdeblur::CorrelationArgmax",
    name="correlation_argmax",
    summary="Motion search: normalise, correlate, average-pool, argmax -> integer flow (not differentiable).",
    inputs=(op.Input("f1"), op.Input("f2", like="f1")),
    attrs=(
        op.Attr("max_displacement", op.INT, minimum=0),
        op.Attr("pool", op.INT, default=5, minimum=1, rules=(
            op.Rule(lambda p: p % 2 == 1, "is even. Expected an odd window (the pool is centred, stride 1)."),)),
    ),
    outputs=(op.Output("flow", _flow_shape, dtype="float32", doc="(N, 2, H, W): x, y displacement"),),
    reference="vdeblur.plugins.correlation_argmax.reference:correlation_argmax",
    launch=op.Launch(
        kernel="vdeblur.plugins.correlation_argmax.kernel:correlation_argmax_kernel",
        grid=_grid,
        scalars=("f1.C", "f1.H", "f1.W"),
        constexprs=lambda a: {"MAX_DISP": a["max_displacement"], "POOL": a["pool"], "TILE": TILE,
                              "HALO": op.next_power_of_2(TILE + a["pool"] - 1)},
    ),
    autograd=None,
    card="correlation_argmax/README.md",
    examples=(
        op.Example(((1, 3, 5, 6),) * 2, {"max_displacement": 1, "pool": 3}),
        op.Example(((2, 3, 13, 11),) * 2, {"max_displacement": 2, "pool": 3}),
        op.Example(((1, 6, 5, 33),) * 2, {"max_displacement": 2, "pool": 1}),
        op.Example(((1, 5, 7, 9),) * 2, {"max_displacement": 3, "pool": 5}),
    ),
    # The flow is discrete: a displacement may differ from the reference at a near-tie only.
    tolerances=op.Tolerances(kernel=op.Tolerance(atol=0.0, fraction=0.99),
                             half=op.Tolerance(atol=0.0, fraction=0.97),
                             onnx=op.Tolerance(atol=0.0, fraction=0.99)),
)
