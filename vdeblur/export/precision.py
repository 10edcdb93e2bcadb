"""Reduced-precision variants of an fp32 step graph, as ONNX graph transforms (DESIGN.md, "Precision
policy"): every backend sees the same model.

- ``fp16`` / ``bf16``: mixed precision (:func:`mixed_precision`). Every node runs in the low type
  except the sensitive ones (:func:`sensitive_nodes`), which stay float32 behind Cast nodes. Graph
  inputs and outputs stay float32, so the runtime and the manifest interface do not change.
- ``int8``: Q/DQ nodes calibrated on real frames. ``quantizer="onnxruntime"``: ONNX Runtime's
  ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, Conv/ConvTranspose only;
  the sensitive nodes are excluded), the CPU path. Weights are quantised to 7 bits ([-64, 63],
  ``int8_weights="reduced"``, the default) so that one artifact is right on every CPU: x86-64
  CPUs without VNNI saturate full-range weights in ONNX Runtime's U8S8 kernels
  (:mod:`vdeblur.contract.device`). ``int8_weights="full"`` keeps 8 bits (about 0.3-1 dB closer
  to fp32), right on VNNI and ARM64 CPUs; elsewhere the runtime runs such a graph's Q/DQ in float
  (right, not fast) and says so. ``quantizer="modelopt"``: NVIDIA ModelOpt
  (extra ``[quant]``), the TensorRT path; it also gives ``fp8``.

A step graph has state inputs, so calibration cannot feed frames alone: :func:`calibration_feeds`
streams the calibration frames through the fp32 graph exactly as the runtime does
(:func:`vdeblur.export.onnx.stream_onnx`) and records each step's complete input dict (frame,
flush flag, states), which the calibrators then replay.

Which nodes are sensitive (kept float32), found by op types and the dataflow between them:

1. motion search: every ArgMax/ArgMin/TopK and the backward cone of its input up to (not
   through) learned layers (Conv, ConvTranspose, Gemm, MatMul with a weight initializer): for
   vdeblur's correlation_argmax that is the L2 normalisation, the correlation MatMuls and their
   pad/reshape/slice plumbing, and the AveragePool;
2. flow arithmetic: every GridSample and the backward cone of its grid input up to learned
   layers: grid construction (Range, Add, Mul...), the flow from the argmax (Mod/Div/Cast...),
   its nearest upsampling and scaling;
3. normalisations and softmax normalisers: Softmax-like ops, normalisation ops, reductions,
   Exp/Log/Pow/Sqrt/Reciprocal, plus the elementwise chain from a reduction to the Div/Mul that
   applies it (``x / max(||x||, eps)``, ``exp(x) / sum``);
4. pure data movement (Concat, Where, Slice, Reshape...) whose float inputs are all float32
   already (graph inputs, or nodes of 1-4): lowering it gains nothing and would round states
   that feed the motion search (MTU's motion-feature state) or the frame history;
5. recurrences: a node with a subgraph (the ONNX Scan of a clip graph's propagation over time,
   DSTNet's backward and forward passes) stays float32 as a whole, with the nodes producing the
   outer values its body reads by name: error would compound over the frames of a window, and
   the body's weights are shared with nothing else.

The exporter's per-node metadata (``pkg.torch.onnx.stack_trace``) is checked too: a node traced
from ``vdeblur/plugins/*/reference.py`` is sensitive. With torch 2.13 the recorded stack holds the
``nn.Module.forward`` frames only (the innermost one is the call site in the model file), so the
dataflow rules are the signal that finds these nodes; the metadata rule is a safety net for
exporters that record the full stack. In a graph of the ``trt`` lowering, plugin nodes (domain
``vdeblur``) are kept float32 as well.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vdeblur.contract.device import nvidia_device_present
from vdeblur.contract.precision import PLUGIN_DOMAIN, PRECISIONS, int8_weight_range, onnx_nodes
from vdeblur.errors import ExportError, UsageError, missing_dependency
from vdeblur.export.stepgraph import ClipSpec, StepSpec

QUANTIZERS = ("onnxruntime", "modelopt")
INT8_WEIGHTS = ("reduced", "full")  # 7-bit weights (right on every CPU) or 8-bit (VNNI / ARM64 only)

# Conv, ConvTranspose, MaxPool accept tensor(bfloat16) from opset 22 on.
BF16_MIN_OPSET = 22
_LOW_TYPES = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
_FLOAT = TensorProto.FLOAT
_FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
_FP16_MAX = 65504.0

# Layers with learned weights: the boundary of the dataflow cones.
_LEARNED = frozenset({"Conv", "ConvTranspose", "Gemm", "ConvInteger", "QLinearConv", "QLinearMatMul"})
# Ops kept in float32 wherever they are.
_SELECT_OPS = frozenset({"ArgMax", "ArgMin", "TopK"})
_WARP_OPS = frozenset({"GridSample"})
# Plugin nodes of the trt lowering (vdeblur/plugins): motion search (cone of every input) and warps
# (cone of the flow, input 1).
_PLUGIN_SEARCH = frozenset({"Correlation", "CorrelationArgmax"})
_PLUGIN_WARP = frozenset({"FlowWarp"})
_REDUCTIONS = frozenset({
    "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ReduceSum",
    "ReduceMean", "ReduceProd", "ReduceMax", "ReduceMin",
})
_NORMALISERS = frozenset({
    "Softmax", "LogSoftmax", "Hardmax", "LpNormalization", "InstanceNormalization", "LayerNormalization",
    "GroupNormalization", "MeanVarianceNormalization",
})
_TRANSCENDENTAL = frozenset({"Exp", "Log", "Pow", "Sqrt", "Reciprocal"})
_ALWAYS_FP32 = _SELECT_OPS | _WARP_OPS | _REDUCTIONS | _NORMALISERS | _TRANSCENDENTAL | {"Range", "CumSum"}
# Elementwise steps between a reduction and the Div/Mul that applies it.
_NORM_PASS = frozenset({"Clip", "Max", "Min", "Add", "Sub", "Expand", "Unsqueeze", "Squeeze", "Reshape",
                        "Sqrt", "Reciprocal", "Cast", "Identity"})
_NORM_APPLY = frozenset({"Div", "Mul"})
# Ops that only move or select data.
_DATA_MOVEMENT = frozenset({
    "Concat", "Where", "Slice", "Split", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity",
    "Expand", "Gather", "GatherElements", "GatherND", "Tile", "Flatten", "Pad", "DepthToSpace", "SpaceToDepth",
})
# Inputs that must be float32 whatever the node's precision (tensor(float) in the op schema).
_FP32_SLOTS = {"Resize": (1, 2), "Upsample": (1,)}
# Ops whose input may have any type (no Cast needed in front of them).
_ANY_INPUT = frozenset({"Cast", "Shape", "Size"})
_PLUGIN_TRACE = re.compile(r"vdeblur[/\\]plugins[/\\][A-Za-z0-9_]+[/\\]reference\.py")


@dataclass
class PrecisionResult:
    """What :func:`convert` wrote.

    precision: one of PRECISIONS; file: the ONNX written; kept_fp32: names of the nodes that compute
    in float32 in a reduced-precision graph (what the manifest records); method: how it was made
    ("fp32-copy", "mixed-fp16", "mixed-bf16", "ort-qdq-static", "modelopt-int8", "modelopt-fp8");
    runs_on_ort_cpu: whether ONNX Runtime's CPU provider can run the file; notes: caveats.
    """

    precision: str
    file: str
    kept_fp32: list[str] = field(default_factory=list)
    method: str = ""
    runs_on_ort_cpu: bool = True
    notes: str = ""
    quantization: dict[str, Any] | None = None  # int8/fp8: weight/activation types, weight bits


def convert(
    src: str | Path,
    dst: str | Path,
    precision: str,
    spec: StepSpec | ClipSpec,
    calibration: np.ndarray | None = None,
    quantizer: str = "onnxruntime",
    int8_weights: str = "reduced",
) -> PrecisionResult:
    """Write the ``precision`` variant of the fp32 portable step graph ``src`` to ``dst``.

    calibration: float32 frames (T, 3, H, W) in [0, 1] at the size to calibrate at (padded to
    ``spec.pad_multiple`` here, as the runtime does); required for int8 and fp8.
    quantizer: "onnxruntime" (int8, CPU path) or "modelopt" (int8 / fp8 for TensorRT). fp16 and
    bf16 ignore it. Graph inputs and outputs stay float32 in every variant.
    int8_weights: "reduced" (7-bit weights, right on every CPU, the default) or "full" (8-bit,
    for VNNI x86 and ARM64 CPUs); onnxruntime quantizer only.

    Raises UsageError (unknown precision or quantizer, missing file, graph and spec disagree, no or
    malformed calibration frames, fp8 with the onnxruntime quantizer, int8 of a trt-lowered graph),
    MissingDependencyError (modelopt absent: extra ``[quant]``), ExportError (a transform failed).
    """
    if precision not in PRECISIONS:
        raise UsageError(f"precision: {precision!r} is unknown. Expected one of {', '.join(PRECISIONS)}.")
    if quantizer not in QUANTIZERS:
        raise UsageError(f"quantizer: {quantizer!r} is unknown. Expected one of {', '.join(QUANTIZERS)}.")
    if int8_weights not in INT8_WEIGHTS:
        raise UsageError(f"int8 weights: {int8_weights!r} is unknown. Expected one of {', '.join(INT8_WEIGHTS)}.")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise UsageError(f"{src}: no such file. Expected the fp32 step graph written by the export.")
    model = _load(src)
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    if names != (spec.input_names, spec.output_names):
        raise UsageError(
            f"{src}: has inputs {names[0]} and outputs {names[1]}, the spec says {spec.input_names} and "
            f"{spec.output_names}. Pass the StepSpec the graph was exported with."
        )
    if precision == "fp32":
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        return PrecisionResult("fp32", str(dst), [], "fp32-copy", True, "the reference: every node is float32")
    if precision in _LOW_TYPES:
        keep = set(sensitive_nodes(model))
        out = mixed_precision(model, precision, keep)
        kept = float32_nodes(out)
        onnx.save(out, str(dst))
        runs, why = _ort_cpu_check(dst)
        notes = f"{len(kept)} nodes kept float32; graph inputs and outputs float32"
        if runs and precision == "fp16":
            notes += ("; no speed-up on ONNX Runtime CPU, which casts fp16 nodes lacking CPU kernels to float32 "
                      "(the gain is on GPU backends)")
        if not runs:
            notes += f"; ONNX Runtime CPU cannot run it ({why}): build it for TensorRT"
        return PrecisionResult(precision, str(dst), kept, f"mixed-{precision}", runs, notes)
    # int8 / fp8
    frames = _check_calibration(calibration, precision)
    if precision == "fp8" and quantizer == "onnxruntime":
        raise UsageError(
            "fp8: the onnxruntime quantizer does not make fp8 graphs (no CPU runtime executes them). "
            "Use quantizer='modelopt' (pip install 'vdeblur[quant]'), which builds them for TensorRT."
        )
    if any(n.domain not in ("", "ai.onnx") for n in onnx_nodes(model.graph)):
        raise UsageError(
            f"{src}: has plugin nodes (trt lowering); calibration runs the graph on ONNX Runtime. "
            "Quantise the portable export (lowering='portable')."
        )
    if quantizer == "onnxruntime":
        return _quantize_ort(src, dst, model, spec, frames, int8_weights)
    return _quantize_modelopt(src, dst, model, spec, frames, precision)


# --------------------------------------------------------------------------------------------
# Sensitive nodes
# --------------------------------------------------------------------------------------------


def sensitive_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that must stay float32 (rules 1-4 of the module docstring), in graph order.

    Includes nodes that compute no float tensor (shape arithmetic inside a cone); see
    :func:`float32_nodes` for the list a converted graph reports.
    """
    graph = model.graph
    nodes = list(graph.node)
    initializers = {i.name for i in graph.initializer}
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(nodes):
        for name in n.input:
            if name:
                consumers[name].append(i)

    keep: set[int] = set()
    for i, n in enumerate(nodes):
        if n.op_type in _ALWAYS_FP32 or n.domain not in ("", "ai.onnx") or _traced_from_plugin(n):
            keep.add(i)
        implicit = _implicit_inputs(n)
        if implicit or _subgraphs(n):  # 5. a recurrence (Scan/Loop body) stays float32 as a whole
            keep.add(i)
            keep.update(producer[x] for x in implicit if x in producer)

    def is_learned(i: int) -> bool:
        n = nodes[i]
        return n.op_type in _LEARNED or (n.op_type == "MatMul" and any(x in initializers for x in n.input))

    def backward_cone(start: Iterable[str]) -> set[int]:
        cone: set[int] = set()
        stack = [s for s in start if s in producer]
        while stack:
            j = producer[stack.pop()]
            if j in cone or is_learned(j):
                continue
            cone.add(j)
            stack.extend(x for x in nodes[j].input if x in producer)
        return cone

    for n in nodes:
        if n.op_type in _SELECT_OPS:  # 1. motion search
            keep |= backward_cone(n.input[:1])
        elif n.op_type in _PLUGIN_SEARCH and n.domain == PLUGIN_DOMAIN:
            keep |= backward_cone(n.input)
        elif (n.op_type in _WARP_OPS or (n.op_type in _PLUGIN_WARP and n.domain == PLUGIN_DOMAIN)) \
                and len(n.input) > 1:  # 2. flow arithmetic
            keep |= backward_cone(n.input[1:2])

    # 3. normaliser tails: reduction -> elementwise steps -> the Div/Mul that applies it.
    seeds = [i for i, n in enumerate(nodes) if n.op_type in _REDUCTIONS | _TRANSCENDENTAL]
    for seed in seeds:
        stack: list[tuple[int, tuple[int, ...]]] = [(seed, ())]
        while stack:
            j, path = stack.pop()
            for out in nodes[j].output:
                for c in consumers.get(out, []):
                    op = nodes[c].op_type
                    if op in _NORM_APPLY:
                        keep.update((*path, c))
                    elif op in _NORM_PASS and len(path) < 4:
                        stack.append((c, (*path, c)))

    # 4. data movement fed only by float32 values (graph order is topological).
    types = _elem_types(model)
    fp32_values = {i.name for i in graph.input}
    for i, n in enumerate(nodes):
        if i in keep:
            fp32_values.update(n.output)
            continue
        float_in = [x for x in n.input if x and x not in initializers and types.get(x) == _FLOAT]
        if n.op_type in _DATA_MOVEMENT and float_in and all(x in fp32_values for x in float_in):
            keep.add(i)
            fp32_values.update(n.output)
    return [nodes[i].name for i in sorted(keep)]


