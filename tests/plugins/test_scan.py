"""The per-pixel filter ops inside a recurrence exported as an ONNX Scan (DSTNet's shape).

DSTNet's dynamic filters sit in a recurrence over frames; exported with
``torch._higher_order_ops.scan`` and ``torch.onnx.export(dynamo=True)`` it becomes an ONNX Scan
whose body holds the ops. Checked here, with a dynamic scan length T and dynamic N, H, W:

- eagerly, the scan (whose body Dynamo compiles: the entry points must trace without graph breaks)
  equals a Python loop over the references, with the custom ops running the references and, on
  CPU through Triton's interpreter, the kernels;
- ``portable``: the Scan body holds standard ops only, and ONNX Runtime runs it at other T, N, H, W;
- ``trt``: the plugin nodes sit inside the Scan body with their selection attributes
  (``check_plugin_nodes`` walks subgraphs); ONNX Runtime runs the graph with the plugin nodes
  defined as model-local functions (the ops' portable graphs); TensorRT-RTX parses it (plugin
  layers inside its loop) and builds an engine on the CPU. Running that engine needs a GPU.
"""

from __future__ import annotations

import functools
import warnings

import onnx
import pytest
import torch
from torch._higher_order_ops import scan

from tests.conftest import spy_on
from tests.plugins._export import Op, run_ort
from vdeblur.contract.precision import PLUGIN_DOMAIN
from vdeblur.plugins import dynamic_depthwise, dynamic_filter, lowering, specs, torchop, translation_table
from vdeblur.plugins._onnx import all_nodes
from vdeblur.plugins.dynamic_depthwise.reference import dynamic_depthwise as depthwise_reference
from vdeblur.plugins.dynamic_filter.reference import dynamic_filter as filter_reference
from vdeblur.plugins.lowering import check_plugin_nodes

C, G, K = 4, 2, 3  # G < C: channels 0-1 use group 0, channels 2-3 group 1


class Recurrence(torch.nn.Module):
    """h_t = dynamic_depthwise(dynamic_filter(x_t + h_{t-1}, filters_t), kernels_t, bias)."""

    def forward(self, frames: torch.Tensor, filters: torch.Tensor, kernels: torch.Tensor,
                bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def step(h: torch.Tensor, xs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
            x, w, k = xs
            h = dynamic_depthwise(dynamic_filter(x + h, w), k, bias)
            return h, h.clone()  # a scan body may not return one tensor twice

        last, states = scan(step, torch.zeros_like(frames[0]), (frames, filters, kernels))
        return last, states


def loop(frames: torch.Tensor, filters: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor
         ) -> tuple[torch.Tensor, torch.Tensor]:
    h, states = torch.zeros_like(frames[0]), []
    for t in range(frames.shape[0]):
        h = depthwise_reference(filter_reference(frames[t] + h, filters[t]), kernels[t], bias)
        states.append(h)
    return h, torch.stack(states)


def inputs(t: int, n: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(t, n, C, h, w, generator=g), torch.randn(t, n, G, K, K, h, w, generator=g) / K,
            torch.randn(t, n, C, K, K, generator=g) / K, torch.randn(C, generator=g))


LAYOUTS = ("TNCHW", "TNGKLHW", "TNCKL", "C")


@functools.cache
def exported(mode: str) -> onnx.ModelProto:
    dims = {d: torch.export.Dim(d, min=1 if d in "TN" else 4, max=64 if d in "TN" else 4096) for d in "TNHW"}
    dynamic = tuple({i: dims[d] for i, d in enumerate(layout) if d in dims} for layout in LAYOUTS)
    with warnings.catch_warnings(), lowering(mode):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(Recurrence().eval(), inputs(3, 2, 6, 7), dynamo=True, dynamic_shapes=dynamic,
                                    opset_version=18, verbose=False,
                                    custom_translation_table=translation_table() if mode == "trt" else None)
    assert program is not None
    return program.model_proto


def scan_body(model: onnx.ModelProto) -> onnx.GraphProto:
    (node,) = [n for n in model.graph.node if n.op_type == "Scan"]
    return onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "body"))


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_eager_scan_matches_a_loop_over_the_references() -> None:
    args = inputs(3, 2, 5, 6, seed=1)
    for got, want in zip(Recurrence()(*args), loop(*args), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.usefixtures("kernels_on_cpu")
def test_eager_scan_runs_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The custom ops inside the compiled scan body launch the Triton kernels (interpreter on CPU),
    once per op and step, without the bias too."""
    calls = spy_on(monkeypatch, torchop, "launch")
    frames, filters, kernels, _ = inputs(2, 1, 4, 5, seed=2)

    def step(h: torch.Tensor, xs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        x, w, k = xs
        h = dynamic_depthwise(dynamic_filter(x + h, w), k)
        return h, h.clone()

    _, states = scan(step, torch.zeros_like(frames[0]), (frames, filters, kernels))
    assert sorted(spec.name for spec, *_ in calls) == ["dynamic_depthwise"] * 2 + ["dynamic_filter"] * 2
    want = loop(frames, filters, kernels, torch.zeros(C))[1]
    torch.testing.assert_close(states, want, atol=1e-5, rtol=1e-5)


def test_portable_scan_runs_in_onnxruntime_with_dynamic_length() -> None:
    model = exported("portable")
    onnx.checker.check_model(model, full_check=True)
    assert not any(n.domain == PLUGIN_DOMAIN for n in all_nodes(model.graph))
    assert {"Pad", "Slice", "Mul"} <= {n.op_type for n in scan_body(model).node}
    assert dims(model.graph.input[0]) == ["T", "N", C, "H", "W"]
    for t, n, h, w in [(3, 2, 6, 7), (5, 1, 9, 4), (1, 3, 4, 11)]:
        args = inputs(t, n, h, w, seed=t)
        session_out = [run_ort(_with_output(model, i), *args) for i in range(2)]
        for got, want in zip(session_out, loop(*args), strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _with_output(model: onnx.ModelProto, index: int) -> onnx.ModelProto:
    """The model with only output ``index`` (run_ort returns the first output)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = out.graph.output[index]
    del out.graph.output[:]
    out.graph.output.append(keep)
    return out


def test_trt_scan_holds_the_plugin_nodes_in_its_body() -> None:
    model = exported("trt")
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node if n.domain == PLUGIN_DOMAIN] == []  # all inside the body
    body = [n.op_type for n in scan_body(model).node if n.domain == PLUGIN_DOMAIN]
    assert sorted(body) == ["DynamicDepthwise", "DynamicFilter"]
    assert check_plugin_nodes(model) == []  # walks the Scan body
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    node = next(n for n in scan_body(broken).node if n.op_type == "DynamicFilter")  # the live body
    del node.attribute[:]
    assert any("attribute plugin_namespace missing" in p for p in check_plugin_nodes(broken))


