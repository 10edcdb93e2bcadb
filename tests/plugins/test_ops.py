"""One battery over every registered op (vdeblur/plugins/<op>/spec.py), generated from the specs.

Per op: the spec agrees with its files; the Triton kernel (interpreter on CPU) matches the reference
on the spec's odd-shaped examples, in float32 and with float16 inputs, within the op card's
tolerances; the custom op runs the kernel and differentiates as declared; its fake implementation
agrees with real outputs; both ONNX lowerings run in ONNX Runtime and match the reference; the
``trt`` node carries typed attributes; the kernel compiles to PTX for every GPU target with the
parameter list TensorRT's AOT launch passes. Op-specific math is tested in test_<op>.py.
"""

from __future__ import annotations

import functools
import inspect
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

import vdeblur.plugins
from tests.conftest import kernel_device, spy_on
from tests.plugins._export import example_inputs, exported, run_ort
from vdeblur.contract.precision import PLUGIN_DOMAIN, PLUGIN_VERSION
from vdeblur.errors import MissingDependencyError, ShapeError, UsageError
from vdeblur.plugins import call, specs, torchop
from vdeblur.plugins.aot import CompiledKernel, compile_op
from vdeblur.plugins.lowering import check_plugin_nodes, plugin_nodes
from vdeblur.plugins.spec import REQUIRED, OpSpec, Tolerance, int_cdiv

try:
    import tensorrt  # noqa: F401

    HAS_TENSORRT = True
except ImportError:
    HAS_TENSORRT = False

OPS = list(specs().values())
IDS = [s.name for s in OPS]
EXAMPLES = [(s, i) for s in OPS for i in range(len(s.examples))]
AUTOGRAD = [s for s in OPS if s.autograd]
WITH_ATTRS = [s for s in OPS if s.attrs]  # ops whose attributes are baked into the kernel as constexprs


def assert_within(got: torch.Tensor, want: torch.Tensor, tol: Tolerance, what: str) -> None:
    """At least ``tol.fraction`` of the values within ``tol.atol + tol.rtol * |want|``."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got.double() - want.double()).abs()
    within = (err <= tol.atol + tol.rtol * want.double().abs()).double().mean().item()
    assert within >= tol.fraction, f"{what}: {within:.4f} of the values within {tol} (max error {err.max():.3g})"


def test_registry_holds_every_op_folder() -> None:
    folders = {p.parent.name for p in Path(vdeblur.plugins.__file__).parent.glob("*/spec.py")}
    assert set(IDS) == folders
    assert {"correlation", "correlation_argmax", "dynamic_depthwise", "dynamic_filter", "flow_warp"} <= folders
    assert len({s.id for s in OPS}) == len(OPS) and all(s.id == f"{PLUGIN_DOMAIN}::{s.plugin_name}" for s in OPS)


@pytest.mark.parametrize("spec", OPS, ids=IDS)
def test_spec_agrees_with_its_files(spec: OpSpec) -> None:
    # The reference takes the inputs then the attributes; the kernel the TensorRT AOT parameter list.
    ref = list(inspect.signature(spec.reference_fn()).parameters)
    assert ref == [i.name for i in spec.inputs] + [a.name for a in spec.attrs]
    kernel = spec.launch.load()
    params = list(inspect.signature(getattr(kernel, "fn", kernel)).parameters)
    plain = [p for p in params if p not in spec.launch.constexprs(spec.bind_attrs(spec.examples[0].attrs))]
    assert len(plain) == len(spec.inputs) + len(spec.launch.scalars) + len(spec.outputs), plain
    # The op card names the op, its inputs and attributes.
    card = spec.card_path.read_text()
    assert f"`{spec.id}`" in card
    for name in [i.name for i in spec.inputs] + [a.name for a in spec.attrs]:
        assert f"`{name}`" in card, f"{spec.card} does not mention `{name}`"
    # A typed entry point, if the package has one, has the spec's parameters and defaults.
    entry = getattr(vdeblur.plugins, spec.name, None)
    if callable(entry):
        sig = inspect.signature(entry).parameters
        assert list(sig) == [i.name for i in spec.inputs] + [a.name for a in spec.attrs]
        for a in spec.attrs:
            assert sig[a.name].default == (inspect.Parameter.empty if a.default is REQUIRED else a.default), a.name


def test_spec_layouts_and_shape_rules() -> None:
    """A layout names each dimension once (the checks and scalars look dimensions up by letter); a
    broken shape rule's message is formatted with the sizes."""
    import dataclasses

    from vdeblur.plugins.spec import Input, ShapeRule

    spec = specs()["flow_warp"]
    with pytest.raises(UsageError, match=r"input x has layout 'NCHH'\. Expected one distinct letter"):
        dataclasses.replace(spec, inputs=(Input("x", layout="NCHH"), *spec.inputs[1:]))
    rule = ShapeRule(lambda s: s["x"]["C"] % 2 == 0, "x has C={x.C} and flow H={flow.H}. Expected an even C.")
    odd = dataclasses.replace(spec, shape_rules=(rule,))
    sizes = {"x": dict(zip("NCHW", (1, 3, 5, 6), strict=True)), "flow": dict(zip("NCHW", (1, 2, 5, 6), strict=True))}
    assert odd.broken_shape_rule(sizes) == "x has C=3 and flow H=5. Expected an even C."
    sizes["x"]["C"] = 4
    assert odd.broken_shape_rule(sizes) is None
    with pytest.raises(ShapeError, match=r"^flow_warp: x has C=3 and flow H=5\. Expected an even C\.$"):
        torchop.check_inputs(odd, [torch.randn(1, 3, 5, 6), torch.randn(1, 2, 5, 6)])


