"""Shared machinery of the ``trt`` lowering: one custom ONNX node per plugin op.

The node follows TensorRT's ONNX parser conventions (reference/TENSORRT.md): op_type is the
plugin name, domain ``vdeblur`` (so onnx.checker accepts it; TensorRT >= 10.10 also reads the
domain as namespace), and the attributes ``plugin_namespace="vdeblur"``, ``plugin_version="1"``,
``aot=1`` (strict AOT implementation), followed by the op's own attributes typed as the parser
reads them (INT -> int32, FLOAT -> float32, STRING -> char). An ONNX schema is registered for each
node so that ``onnx.checker.check_model(full_check=True)`` validates attribute names and types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx
from onnx.defs import OpSchema

DOMAIN = "vdeblur"
NAMESPACE = "vdeblur"
PLUGIN_VERSION = "1"
OPSET_VERSION = 1

_ATTR_TYPES = {int: OpSchema.AttrType.INT, float: OpSchema.AttrType.FLOAT, str: OpSchema.AttrType.STRING}
_ONNX_ATTR_TYPES = {int: onnx.AttributeProto.INT, float: onnx.AttributeProto.FLOAT, str: onnx.AttributeProto.STRING}


@dataclass(frozen=True)
class PluginNode:
    """The ONNX face of one plugin op."""

    name: str  # op_type == TensorRT plugin name
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: tuple[tuple[str, type], ...]  # the op's own attributes, in order
    input_types: tuple[str, ...] = ("tensor(float)", "tensor(float16)")
    output_types: tuple[str, ...] | None = None  # None: same type as the inputs

    @property
    def plugin_id(self) -> str:
        return f"{NAMESPACE}::{self.name}"

    def expected_attribute_types(self) -> dict[str, int]:
        """Attribute name -> onnx.AttributeProto type, including the plugin-selection attributes."""
        types = {
            "plugin_namespace": onnx.AttributeProto.STRING,
            "plugin_version": onnx.AttributeProto.STRING,
            "aot": onnx.AttributeProto.INT,
        }
        types.update({name: _ONNX_ATTR_TYPES[t] for name, t in self.attributes})
        return types

    def schema(self) -> OpSchema:
        attrs = [
            OpSchema.Attribute("plugin_namespace", OpSchema.AttrType.STRING, "TensorRT plugin namespace"),
            OpSchema.Attribute("plugin_version", OpSchema.AttrType.STRING, "TensorRT plugin version"),
            OpSchema.Attribute("aot", OpSchema.AttrType.INT, "1: ahead-of-time plugin implementation"),
        ] + [OpSchema.Attribute(name, _ATTR_TYPES[t], name) for name, t in self.attributes]
        out_type = "T" if self.output_types is None else "T_out"
        constraints = [("T", list(self.input_types), "input type")]
        if self.output_types is not None:
            constraints.append(("T_out", list(self.output_types), "output type"))
        return OpSchema(
            self.name,
            DOMAIN,
            OPSET_VERSION,
            inputs=[OpSchema.FormalParameter(n, "T") for n in self.inputs],
            outputs=[OpSchema.FormalParameter(n, out_type) for n in self.outputs],
            type_constraints=constraints,
            attributes=attrs,
        )

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
            return op(
                *inputs,
                plugin_namespace=NAMESPACE,
                plugin_version=PLUGIN_VERSION,
                aot=1,
                **attrs,
            )

        return emit


def check_plugin_nodes(model: onnx.ModelProto, nodes: dict[str, PluginNode]) -> list[str]:
    """Problems with the plugin nodes of ``model`` (empty when every node is as TensorRT expects)."""
    problems = []
    for node in model.graph.node:
        if node.domain != DOMAIN:
            continue
        spec = nodes.get(node.op_type)
        if spec is None:
            problems.append(f"{node.name}: unknown plugin op_type {node.op_type!r}")
            continue
        found = {a.name: a for a in node.attribute}
        for name, t in spec.expected_attribute_types().items():
            if name not in found:
                problems.append(f"{node.name}: attribute {name} missing")
            elif found[name].type != t:
                problems.append(f"{node.name}: attribute {name} has type {found[name].type}, expected {t}")
        extra = set(found) - set(spec.expected_attribute_types())
        if extra:
            problems.append(f"{node.name}: unexpected attributes {sorted(extra)}")
        ns = found.get("plugin_namespace")
        if ns is not None and ns.s.decode() != NAMESPACE:
            problems.append(f"{node.name}: plugin_namespace is {ns.s.decode()!r}, expected {NAMESPACE!r}")
        ver = found.get("plugin_version")
        if ver is not None and ver.s.decode() != PLUGIN_VERSION:
            problems.append(f"{node.name}: plugin_version is {ver.s.decode()!r}, expected {PLUGIN_VERSION!r}")
        if len(node.input) != len(spec.inputs) or len(node.output) != len(spec.outputs):
            problems.append(f"{node.name}: {len(node.input)} inputs / {len(node.output)} outputs, "
                            f"expected {len(spec.inputs)} / {len(spec.outputs)}")
    return problems