def float32_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes of a (mixed-precision) graph that compute in float32: a float32 input or output,
    Cast nodes inserted by the conversion excluded."""
    types = _elem_types(model)
    names = []
    for n in model.graph.node:
        if n.op_type in _ANY_INPUT or n.op_type == "Constant":
            continue
        outs = [types.get(x) for x in n.output if x and types.get(x) in _FLOAT_TYPES]
        ins = [types.get(x) for k, x in enumerate(n.input)
               if x and k not in _FP32_SLOTS.get(n.op_type, ()) and types.get(x) in _FLOAT_TYPES]
        if _FLOAT in (outs or ins):
            names.append(n.name)
    return names


def _traced_from_plugin(node: onnx.NodeProto) -> bool:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.stack_trace" and _PLUGIN_TRACE.search(p.value):
            return True
    return False


# --------------------------------------------------------------------------------------------
# fp16 / bf16
# --------------------------------------------------------------------------------------------


def mixed_precision(model: onnx.ModelProto, precision: str, keep: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` computing in ``precision`` ("fp16" | "bf16") except the nodes named in
    ``keep``, with Cast nodes at every float32/low boundary. Graph inputs and outputs keep their
    float32 type; float initializers used only by low-precision nodes are stored in the low type
    (fp16 values clipped to +-65504)."""
    if precision not in _LOW_TYPES:
        raise UsageError(f"mixed_precision: {precision!r} is not a low-precision float. Expected fp16 or bf16.")
    low = _LOW_TYPES[precision]
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if precision == "bf16" and _opset(model) < BF16_MIN_OPSET:
        model = _upgrade_opset(model, BF16_MIN_OPSET)
    _name_nodes(model)
    graph = model.graph
    types = _elem_types(model)
    keep = set(keep)
    nodes = list(graph.node)
    inits = {i.name: i for i in graph.initializer}
    # A node's inputs, and the outer values its subgraphs read (a Scan body reads weights by name).
    ins = {n.name: [*n.input, *_implicit_inputs(n)] for n in nodes}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in nodes:
        for x in ins[n.name]:
            if x:
                consumers[x].append(n)
    subgraph_nodes = [n for n in nodes if _subgraphs(n)]
    lowered_loops = [n.name for n in subgraph_nodes if n.name not in keep]
    if lowered_loops:
        raise ExportError(f"{precision}: nodes {lowered_loops} hold subgraphs and are not kept in float32. "
                          "Expected sensitive_nodes() to keep them.")

    def float_slot(n: onnx.NodeProto, k: int) -> bool:
        return n.op_type not in _ANY_INPUT and types.get(ins[n.name][k]) == _FLOAT

    def wants(n: onnx.NodeProto, k: int) -> int:
        if lowered[n.name] and k not in _FP32_SLOTS.get(n.op_type, ()):
            return low
        return _FLOAT

    lowered = {n.name: n.name not in keep for n in nodes}
    for n in nodes:  # a Constant follows its consumers
        if n.op_type == "Constant":
            outs = [c for c in consumers.get(n.output[0], [])]
            lowered[n.name] = bool(outs) and all(
                wants(c, k) == low for c in outs for k, x in enumerate(ins[c.name]) if x == n.output[0]
            )

    # The dtype each float value is produced in.
    dtype: dict[str, int] = {}
    for n in nodes:
        for out in n.output:
            if types.get(out) == _FLOAT:
                dtype[out] = low if lowered[n.name] else _FLOAT
        if lowered[n.name]:
            _lower_attributes(n, low)
    for name, init in inits.items():
        if init.data_type != _FLOAT:
            continue
        slots = [(c, k) for c in consumers.get(name, []) for k, x in enumerate(ins[c.name]) if x == name]
        if slots and all(wants(c, k) == low for c, k in slots if float_slot(c, k)):
            init.CopyFrom(_convert_tensor(init, low, name))
            dtype[name] = low
        else:
            dtype[name] = _FLOAT
    for i in graph.input:
        if types.get(i.name) == _FLOAT:
            dtype[i.name] = _FLOAT

    # Graph outputs produced in the low type: rename the internal value, cast back at the end.
    out_casts = []
    for o in graph.output:
        if dtype.get(o.name) == low and o.name not in inits:
            inner = f"{o.name}__{precision}"
            for n in nodes:
                n.output[:] = [inner if x == o.name else x for x in n.output]
                n.input[:] = [inner if x == o.name else x for x in n.input]
            dtype[inner] = low
            out_casts.append(helper.make_node("Cast", [inner], [o.name], to=_FLOAT, name=f"cast_out_{o.name}"))

    new_nodes: list[onnx.NodeProto] = []
    converted: dict[tuple[str, int], str] = {}
    suffix: dict[int, str] = {int(low): precision, int(_FLOAT): "fp32"}
    for n in nodes:
        for k, x in enumerate(n.input):
            if not x or x not in dtype or n.op_type in _ANY_INPUT:
                continue
            want = wants(n, k)
            if dtype[x] == want:
                continue
            key = (x, want)
            if key not in converted:
                name = f"{x}__{suffix[want]}"
                converted[key] = name
                if x in inits:
                    graph.initializer.append(_convert_tensor(inits[x], want, name))
                else:
                    new_nodes.append(helper.make_node("Cast", [x], [name], to=want, name=f"cast_{name}"))
            n.input[k] = converted[key]
        new_nodes.append(n)
    new_nodes.extend(out_casts)
    low_refs = [x for n in subgraph_nodes for x in ins[n.name][len(n.input):] if dtype.get(x) == low]
    if low_refs:
        raise ExportError(f"{precision}: subgraphs read {sorted(set(low_refs))}, which would be {precision}. "
                          "Expected their producers kept in float32 (sensitive_nodes).")
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    _seed_plugin_types(model)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(
            f"{precision}: the converted graph is invalid ({str(e).splitlines()[0]}). "
            "Report the graph; convert with precision='fp32' meanwhile."
        ) from e
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _upgrade_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, opset)
    except Exception as e:  # the converter raises RuntimeError / ConvertError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"bf16: cannot raise the graph to opset {opset} ({first}). Conv/ConvTranspose/MaxPool take "
            f"bfloat16 from opset {opset} on: export with opset={opset}."
        ) from e


