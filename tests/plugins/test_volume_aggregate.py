"""vdeblur::VolumeAggregate: the online-softmax reference against the materialised softmax volume
(forward, gradients, large logits), the kernel on large logits, input errors, the portable ONNX graph
with dynamic H, W, h, w, and the memory bound at ARVo's 720p level-1 sizes (eager and ONNX Runtime).

The generic checks (kernel vs reference on the spec's examples, autograd, lowerings, AOT): test_ops.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from tests.conftest import REPO, kernel_device
from tests.plugins._export import run_ort
from vdeblur.errors import ShapeError
from vdeblur.plugins import volume_aggregate
from vdeblur.plugins.torchop import launch
from vdeblur.plugins.volume_aggregate import reference
from vdeblur.plugins.volume_aggregate.spec import SPEC

BENCHMARK = REPO / "benchmarks" / "volume_aggregate_memory.py"
GIB = 2**30


def materialised(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The definition, written the obvious way: softmax over the whole flattened (H*W, h*w) volume."""
    n, _, h, w = q.shape
    logits = torch.einsum("ncp,ncq->npq", q.flatten(2), k.flatten(2))
    return torch.einsum("npq,nvq->nvp", torch.softmax(logits, dim=-1), v.flatten(2)).reshape(n, v.shape[1], h, w)


def _inputs(shapes: tuple[tuple[int, ...], ...], scale: float = 1.0, dtype: torch.dtype = torch.float32,
            seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes)
    return [(q * scale).to(dtype), (k * scale).to(dtype), v.to(dtype)]


SHAPES = [
    ((1, 3, 5, 6), (1, 3, 4, 7), (1, 2, 4, 7)),  # H, W != h, w
    ((2, 7, 3, 11), (2, 7, 9, 8), (2, 5, 9, 8)),  # N = 2, larger keys than queries
    ((1, 4, 6, 5), (1, 4, 33, 40), (1, 3, 33, 40)),  # h*w = 1320: three chunks, the last one partial
    ((1, 6, 1, 1), (1, 6, 1, 1), (1, 4, 1, 1)),  # one query, one key: the value itself
]


@pytest.mark.parametrize("shapes", SHAPES, ids=[str(s[0]) + str(s[1]) for s in SHAPES])
def test_matches_the_materialised_softmax(shapes: tuple) -> None:
    q, k, v = _inputs(shapes)
    out = volume_aggregate(q, k, v)
    assert out.shape == (q.shape[0], v.shape[1], q.shape[2], q.shape[3]) and out.dtype == q.dtype
    assert out.is_contiguous()
    torch.testing.assert_close(out, materialised(q, k, v), atol=1e-5, rtol=1e-5)


def test_several_chunks_are_exact_in_float64() -> None:
    q, k, v = _inputs(SHAPES[2], dtype=torch.float64, seed=1)
    assert k.shape[2] * k.shape[3] > 2 * reference.CHUNK
    torch.testing.assert_close(volume_aggregate(q, k, v), materialised(q, k, v), atol=1e-12, rtol=1e-12)


def test_half_inputs_compute_in_float32_and_return_half() -> None:
    q, k, v = _inputs(SHAPES[1], dtype=torch.float16, seed=2)
    out = volume_aggregate(q, k, v)
    assert out.dtype == torch.float16
    want = materialised(q.float(), k.float(), v.float())
    torch.testing.assert_close(out.float(), want, atol=2e-3, rtol=2e-3)


def test_gradcheck_in_float64() -> None:
    q, k, v = (x.requires_grad_() for x in _inputs(((1, 3, 3, 2), (1, 3, 2, 3), (1, 2, 2, 3)), dtype=torch.float64))
    assert torch.autograd.gradcheck(volume_aggregate, (q, k, v))