@pytest.mark.parametrize("spec,index", EXAMPLES, ids=[f"{s.name}-{i}" for s, i in EXAMPLES])
def test_kernel_matches_reference(spec: OpSpec, index: int) -> None:
    example = spec.examples[index]
    inputs = example_inputs(spec, example, seed=1)
    dev = kernel_device()
    got = torchop.launch(spec, *(x.to(dev) for x in inputs), **example.attrs)
    want = spec.reference_fn()(*inputs, *spec.bind_attrs(example.attrs).values())
    assert got.dtype == getattr(torch, spec.output_dtype(0, "float32"))
    assert_within(got.cpu(), want, spec.tolerances.kernel, f"{spec.name} kernel {example}")


@pytest.mark.parametrize("spec", OPS, ids=IDS)
def test_kernel_with_half_inputs(spec: OpSpec) -> None:
    example = spec.examples[1]
    inputs = example_inputs(spec, example, dtype=torch.float16, seed=2)
    got = torchop.launch(spec, *(x.to(kernel_device()) for x in inputs), **example.attrs).cpu()
    assert got.dtype == getattr(torch, spec.output_dtype(0, "float16"))
    want = spec.reference_fn()(*(x.float() for x in inputs), *spec.bind_attrs(example.attrs).values())
    assert_within(got.float(), want, spec.tolerances.half, f"{spec.name} half kernel")


