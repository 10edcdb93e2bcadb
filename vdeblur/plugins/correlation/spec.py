"""``vdeblur::Correlation``: the FlowNet-style local cost volume (op card: README.md)."""

from __future__ import annotations

from vdeblur.plugins import spec as op

BLOCK = 64  # pixels per program


def _k(attrs: op.Attrs) -> int:
    """K, the number of displacements along one axis."""
    return 2 * (attrs["max_displacement"] // attrs["stride"]) + 1


def _cost_shape(s: op.Shapes, a: op.Attrs) -> tuple:
    n, _, h, w = s[0]
    return n, _k(a) ** 2, h, w


def _grid(s: op.Shapes, a: op.Attrs, cdiv) -> tuple:  # type: ignore[no-untyped-def]
    n, _, h, w = s[0]
    return cdiv(h * w, BLOCK), _k(a), n  # one program: BLOCK pixels x one vertical displacement


SPEC = op.OpSpec(
    id="vdeblur::Correlation",
    name="correlation",
    summary="Local correlation cost volume (FlowNet style, kernel 1, zero padding).",
    inputs=(op.Input("f1"), op.Input("f2", like="f1")),
    attrs=(op.Attr("max_displacement", op.INT, minimum=0), op.Attr("stride", op.INT, default=1, minimum=1)),
    outputs=(op.Output("cost", _cost_shape, doc="(N, K*K, H, W), K = 2 * (max_displacement // stride) + 1"),),
    reference="vdeblur.plugins.correlation.reference:correlation",
    launch=op.Launch(
        kernel="vdeblur.plugins.correlation.kernel:correlation_kernel",
        grid=_grid,
        scalars=("f1.C", "f1.H", "f1.W"),
        constexprs=lambda a: {"MAX_DISP": a["max_displacement"], "STRIDE": a["stride"], "BLOCK": BLOCK,
                              "KPAD": op.next_power_of_2(_k(a))},
    ),
    autograd="reference",
    card="correlation/README.md",
    examples=(
        op.Example(((1, 2, 4, 5),) * 2, {"max_displacement": 1, "stride": 1}),
        op.Example(((2, 3, 13, 11),) * 2, {"max_displacement": 4, "stride": 2}),
        op.Example(((1, 7, 6, 17),) * 2, {"max_displacement": 5, "stride": 1}),
        op.Example(((1, 4, 9, 8),) * 2, {"max_displacement": 4, "stride": 3}),  # d rounds down to 3
    ),
    tolerances=op.Tolerances(kernel=op.Tolerance(atol=1e-4, rtol=1e-5), half=op.Tolerance(atol=1e-2, rtol=2e-3),
                             onnx=op.Tolerance(atol=1e-5, rtol=1e-5)),
)