def test_gradients_match_the_materialised_softmax() -> None:
    leaves = [x.requires_grad_() for x in _inputs(SHAPES[2], dtype=torch.float64, seed=3)]  # three chunks
    ref = [x.detach().clone().requires_grad_() for x in leaves]
    out, want = volume_aggregate(*leaves), materialised(*ref)
    g = torch.randn_like(out)
    out.backward(g)
    want.backward(g)
    for got, exp in zip(leaves, ref, strict=True):
        torch.testing.assert_close(got.grad, exp.grad, atol=1e-10, rtol=1e-10)


def test_the_scan_form_under_torch_compile_and_its_gradients() -> None:
    """Traced (torch.compile, as torch.export), the reference is a scan over padded chunks."""
    leaves = [x.requires_grad_() for x in _inputs(((1, 4, 5, 6), (1, 4, 23, 29), (1, 3, 23, 29)), dtype=torch.float64,
                                                  seed=8)]  # h*w = 667: two chunks, the last padded
    ref = [x.detach().clone().requires_grad_() for x in leaves]
    out = torch.compile(reference.volume_aggregate, backend="eager", fullgraph=True)(*leaves)
    want = materialised(*ref)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-12)
    g = torch.randn_like(out)
    for got, exp in zip(torch.autograd.grad(out, leaves, g), torch.autograd.grad(want, ref, g), strict=True):
        torch.testing.assert_close(got, exp, atol=1e-12, rtol=1e-12)


def test_large_logits_stay_finite_and_correct() -> None:
    # Logits of order 1e4 .. 1e5: exp overflows without the max subtraction.
    q, k, v = _inputs(SHAPES[2], scale=100.0, seed=4)
    out = volume_aggregate(q, k, v)
    assert torch.isfinite(out).all()
    want = materialised(q.double(), k.double(), v.double())
    torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=1e-5)
    # Near-hard attention: each output is (close to) the value of its best key.
    leaves = [x.requires_grad_() for x in (q, k, v)]
    volume_aggregate(*leaves).sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in leaves)


def test_kernel_on_large_logits_and_many_key_tiles() -> None:
    q, k, v = _inputs(((1, 5, 7, 9), (1, 5, 13, 11), (1, 3, 13, 11)), scale=30.0, seed=5)
    dev = kernel_device()
    got = launch(SPEC, *(x.to(dev) for x in (q, k, v))).cpu()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), materialised(q.double(), k.double(), v.double()), atol=1e-4, rtol=1e-4)


def test_bad_shapes_fail_clearly() -> None:
    q, k, v = _inputs(SHAPES[0])
    with pytest.raises(ShapeError, match=r"^volume_aggregate: q \(1, 3, 5, 6\) and k \(1, 4, 4, 7\) do not match\. "
                                         r"Expected equal sizes in N, C\."):
        volume_aggregate(q, torch.randn(1, 4, 4, 7), v)
    with pytest.raises(ShapeError, match=r"^volume_aggregate: k .* and v \(1, 2, 4, 6\) do not match\. "
                                         r"Expected equal sizes in N, U, V\."):
        volume_aggregate(q, k, torch.randn(1, 2, 4, 6))


# ----- the portable ONNX graph: dynamic H, W, h, w; bounded memory at 720p -------------------------

C = 64  # the channels of the exported graph (static in the graph; ARVo's level-1 features)


@pytest.fixture(scope="module")
def portable_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(REPO))
    from benchmarks.volume_aggregate_memory import export_portable

    path = tmp_path_factory.mktemp("volume_aggregate") / "portable.onnx"
    export_portable(path, C, C)
    return path