@pytest.mark.usefixtures("kernels_on_cpu")
@pytest.mark.parametrize("spec", OPS, ids=IDS)
def test_custom_op_runs_the_kernel_and_differentiates_as_declared(spec: OpSpec,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    example = spec.examples[0]
    inputs = [x.requires_grad_() for x in example_inputs(spec, example, seed=3)]
    calls = spy_on(monkeypatch, torchop, "launch")
    out = call(spec.name, *inputs, **example.attrs)
    assert len(calls) == 1  # the kernel ran, not the reference
    reference = spec.reference_fn()
    leaves = [x.detach().requires_grad_() for x in inputs]
    want = reference(*leaves, *spec.bind_attrs(example.attrs).values())
    assert_within(out.detach(), want.detach(), spec.tolerances.kernel, f"{spec.name} custom op")
    if not spec.autograd:
        assert not out.requires_grad
        return
    g = torch.randn_like(out)
    out.backward(g)
    want.backward(g)
    for x, ref in zip(inputs, leaves, strict=True):
        torch.testing.assert_close(x.grad, ref.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("spec", AUTOGRAD, ids=[s.name for s in AUTOGRAD])
def test_gradcheck_through_the_custom_op(spec: OpSpec) -> None:
    example = spec.examples[0]  # the small one
    inputs = tuple(x.double().requires_grad_() for x in example_inputs(spec, example, seed=4))
    assert torch.autograd.gradcheck(lambda *xs: call(spec.name, *xs, **example.attrs), inputs)


@pytest.mark.parametrize("spec", OPS, ids=IDS)
def test_bad_calls_fail_clearly(spec: OpSpec) -> None:
    example = spec.examples[-1]
    inputs = example_inputs(spec, example)
    first = spec.inputs[0].name
    with pytest.raises(UsageError, match=rf"^{spec.name}: {len(inputs) - 1} tensors were given\. Expected"):
        call(spec.name, *inputs[:-1], **example.attrs)
    with pytest.raises(ShapeError, match=rf"^{spec.name}: {first} has shape .*\. Expected 4 dimensions"):
        call(spec.name, inputs[0][0], *inputs[1:], **example.attrs)
    with pytest.raises(ShapeError, match=rf"^{spec.name}: {first} has dtype torch.int64\. Expected one of"):
        call(spec.name, *(x.long() for x in inputs), **example.attrs)
    with pytest.raises(UsageError, match=r"attributes \['bogus'\] are unknown"):
        call(spec.name, *inputs, bogus=1, **example.attrs)
    for a in spec.attrs:
        with pytest.raises(UsageError, match=rf"^{spec.name}: {a.name}=\[1\] is invalid\. Expected"):
            call(spec.name, *inputs, **{**example.attrs, a.name: [1]})
        if a.default is REQUIRED:
            with pytest.raises(UsageError, match=rf"attribute {a.name} is missing"):
                call(spec.name, *inputs, **{k: v for k, v in example.attrs.items() if k != a.name})


@pytest.mark.parametrize("spec", OPS, ids=IDS)
def test_fake_implementation_agrees_with_real_outputs(spec: OpSpec) -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    example = spec.examples[-1]
    op = torchop.custom_op(spec)
    assert op is torchop.custom_op(spec)  # registered once
    args = (*example_inputs(spec, example, seed=5), *spec.bind_attrs(example.attrs).values())
    checks = torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
    assert set(checks.values()) == {"SUCCESS"}, checks
    for dtype in (torch.float32, torch.float64):  # float64: an output "like the input" follows it
        inputs = example_inputs(spec, example, dtype=dtype, seed=5)
        real = call(spec.name, *inputs, **example.attrs)
        with FakeTensorMode() as mode:
            fake = call(spec.name, *(mode.from_tensor(x) for x in inputs), **example.attrs)
        assert (tuple(fake.shape), fake.dtype) == (tuple(real.shape), real.dtype)


def _grown_inputs(spec: OpSpec) -> list[torch.Tensor]:
    """Inputs of another size than the export example (the graphs have dynamic H and W)."""
    return example_inputs(spec, spec.examples[-1], seed=6, grow=(1, 3))


def _reference(spec: OpSpec, inputs: list[torch.Tensor]) -> torch.Tensor:
    return spec.reference_fn()(*inputs, *spec.bind_attrs(spec.examples[-1].attrs).values())


@pytest.mark.parametrize("spec", OPS, ids=IDS)
def test_portable_lowering_runs_in_onnxruntime(spec: OpSpec) -> None:
    model = exported(spec.name, "portable")
    onnx.checker.check_model(model, full_check=True)
    assert not any(n.domain == PLUGIN_DOMAIN for n in model.graph.node)
    inputs = _grown_inputs(spec)
    assert_within(run_ort(model, *inputs), _reference(spec, inputs), spec.tolerances.onnx, f"{spec.name} portable")


def _decoded_attributes(spec: OpSpec, node: onnx.NodeProto) -> dict:
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {a.name: values[a.name].decode() if isinstance(values[a.name], bytes) else values[a.name]
            for a in spec.attrs}


@pytest.mark.parametrize("spec", OPS, ids=IDS)
def test_trt_lowering_is_one_typed_plugin_node(spec: OpSpec) -> None:
    model = exported(spec.name, "trt")
    onnx.checker.check_model(model, full_check=True)
    (node,) = model.graph.node
    assert (node.op_type, node.domain) == (spec.plugin_name, PLUGIN_DOMAIN)
    attrs = {a.name: (a.type, onnx.helper.get_attribute_value(a)) for a in node.attribute}
    assert attrs.pop("plugin_namespace") == (onnx.AttributeProto.STRING, PLUGIN_DOMAIN.encode())
    assert attrs.pop("plugin_version") == (onnx.AttributeProto.STRING, PLUGIN_VERSION.encode())
    assert attrs.pop("aot") == (onnx.AttributeProto.INT, 1)
    proto = {"INT": onnx.AttributeProto.INT, "FLOAT": onnx.AttributeProto.FLOAT, "STRING": onnx.AttributeProto.STRING}
    values = spec.bind_attrs(spec.examples[-1].attrs)
    encoded = {a.name: (proto[a.type], values[a.name].encode() if a.type == "STRING" else values[a.name])
               for a in spec.attrs}
    assert attrs == encoded  # every attribute written (TensorRT passes them positionally), typed
    assert check_plugin_nodes(model) == []
    # The registered schema's inference gives the output type and shape that torch's export wrote
    # (from the fake implementation): N and C static, H and W symbolic.
    out = model.graph.output[0].type.tensor_type
    assert out.elem_type == {"float32": onnx.TensorProto.FLOAT}[spec.output_dtype(0, "float32")]
    declared = [d.dim_param or d.dim_value for d in out.shape.dim]
    assert len(declared) == 4 and {"H", "W"} <= set(declared)
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    bare.graph.output[0].type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True).graph.output[0].type.tensor_type
    assert inferred.elem_type == out.elem_type
    assert [d.dim_param or d.dim_value for d in inferred.shape.dim] == declared


@pytest.mark.parametrize("spec", OPS, ids=IDS)
def test_onnx_schema_infers_the_output_of_a_half_node(spec: OpSpec) -> None:
    node = plugin_nodes()[spec.plugin_name]
    assert node.register_schema() is not None and node.register_schema().name == spec.plugin_name  # idempotent
    example = spec.examples[-1]
    attrs = spec.bind_attrs(example.attrs)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node(spec.plugin_name, [i.name for i in spec.inputs], ["out"], domain=PLUGIN_DOMAIN,
                               plugin_namespace=PLUGIN_DOMAIN, plugin_version=PLUGIN_VERSION, aot=1, **attrs)],
        "g", [onnx.helper.make_tensor_value_info(i.name, onnx.TensorProto.FLOAT16, shape)
              for i, shape in zip(spec.inputs, example.shapes, strict=True)],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.UNDEFINED, None)])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18),
                                                         onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1)])
    out = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output[0].type.tensor_type
    real = _reference(spec, example_inputs(spec, example))  # the reference's output, in float32
    half = spec.output_dtype(0, "float16")
    assert out.elem_type == {"float16": onnx.TensorProto.FLOAT16, "float32": onnx.TensorProto.FLOAT}[half]
    assert [d.dim_value for d in out.shape.dim] == list(real.shape)