def _lower_attributes(node: onnx.NodeProto, low: int) -> None:
    """Type-bearing attributes of a node that now computes in ``low``. A ConstantOfShape without a
    ``value`` makes float32 zeros (the ONNX default): it gets an explicit zero of the low type."""
    if node.op_type == "ConstantOfShape" and not any(a.name == "value" for a in node.attribute):
        node.attribute.append(helper.make_attribute("value", _convert_tensor(
            numpy_helper.from_array(np.zeros(1, np.float32)), low, "value")))
    for a in node.attribute:
        if node.op_type == "Cast" and a.name == "to" and a.i == _FLOAT:
            a.i = low
        elif node.op_type in ("Constant", "ConstantOfShape") and a.name == "value" and a.t.data_type == _FLOAT:
            a.t.CopyFrom(_convert_tensor(a.t, low, a.t.name))


def _convert_tensor(t: onnx.TensorProto, to: int, name: str) -> onnx.TensorProto:
    arr = numpy_helper.to_array(t)
    if to == _FLOAT:
        return numpy_helper.from_array(arr.astype(np.float32), name)
    if to == TensorProto.FLOAT16:
        finite = np.isfinite(arr)
        arr = np.where(finite, np.clip(arr, -_FP16_MAX, _FP16_MAX), arr)
        return numpy_helper.from_array(arr.astype(np.float16), name)
    import ml_dtypes  # a dependency of onnx

    return numpy_helper.from_array(arr.astype(np.float32).astype(ml_dtypes.bfloat16), name)