def test_trt_scan_runs_in_onnxruntime_with_the_references_as_the_plugins() -> None:
    """ONNX Runtime stands in for TensorRT: each plugin node is a model-local function whose body is
    the op's portable graph at the scan's channel, group and kernel sizes."""
    model = onnx.ModelProto()
    model.CopyFrom(exported("trt"))
    n, h, w = 2, 6, 7
    for name, shapes in [("dynamic_filter", [(n, C, h, w), (n, G, K, K, h, w)]),
                         ("dynamic_depthwise", [(n, C, h, w), (n, C, K, K), (C,)])]:
        spec = specs()[name]
        portable = _export_op(name, tuple(shapes))
        body = [onnx.helper.make_node("Constant", [], [t.name], value=t) for t in portable.graph.initializer]
        model.functions.append(onnx.helper.make_function(
            PLUGIN_DOMAIN, spec.plugin_name, [i.name for i in portable.graph.input],
            [o.name for o in portable.graph.output], body + list(portable.graph.node),
            [o for o in portable.opset_import if o.domain != PLUGIN_DOMAIN],
            attributes=["plugin_namespace", "plugin_version", "aot"]))
    for t, n2, h2, w2 in [(4, 2, 8, 5), (1, 1, 5, 9)]:
        args = inputs(t, n2, h2, w2, seed=10 + t)
        for i, want in enumerate(loop(*args)):
            torch.testing.assert_close(run_ort(_with_output(model, i), *args), want, atol=1e-5, rtol=1e-5)


def _export_op(name: str, shapes: tuple[tuple[int, ...], ...]) -> onnx.ModelProto:
    """Op ``name`` in the portable lowering with dynamic N, H and W."""
    spec = specs()[name]
    dims = {d: torch.export.Dim(f"{d}{name}", min=1 if d == "N" else 4, max=4096) for d in "NHW"}
    dynamic = tuple({i: dims[d] for i, d in enumerate(inp.layout) if d in dims} for inp in spec.inputs)
    args = tuple(torch.randn(*s) for s in shapes)
    with warnings.catch_warnings(), lowering("portable"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(Op(spec, {}).eval(), args, dynamo=True, dynamic_shapes=(dynamic,),
                                    opset_version=18, verbose=False)
    assert program is not None
    return program.model_proto


@pytest.mark.tensorrt_rtx
def test_tensorrt_rtx_parses_the_scan_and_builds_an_engine() -> None:
    trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (the [tensorrt-rtx] extra)")
    from vdeblur.plugins import rtx
    from vdeblur.plugins.lowering import register_tensorrt_rtx_plugins

    rtx.import_tensorrt_rtx()
    register_tensorrt_rtx_plugins()
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(exported("trt").SerializeToString()), [str(parser.get_error(i))
                                                              for i in range(parser.num_errors)]
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    kinds = [layer.type for layer in layers]
    assert trt.LayerType.RECURRENCE in kinds and trt.LayerType.ITERATOR in kinds and trt.LayerType.LOOP_OUTPUT in kinds
    plugins = [layer for layer in layers if layer.type == trt.LayerType.PLUGIN_V3]
    assert len(plugins) == 2
    # The plugin layers sit inside the loop: after its first iterator, before its first output.
    first_iterator = kinds.index(trt.LayerType.ITERATOR)
    first_output = kinds.index(trt.LayerType.LOOP_OUTPUT)
    assert all(first_iterator < layers.index(p) < first_output for p in plugins)
    assert tuple(network.get_output(0).shape) == (-1, C, -1, -1)  # the last state
    assert tuple(network.get_output(1).shape) == (-1, -1, C, -1, -1)  # every state
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    fixed = {"C": C, "G": G, "K": K, "L": K}
    for i, layout in enumerate(LAYOUTS):
        shapes = [[{**fixed, **dict(zip("TNHW", s, strict=True))}[d] for d in layout]
                  for s in [(1, 1, 8, 8), (3, 2, 16, 16), (8, 2, 32, 32)]]
        profile.set_shape(network.get_input(i).name, *shapes)
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is not None
