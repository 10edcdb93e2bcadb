"""The ONNX face of every op, generated from its OpSpec: the ``trt`` lowering and the ONNX schema.

The ``trt`` node follows TensorRT's ONNX parser conventions (reference/TENSORRT.md): op_type is the
plugin name, domain :data:`DOMAIN` (so onnx.checker accepts it; TensorRT >= 10.10 also reads the
domain as namespace), and the attributes ``plugin_namespace="vdeblur"``, ``plugin_version="1"``,
``aot=1`` (strict AOT implementation), followed by the op's own attributes typed as the parser
reads them (INT -> int32, FLOAT -> float32, STRING -> char).

Each node's schema is registered with onnx (:meth:`PluginNode.register_schema`), with a type and
shape inference function computed from the spec's output rules, so that
``onnx.checker.check_model(full_check=True)`` validates attribute names and types and
``onnx.shape_inference`` knows the output types and shapes. The ``portable`` lowering needs nothing
here: the entry point traces the reference (:func:`vdeblur.plugins.torchop.call`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import onnx
from onnx.defs import OpSchema

from vdeblur.contract.precision import PLUGIN_DOMAIN, PLUGIN_VERSION
from vdeblur.plugins.spec import REQUIRED, OpSpec, make_function

DOMAIN = PLUGIN_DOMAIN
NAMESPACE = PLUGIN_DOMAIN
OPSET_VERSION = 1

__all__ = ["DOMAIN", "NAMESPACE", "OPSET_VERSION", "PLUGIN_VERSION", "PluginNode", "all_nodes", "check_plugin_nodes",
           "translation"]

_SCHEMA_ATTR = {"INT": OpSchema.AttrType.INT, "FLOAT": OpSchema.AttrType.FLOAT, "STRING": OpSchema.AttrType.STRING}
_PROTO_ATTR = {"INT": onnx.AttributeProto.INT, "FLOAT": onnx.AttributeProto.FLOAT,
               "STRING": onnx.AttributeProto.STRING}
# Attributes that select the TensorRT plugin implementation, on every node.
_SELECTION = (("plugin_namespace", "STRING", "TensorRT plugin namespace"),
              ("plugin_version", "STRING", "TensorRT plugin version"),
              ("aot", "INT", "1: ahead-of-time plugin implementation"))
_ONNX_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "bfloat16": "tensor(bfloat16)",
               "float64": "tensor(double)"}
_ELEM_TYPES = {"float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16}


@dataclass(frozen=True)
class PluginNode:
    """The ONNX face of one plugin op (its ``trt`` node)."""

    spec: OpSpec

    @property
    def name(self) -> str:
        return self.spec.plugin_name  # op_type == TensorRT plugin name

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.spec.inputs)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.spec.outputs)

    @property
    def plugin_id(self) -> str:
        return f"{NAMESPACE}::{self.name}"

    def expected_attribute_types(self) -> dict[str, int]:
        """Attribute name -> onnx.AttributeProto type, including the plugin-selection attributes."""
        types = {name: _PROTO_ATTR[t] for name, t, _ in _SELECTION}
        types.update({a.name: _PROTO_ATTR[a.type] for a in self.spec.attrs})
        return types

    def schema(self) -> OpSchema:
        """The node's OpSchema, with type and shape inference from the spec's output rules."""
        attrs = [OpSchema.Attribute(name, _SCHEMA_ATTR[t], doc) for name, t, doc in _SELECTION]
        attrs += [OpSchema.Attribute(a.name, _SCHEMA_ATTR[a.type], a.doc or a.name) for a in self.spec.attrs]
        constraints = [("T", [_ONNX_TYPES[d] for d in self.spec.plugin_dtypes], "input type")]
        out_types = []
        for i, o in enumerate(self.spec.outputs):
            if o.dtype is None:
                out_types.append("T")
            else:
                out_types.append(f"T_out{i}")
                constraints.append((f"T_out{i}", [_ONNX_TYPES[o.dtype]], f"type of {o.name}"))
        schema = OpSchema(
            self.name, DOMAIN, OPSET_VERSION, self.spec.summary,
            inputs=[OpSchema.FormalParameter(n, "T") for n in self.inputs],
            outputs=[OpSchema.FormalParameter(n, t) for n, t in zip(self.outputs, out_types, strict=True)],
            type_constraints=constraints,
            attributes=attrs,
        )
        schema.set_type_and_shape_inference_function(self._infer)
        return schema

    def register_schema(self) -> OpSchema:
        """Register the node's schema with onnx (idempotent) and return it."""
        if not onnx.defs.has(self.name, DOMAIN):
            onnx.defs.register_schema(self.schema())
        return onnx.defs.get_schema(self.name, OPSET_VERSION, DOMAIN)

    def emitter(self) -> Callable[..., Any]:
        """An onnxscript callable that emits the node with the plugin-selection attributes."""
        import onnxscript

        schema = self.register_schema()
        op = onnxscript.values.Op(onnxscript.values.Opset(DOMAIN, OPSET_VERSION), self.name, schema)

        def emit(*inputs: Any, **attrs: Any) -> Any:
            return op(*inputs, plugin_namespace=NAMESPACE, plugin_version=PLUGIN_VERSION, aot=1, **attrs)

        return emit

    def _infer(self, ctx: Any) -> None:
        """Type and shape inference: the output dtypes and the spec's output shapes (unknown dims
        stay unknown; arithmetic on symbolic dims gives an unknown dim)."""
        in_types = [ctx.get_input_type(i).tensor_type for i in range(len(self.inputs))]
        attrs = {}
        for a in self.spec.attrs:
            proto = ctx.get_attribute(a.name)
            value = a.default if proto is None else onnx.helper.get_attribute_value(proto)
            attrs[a.name] = value.decode() if isinstance(value, bytes) else value
        known = all(t.HasField("shape") and len(t.shape.dim) == len(d.layout)
                    for t, d in zip(in_types, self.spec.inputs, strict=True))
        known = known and all(v is not REQUIRED for v in attrs.values())
        shapes = self.spec.output_shapes([[_Dim(d) for d in t.shape.dim] for t in in_types], attrs) if known else None
        for i, o in enumerate(self.spec.outputs):
            out = onnx.TypeProto()
            elem = in_types[0].elem_type
            out.tensor_type.elem_type = elem if o.dtype is None else _ELEM_TYPES[o.dtype]
            if shapes is not None:
                for d in shapes[i]:
                    _Dim.write(d, out.tensor_type.shape.dim.add())
            ctx.set_output_type(i, out)