def _ort_cpu_check(path: Path) -> tuple[bool, str]:
    """Whether ONNX Runtime's CPU provider can load ``path`` (kernels exist for every node)."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # NOT_IMPLEMENTED / INVALID_GRAPH...: the reason goes into the notes
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return False, first[:300]
    return True, ""


# --------------------------------------------------------------------------------------------
# int8 / fp8
# --------------------------------------------------------------------------------------------


def calibration_feeds(session: Any, spec: StepSpec | ClipSpec, frames: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Every step's input dict when ``frames`` (T, 3, H, W) or (N, T, 3, H, W) stream through
    ``session`` (the fp32 graph) with the one driver (:func:`vdeblur.contract.driver.drive`): padded
    to ``spec.pad_multiple``, states fed back, flush steps included. Returns T + flush.steps dicts.
    Clip graphs: one dict per window the runtime would run (:func:`drive_clip`)."""
    from vdeblur.contract.driver import drive_spec, runner

    x = frames[None] if frames.ndim == 4 else frames
    feeds_all: list[dict[str, np.ndarray]] = []
    drive_spec(runner(session, spec, record=feeds_all.append), spec, np.asarray(x, dtype=np.float32))
    return feeds_all


class StepCalibrationReader:
    """A calibration data reader (ONNX Runtime's get_next / rewind, ModelOpt's get_first) over
    recorded step feeds, one dict per step."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def get_first(self) -> dict[str, np.ndarray]:
        """The first sample without advancing (ModelOpt's readers have it)."""
        return self.feeds[0]

    def rewind(self) -> None:
        self._it = iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.feeds)