@pytest.mark.parametrize("spec", OPS, ids=IDS)
def test_trt_lowering_runs_in_onnxruntime_with_the_reference_as_the_plugin(spec: OpSpec) -> None:
    """ONNX Runtime stands in for TensorRT: the plugin node is defined as a model-local function
    whose body is the portable lowering for the attributes read back from the node."""
    trt, portable = exported(spec.name, "trt"), exported(spec.name, "portable")
    (node,) = trt.graph.node
    assert _decoded_attributes(spec, node) == spec.bind_attrs(spec.examples[-1].attrs)
    body = [onnx.helper.make_node("Constant", [], [t.name], value=t) for t in portable.graph.initializer]
    function = onnx.helper.make_function(
        PLUGIN_DOMAIN, node.op_type, [i.name for i in portable.graph.input], [o.name for o in portable.graph.output],
        body + list(portable.graph.node), [o for o in portable.opset_import if o.domain != PLUGIN_DOMAIN],
        attributes=[a.name for a in node.attribute],
    )
    model = onnx.ModelProto()
    model.CopyFrom(trt)
    model.functions.append(function)
    inputs = _grown_inputs(spec)
    assert_within(run_ort(model, *inputs), _reference(spec, inputs), spec.tolerances.onnx, f"{spec.name} trt")


def ptx_params(ptx: str, name: str) -> list[str]:
    m = re.search(rf"\.entry {name}\((.*?)\)", ptx, re.S)
    assert m, f"no .entry {name} in the PTX"
    return [p.strip() for p in m.group(1).split(",") if p.strip()]


@functools.cache
def compiled(name: str, dtype: str, example: int, arch: int) -> CompiledKernel:
    spec = specs()[name]
    return compile_op(spec, dtype, spec.examples[example].attrs, arch)


# sm_90 in float16: the half variant (FP16 engines) is compiled for one target.
TARGETS = [(80, "float32"), (89, "float32"), (90, "float16")]