class _Dim:
    """An ONNX dimension in a shape rule: a value, a symbol (dim_param), or unknown."""

    def __init__(self, proto: Any = None, value: int | None = None) -> None:
        self.value = value
        self.param = ""
        if proto is not None:
            self.value = proto.dim_value if proto.HasField("dim_value") else None
            self.param = proto.dim_param if proto.HasField("dim_param") else ""

    def _arith(self, other: Any, fn: Callable[[int, int], int]) -> _Dim:
        b = other.value if isinstance(other, _Dim) else other
        return _Dim(value=fn(self.value, b) if self.value is not None and b is not None else None)

    def __add__(self, o: Any) -> _Dim:
        return self._arith(o, lambda a, b: a + b)

    def __sub__(self, o: Any) -> _Dim:
        return self._arith(o, lambda a, b: a - b)

    def __mul__(self, o: Any) -> _Dim:
        return self._arith(o, lambda a, b: a * b)

    def __floordiv__(self, o: Any) -> _Dim:
        return self._arith(o, lambda a, b: a // b)

    __radd__ = __add__
    __rmul__ = __mul__

    @staticmethod
    def write(d: Any, proto: Any) -> None:
        if isinstance(d, _Dim) and d.value is None:
            if d.param:
                proto.dim_param = d.param
        else:
            proto.dim_value = int(d.value if isinstance(d, _Dim) else d)


def translation(spec: OpSpec) -> dict[Any, Callable[..., Any]]:
    """The ``custom_translation_table`` entry of op ``spec`` for the ``trt`` lowering."""
    import torch

    from vdeblur.plugins.torchop import custom_op

    emit = PluginNode(spec).emitter()
    params = [(i.name, Any) for i in spec.inputs] + [(a.name, a.py_type) for a in spec.attrs]

    def lower(args: dict[str, Any]) -> Any:
        return emit(*(args[i.name] for i in spec.inputs), **{a.name: args[a.name] for a in spec.attrs})

    custom_op(spec)  # registers torch.ops.vdeblur.<Name>
    overload = getattr(getattr(torch.ops, DOMAIN), spec.plugin_name).default
    return {overload: make_function(f"{spec.name}_trt", params, Any, lower)}


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """The nodes of ``graph`` and, depth first, of its subgraphs (the bodies of Scan, Loop and If)."""
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from all_nodes(g)


def check_plugin_nodes(model: onnx.ModelProto, nodes: Mapping[str, PluginNode]) -> list[str]:
    """Problems with the plugin nodes of ``model``, including those inside subgraphs such as a Scan
    body (empty when every node is as TensorRT expects)."""
    problems = []
    for node in all_nodes(model.graph):
        if node.domain != DOMAIN:
            continue
        spec = nodes.get(node.op_type)
        if spec is None:
            problems.append(f"{node.name}: unknown plugin op_type {node.op_type!r}")
            continue
        found = {a.name: a for a in node.attribute}
        expected = spec.expected_attribute_types()
        for name, t in expected.items():
            if name not in found:
                problems.append(f"{node.name}: attribute {name} missing")
            elif found[name].type != t:
                problems.append(f"{node.name}: attribute {name} has type {found[name].type}, expected {t}")
        extra = set(found) - set(expected)
        if extra:
            problems.append(f"{node.name}: unexpected attributes {sorted(extra)}")
        for name, want in (("plugin_namespace", NAMESPACE), ("plugin_version", PLUGIN_VERSION)):
            got = found.get(name)
            if got is not None and got.s.decode() != want:
                problems.append(f"{node.name}: {name} is {got.s.decode()!r}, expected {want!r}")
        if len(node.input) != len(spec.inputs) or len(node.output) != len(spec.outputs):
            problems.append(f"{node.name}: {len(node.input)} inputs / {len(node.output)} outputs, "
                            f"expected {len(spec.inputs)} / {len(spec.outputs)}")
    return problems