def _ort_reader(feeds: list[dict[str, np.ndarray]]) -> Any:
    """StepCalibrationReader registered as a subclass of ORT's CalibrationDataReader."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(StepCalibrationReader, CalibrationDataReader):
        pass

    return _Reader(feeds)


def _check_calibration(calibration: np.ndarray | None, precision: str) -> np.ndarray:
    if calibration is None:
        raise UsageError(
            f"{precision}: no calibration frames. Pass calibration=frames, float32 (T, 3, H, W) in [0, 1] "
            "(real frames, e.g. vdeblur.runtime.video.load_frames)."
        )
    frames = np.asarray(calibration)
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] < 1:
        raise UsageError(
            f"{precision}: calibration frames have shape {frames.shape}. Expected (T, 3, H, W) with T >= 1."
        )
    if not np.issubdtype(frames.dtype, np.floating):
        raise UsageError(f"{precision}: calibration frames are {frames.dtype}. Expected float32 in [0, 1].")
    return frames.astype(np.float32, copy=False)


def _quantize_ort(
    src: Path, dst: Path, model: onnx.ModelProto, spec: StepSpec | ClipSpec, frames: np.ndarray,
    weights: str = "reduced",
) -> PrecisionResult:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from vdeblur.export.onnx import ort_session

    keep = sensitive_nodes(model)
    feeds = calibration_feeds(ort_session(src), spec, frames)
    with tempfile.TemporaryDirectory(prefix="vdeblur-int8-") as tmp:
        named = Path(tmp) / "named.onnx"
        work = onnx.ModelProto.FromString(model.SerializeToString())
        _name_nodes(work)
        onnx.save(work, str(named))
        try:
            with _quiet_preprocess_hint():
                quantize_static(
                    str(named), str(Path(tmp) / "int8.onnx"), _ort_reader(feeds),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "ConvTranspose"],
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    reduce_range=weights == "reduced",
                    nodes_to_exclude=keep, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                )
        except Exception as e:  # the quantizer raises many types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            hint = "Check that the fp32 graph runs on ONNX Runtime."
            if "modelopt" in sys.modules:  # ModelOpt monkey-patches onnxruntime.quantization on import
                hint = ("ModelOpt, imported in this process, patches onnxruntime.quantization: run the "
                        "onnxruntime quantizer in a process that does not import modelopt.")
            raise ExportError(f"int8: onnxruntime quantize_static failed ({first}). {hint}") from e
        quantized = onnx.load(str(Path(tmp) / "int8.onnx"))
    _bypass_qdq(quantized, set(keep))
    onnx.save(quantized, str(dst))
    _check_io_float32(quantized, "int8")
    n_q = sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    runs, why = _ort_cpu_check(dst)
    kept = [n for n in float32_nodes(quantized) if n in set(keep)]
    bits = 7 if weights == "reduced" else 8
    notes = (f"QDQ int8 ({bits}-bit per-channel weights, uint8 activations) on Conv/ConvTranspose; {n_q} Q nodes; "
             f"calibrated on {len(feeds)} steps ({frames.shape[0]} frames at {frames.shape[2]}x{frames.shape[3]}) "
             f"with their streamed states; {len(kept)} sensitive nodes excluded")
    if not runs:
        notes += f"; ONNX Runtime CPU cannot run it ({why})"
    quantization = {"weights": "int8 per-channel symmetric", "weight_bits": bits, "activations": "uint8",
                    "max_abs_weight": int8_weight_range(quantized),
                    "right_on": "every CPU" if bits == 7 else "x86-64 with VNNI (AVX512-VNNI, AVX-VNNI) and ARM64"}
    return PrecisionResult("int8", str(dst), kept, "ort-qdq-static", runs, notes, quantization)



def _bypass_qdq(model: onnx.ModelProto, names: set[str]) -> int:
    """Feed the nodes in ``names`` the float tensor itself where the quantizer gave them its
    QuantizeLinear -> DequantizeLinear copy (a tensor shared with a quantised Conv gets one Q/DQ
    pair for all its consumers). Returns the number of inputs rewired."""
    producer = {o: n for n in model.graph.node for o in n.output}
    rewired = 0
    for node in model.graph.node:
        if node.name not in names:
            continue
        for k, x in enumerate(node.input):
            dq = producer.get(x)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]
                rewired += 1
    return rewired


@contextlib.contextmanager
def _quiet_preprocess_hint() -> Iterator[None]:
    """Hide quantize_static's root-logger hint to run its pre-processing (symbolic shape inference
    and graph optimisation): the optimiser renames and fuses nodes, which would break
    ``nodes_to_exclude``, so it is skipped on purpose."""

    class _Hint(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-process" not in record.getMessage()

    root = logging.getLogger()
    hint = _Hint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def modelopt_arguments(
    src: str | Path, dst: str | Path, precision: str, reader: Any, exclude: Iterable[str]
) -> dict[str, Any]:
    """Keyword arguments of ``modelopt.onnx.quantization.quantize`` for an int8 / fp8 step graph.

    ``nodes_to_exclude`` takes regular expressions (``re.match``): names are escaped and anchored.
    The non-quantised nodes stay float32 (``high_precision_dtype="fp32"``) so the sensitive ones
    keep the policy; graph I/O types are kept (``direct_io_types=False``).
    """
    if precision not in ("int8", "fp8"):
        raise UsageError(f"modelopt: precision {precision!r} is not quantised. Expected int8 or fp8.")
    return {
        "onnx_path": str(src),
        "quantize_mode": precision,
        "calibration_data_reader": reader,
        "calibration_method": "max" if precision == "fp8" else "entropy",
        "calibration_eps": _modelopt_eps(),
        "nodes_to_exclude": [re.escape(name) + "$" for name in exclude],
        "high_precision_dtype": "fp32",
        "direct_io_types": False,
        "output_path": str(dst),
        "log_level": "WARNING",
    }


def _modelopt_eps() -> list[str]:
    """Calibration providers for ModelOpt: CUDA first when a GPU is visible, then CPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", None) not in ("", "-1")
    try:
        import onnxruntime as ort

        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers() and visible and nvidia_device_present()
    except ImportError:
        has_cuda = False
    return ["cuda:0", "cpu"] if has_cuda else ["cpu"]