@pytest.mark.parametrize("arch,dtype", TARGETS, ids=[f"sm_{a}-{d}" for a, d in TARGETS])
@pytest.mark.parametrize("spec", OPS, ids=IDS)
def test_kernel_compiles_to_ptx_for_target(spec: OpSpec, arch: int, dtype: str) -> None:
    ck = compiled(spec.name, dtype, -1, arch)
    assert f".target sm_{arch}" in ck.ptx
    params = ptx_params(ck.ptx, ck.name)
    # TensorRT's order: input pointers, int scalars, output pointers; Triton may append hidden
    # scratch pointers, which compile_kernel has checked are unused.
    n_in, n_s, n_out = len(spec.inputs), len(spec.launch.scalars), len(spec.outputs)
    assert all(".u64" in p for p in params[:n_in]), params
    assert all(".u32" in p for p in params[n_in:n_in + n_s]), params
    assert all(".u64" in p for p in params[n_in + n_s:n_in + n_s + n_out]), params
    assert ck.block_x == ck.num_warps * 32 == spec.launch.num_warps * 32
    if dtype == "float16":
        assert ".f16" in ck.ptx or ".b16" in ck.ptx
    if ck.registers is not None:  # ptxas is bundled with Triton; record what it reports
        assert 0 < ck.registers <= 255
        assert ck.spill_stores == 0 and ck.spill_loads == 0, f"{spec.name} spills on sm_{arch}"


@pytest.mark.parametrize("spec", WITH_ATTRS, ids=[s.name for s in WITH_ATTRS])
def test_attributes_are_baked_into_the_ptx(spec: OpSpec) -> None:
    a, b = (spec.launch.constexprs(spec.bind_attrs(e.attrs)) for e in (spec.examples[0], spec.examples[-1]))
    assert a != b, "the first and the last example should differ in their constexprs"
    # AOT engines do not serialise attributes: they are constexprs, so the code differs.
    assert compiled(spec.name, "float16", 0, 90).ptx != compiled(spec.name, "float16", -1, 90).ptx


class Sym:
    """A stand-in for TensorRT shape expressions: records arithmetic instead of computing it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _op(self, other: object, sign: str) -> Sym:
        return Sym(f"({self.text} {sign} {other.text if isinstance(other, Sym) else other})")

    def __add__(self, o: object) -> Sym:
        return self._op(o, "+")

    def __sub__(self, o: object) -> Sym:
        return self._op(o, "-")

    def __mul__(self, o: object) -> Sym:
        return self._op(o, "*")

    def __floordiv__(self, o: object) -> Sym:
        return self._op(o, "//")


def _evaluate(x: object, sizes: dict[str, int]) -> int:
    return eval(x.text, {"cdiv": int_cdiv}, sizes) if isinstance(x, Sym) else x  # noqa: S307


@pytest.mark.parametrize("spec", OPS, ids=IDS)
def test_launch_plan_is_a_shape_expression(spec: OpSpec) -> None:
    """The plan on symbolic shapes (as TensorRT computes it) equals the plan on the actual sizes."""
    for example in spec.examples:
        attrs = spec.bind_attrs(example.attrs)
        names = [[f"{d}{k}" for d in i.layout] for k, i in enumerate(spec.inputs)]
        sizes = {n: v for ns, shape in zip(names, example.shapes, strict=True) for n, v in zip(ns, shape, strict=True)}
        sym_grid, sym_scalars = spec.plan([[Sym(n) for n in ns] for ns in names], attrs,
                                          lambda a, b: Sym(f"cdiv({a.text}, {b})"))
        grid, scalars = spec.plan(example.shapes, attrs)
        assert [_evaluate(g, sizes) for g in sym_grid] == list(grid)
        assert [_evaluate(s, sizes) for s in sym_scalars] == list(scalars)
        assert all(isinstance(g, int) and g >= 1 for g in grid)


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed: the missing-dependency path cannot be shown")
def test_register_without_tensorrt_names_the_extra() -> None:
    from vdeblur.plugins.lowering import register_tensorrt_plugins

    with pytest.raises(MissingDependencyError, match=r"pip install 'vdeblur\[tensorrt\]'"):
        register_tensorrt_plugins()


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TENSORRT, reason="needs the tensorrt package (extra [tensorrt]; NVIDIA's index)")
def test_register_all_plugins_with_tensorrt() -> None:
    import tensorrt as trt

    from vdeblur.plugins.lowering import register_tensorrt_plugins

    register_tensorrt_plugins()
    register_tensorrt_plugins()  # idempotent
    registry = trt.get_plugin_registry()
    for spec in OPS:
        assert registry.get_creator(spec.plugin_name, PLUGIN_VERSION, PLUGIN_DOMAIN) is not None


def test_plugin_registration_path_does_not_import_torch() -> None:
    # AOT engines need no Python at inference; registering the plugins in a TensorRT process must not
    # drag torch in either.
    code = (
        "import sys, vdeblur.plugins, vdeblur.plugins.lowering, vdeblur.plugins.qdp, vdeblur.plugins.aot; "
        "assert vdeblur.plugins.specs(), 'no ops'; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