def test_portable_graph_is_a_scan_of_standard_ops_with_dynamic_sizes(portable_path: Path) -> None:
    model = onnx.load(str(portable_path))
    onnx.checker.check_model(model, full_check=True)
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    assert dims == [["N", C, "H", "W"], ["N", C, "U", "V"], ["N", C, "U", "V"]]
    (scan,) = [n for n in model.graph.node if n.op_type == "Scan"]
    body = {n.op_type for n in onnx.helper.get_attribute_value(scan.attribute[0]).node}
    assert {"MatMul", "ReduceMax", "Exp", "ReduceSum"} <= body
    # Other sizes than the export example: h*w below, at and above one chunk, N = 2, H, W != h, w.
    for shapes in [((2, C, 7, 9), (2, C, 3, 4), (2, C, 3, 4)), ((1, C, 5, 6), (1, C, 32, 16), (1, C, 32, 16)),
                   ((1, C, 4, 3), (1, C, 41, 29), (1, C, 41, 29))]:
        q, k, v = _inputs(shapes, scale=0.5, seed=6)
        torch.testing.assert_close(run_ort(model, q, k, v), reference.volume_aggregate(q, k, v), atol=1e-5, rtol=1e-5)
    q, k, v = _inputs(((1, C, 6, 5), (1, C, 9, 8), (1, C, 9, 8)), scale=100.0, seed=7)  # large logits
    out = run_ort(model, q, k, v)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), materialised(q.double(), k.double(), v.double()), atol=1e-5, rtol=1e-5)


def test_trt_lowering_with_dynamic_key_sizes_is_one_plugin_node() -> None:
    import warnings

    from tests.plugins._export import Op
    from vdeblur.contract.precision import PLUGIN_DOMAIN
    from vdeblur.plugins import lowering, translation_table

    dims = {d: torch.export.Dim(d, min=2, max=4096) for d in "HWUV"}
    dynamic = ({2: dims["H"], 3: dims["W"]}, {2: dims["U"], 3: dims["V"]}, {2: dims["U"], 3: dims["V"]})
    args = tuple(_inputs(((1, 8, 12, 10), (1, 8, 23, 29), (1, 33, 23, 29))))
    with warnings.catch_warnings(), lowering("trt"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(Op(SPEC, {}).eval(), args, dynamo=True, dynamic_shapes=(dynamic,),
                                    opset_version=18, verbose=False, custom_translation_table=translation_table())
    assert program is not None
    model = program.model_proto
    (node,) = model.graph.node
    assert (node.op_type, node.domain) == ("VolumeAggregate", PLUGIN_DOMAIN)
    dims_of = [[d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim]
               for x in [*model.graph.input, *model.graph.output]]
    assert dims_of == [[1, 8, "H", "W"], [1, 8, "U", "V"], [1, 33, "U", "V"], [1, 33, "H", "W"]]


def _measure(backend: str, onnx_path: Path | None = None, extra: tuple[str, ...] = ("--channels", str(C))) -> dict:
    cmd = [sys.executable, str(BENCHMARK), "--one", backend, "--repeats", "1", *extra]
    if onnx_path is not None:
        cmd += ["--onnx", str(onnx_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_eager_reference_at_720p_level_1_stays_under_1_gib() -> None:
    """q 1x64x180x320, k, v 1x64x90x160: the volume would take 3.3 GB; the process's peak RSS grows
    by the logit tile and its companions only (~350 MiB measured). ~15-30 s on a shared 2-core CPU."""
    row = _measure("torch")
    assert row["peak_growth_bytes"] < GIB, row


def test_backward_is_chunked_too() -> None:
    """Forward and backward at q 1x32x90x160, k, v 1x32x60x80: the volume would take 264 MiB and
    autograd through the loop would keep all of it; the chunked backward recomputes the probabilities
    per chunk (~110 MiB peak growth measured, i.e. a few (H*W) x 512 tiles). ~5 s."""
    row = _measure("torch-backward", extra=("--channels", "32", "--q-hw", "90", "160", "--k-hw", "60", "80"))
    assert row["peak_growth_bytes"] < 0.75 * row["full_volume_mib"] * 2**20, row


@pytest.mark.slow
def test_portable_graph_at_720p_level_1_stays_under_1_gib_in_onnxruntime(portable_path: Path) -> None:
    """The same sizes through ONNX Runtime's CPU provider (~500 MiB peak growth, ~8 s measured)."""
    row = _measure("ort", portable_path)
    assert row["peak_growth_bytes"] < GIB, row