def _quantize_modelopt(
    src: Path, dst: Path, model: onnx.ModelProto, spec: StepSpec | ClipSpec, frames: np.ndarray, precision: str
) -> PrecisionResult:
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as e:
        raise missing_dependency("modelopt", "quant", f"{precision} quantisation for TensorRT") from e
    from vdeblur.export.onnx import ort_session

    keep = sensitive_nodes(model)
    feeds = calibration_feeds(ort_session(src), spec, frames)
    with tempfile.TemporaryDirectory(prefix=f"vdeblur-{precision}-") as tmp:
        named = Path(tmp) / "named.onnx"
        work = onnx.ModelProto.FromString(model.SerializeToString())
        _name_nodes(work)
        onnx.save(work, str(named))
        try:
            quantize(**modelopt_arguments(named, dst, precision, _ort_reader(feeds), keep))
        except Exception as e:  # ModelOpt raises many types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"{precision}: modelopt quantisation failed ({first}).") from e
    quantized = onnx.load(str(dst))
    _check_io_float32(quantized, precision)
    runs, why = _ort_cpu_check(dst)
    notes = f"ModelOpt {precision} Q/DQ for TensorRT, calibrated on {len(feeds)} streamed steps"
    if not runs:
        notes += f"; ONNX Runtime CPU cannot run it ({why})"
    kept = [n for n in float32_nodes(quantized) if n in set(keep)]
    return PrecisionResult(precision, str(dst), kept, f"modelopt-{precision}", runs, notes)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as e:  # DecodeError and friends
        raise UsageError(f"{path}: is not an ONNX model ({type(e).__name__}). Expected an exported step graph.") from e


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The subgraphs of a node (the body of a Scan or Loop, the branches of an If)."""
    out: list[onnx.GraphProto] = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def _implicit_inputs(node: onnx.NodeProto) -> list[str]:
    """The outer-scope values a node's subgraphs read by name (not passed as inputs), in order."""
    names: list[str] = []

    def walk(g: onnx.GraphProto, defined: set[str]) -> None:
        defined = defined | {i.name for i in g.input} | {i.name for i in g.initializer}
        for n in g.node:
            names.extend(x for x in n.input if x and x not in defined)
            for sub in _subgraphs(n):
                walk(sub, defined)
            defined |= set(n.output)

    for sub in _subgraphs(node):
        walk(sub, set())
    return list(dict.fromkeys(names))


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (the quantizers and kept_fp32 refer to names)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value of a flat graph; plugin outputs are taken as float32."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    _seed_plugin_types(m)
    m = onnx.shape_inference.infer_shapes(m)
    types = {v.name: v.type.tensor_type.elem_type for v in [*m.graph.input, *m.graph.output, *m.graph.value_info]}
    types.update({i.name: i.data_type for i in m.graph.initializer})
    for n in m.graph.node:
        if n.op_type == "Constant" and n.output[0] not in types:
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def _seed_plugin_types(model: onnx.ModelProto) -> None:
    """Declare the outputs of custom-domain (plugin) nodes float32 in value_info, so that shape
    inference can type what follows them (the plugins compute, and are kept, in float32)."""
    known = {v.name for v in [*model.graph.input, *model.graph.output, *model.graph.value_info]}
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx"):
            model.graph.value_info.extend(
                helper.make_tensor_value_info(o, _FLOAT, None) for o in n.output if o and o not in known
            )


def _check_io_float32(model: onnx.ModelProto, precision: str) -> None:
    for v in [*model.graph.input, *model.graph.output]:
        t = v.type.tensor_type.elem_type
        if t in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
            raise ExportError(
                f"{precision}: graph input/output {v.name} became {TensorProto.DataType.Name(t)}. "
                "Expected float32 interfaces (the manifest interface is unchanged)."
            )
