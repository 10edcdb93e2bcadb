"""`vdeblur triton-repo`: a step artifact as a model of a Triton Inference Server model repository.

:func:`write_triton_repo` writes ``<out>/<name>/config.pbtxt`` and ``<out>/<name>/1/model.onnx``
(backend ``onnxruntime``) or ``<out>/<name>/1/model.plan`` (backend ``tensorrt``, built here on the
GPU and with the TensorRT that the Triton server will use). The model speaks what ``vdeblur serve``
speaks, so one tritonclient client works against both:

- input ``FRAME`` UINT8 (N, H, W, 3) RGB (config dims ``[-1, -1, 3]``, or ``[H, W, 3]`` for a model
  of one frame size; Triton prepends N, a client sends (1, H, W, 3)); output ``FRAME_OUT`` UINT8
  (N, H, W, 3);
- control input ``START`` (CONTROL_SEQUENCE_START, int32 0/1, (N, 1)): the graph starts every state
  from the manifest's initial value where it is 1;
- input ``FLUSH`` INT32 (N, 1) (a client sends (1, 1)), only when the manifest's flush has a flag
  input: 1 on flush requests;
- implicit state (``sequence_batching.state``): ``STATE_IN_<i>`` / ``STATE_OUT_<i>``, one pair per
  manifest state, in manifest order; dims are the state shape without N, -1 for the dims that
  follow the frame size (Hp, Wp, Hp/k) unless the size is fixed; a state of shape (N,) is (N, 1)
  here (dims ``[1]``). No ``initial_state``: Triton refuses variable dims there, and gives the START
  request uninitialised state data (with every variable dim 1), so the graph builds the initial
  value itself from the FRAME's padded size (the manifest's shape grammar) and selects it with
  ``Where(START, initial, state)``.

Batching: with variable dims a starting sequence's state (dims 1) cannot be concatenated with the
states of running sequences (Triton's backends build a batch tensor by its first request's shape),
so a model of any frame size runs one sequence per execution (``max_batch_size`` 0 or 1); a model of
one frame size (``height``, ``width``) has fixed dims and batches up to ``max_batch_size`` sequences
(``oldest`` strategy). A step graph exported with a fixed batch of 1 runs once per batch row inside
an ONNX ``Loop``.

The ONNX model is a wrapper built with the ``onnx`` package around the artifact's step graph:
uint8 NHWC -> float32 NCHW / 255, padded at the bottom and the right to the pad multiple (pad mode
of the manifest), the step, then the output cropped, clipped to [0, 1], ``floor(x * 255 + 0.5)``
as uint8 NHWC: the arithmetic of :class:`vdeblur.runtime.stream.Stream`, so the frames are the same.

What Triton cannot express is left to the client, and the config says it in ``parameters``:
``vdeblur_lookahead`` L (the response to request k is the output of frame k - L: drop the first L
responses), ``vdeblur_flush_steps`` (after the last frame, send that many more requests repeating
it, with ``vdeblur_flush_input`` = ``FLUSH`` set to 1 when it is not empty, and keep the first L
of their outputs), ``vdeblur_pad_multiple`` and ``vdeblur_version``. Clip artifacts (DSTNet...)
need windows of frames, which the sequence batcher cannot give: they are refused (``vdeblur serve``
runs them). See docs/triton.md.

:func:`check_config` checks a parsed config against the load-time rules of Triton that the
protobuf parse does not catch (and against the ONNX graph when given); :func:`read_config` parses
a ``config.pbtxt``. Torch-free; tritonclient (extra ``[serve]``) and TensorRT import lazily.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur import __version__
from vdeblur.contract.files import publish_dir
from vdeblur.contract.interface import StepSpec, parse_dim
from vdeblur.errors import BackendError, ExportError, UsageError, missing_dependency
from vdeblur.runtime.backends.base import Interface

__all__ = ["BACKENDS", "FLUSH", "FRAME", "FRAME_OUT", "PARAMETERS", "START", "build_wrapper", "candidates",
           "check_config", "check_model_name", "config_text", "read_config", "state_names", "write_triton_repo"]

FRAME, FRAME_OUT, START, FLUSH = "FRAME", "FRAME_OUT", "START", "FLUSH"
BACKENDS = ("onnxruntime", "tensorrt")
# The config parameters the client reads (string values).
PARAMETERS = ("vdeblur_lookahead", "vdeblur_flush_steps", "vdeblur_flush_input", "vdeblur_pad_multiple",
              "vdeblur_version")
CONFIG = "config.pbtxt"
VERSION = "1"
IDLE_MICROSECONDS = 60_000_000  # a sequence without a request for 60 s is released
QUEUE_DELAY_MICROSECONDS = 1000  # how long the batcher waits to fill a preferred batch
MIN_OPSET = 13  # Squeeze/Unsqueeze with axes inputs, Pad with a pads input
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # fullmatch
_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64"}
_PAD_MODES = {"replicate": "edge", "reflect": "reflect", "zeros": "constant"}


def _model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise missing_dependency("tritonclient", "serve", "writing and checking a Triton model configuration") from e
    return model_config_pb2


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def state_names(count: int) -> list[tuple[str, str]]:
    """The (input, output) names of ``count`` states: ``STATE_IN_00``/``STATE_OUT_00``...: fixed width,
    so no name is a prefix of another."""
    width = max(2, len(str(max(count - 1, 0))))
    return [(f"STATE_IN_{i:0{width}d}", f"STATE_OUT_{i:0{width}d}") for i in range(count)]


def check_model_name(name: str) -> str:
    """A Triton model name is its directory's name: letters, digits, ``_ . -``, not starting with ``.``
    or ``-``. Returns it; UsageError otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"model name {name!r}: is not a usable directory name. Expected letters, digits, '_', '.' "
                         "or '-', not starting with '.' or '-' (pass --name).")
    return name


# --------------------------------------------------------------------------------------------
# The wrapper graph
# --------------------------------------------------------------------------------------------


class _Builder:
    """Nodes and constants of one graph (the wrapper, or the Loop body), with unique names."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}{hint}_{self._n}"

    def const(self, value: Any, dtype: Any = np.int64, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, out: str | None = None,
           **attrs: Any) -> str:
        from onnx import helper

        out = out or self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self.name(f"node_{op_type}"), **attrs))
        return out


def add_prefix(model: Any, prefix: str) -> Any:
    """A copy of ``model`` with ``prefix`` before every value and node name, in its subgraphs too.

    ``onnx.compose.add_prefix`` (1.23) renames a subgraph before it has collected the outer graph's
    initializers and value_info, so a Scan/Loop/If body that reads an outer initializer keeps the old
    name and the model no longer checks (ARVo's Scans read the outer weights). The rename here is
    uniform: every non-empty name at every level gets the prefix, so outer references stay bound.
    Local functions are their own scope and are kept as they are.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)

    def name(value: str) -> str:
        return prefix + value if value else value

    def graph(g: Any) -> None:
        for v in (*g.input, *g.output, *g.value_info, *g.initializer):
            v.name = name(v.name)
        for sparse in g.sparse_initializer:
            sparse.values.name = name(sparse.values.name)
            sparse.indices.name = name(sparse.indices.name)
        for node in g.node:
            node.name = name(node.name)
            node.input[:] = [name(i) for i in node.input]
            node.output[:] = [name(o) for o in node.output]
            for attr in node.attribute:
                if attr.HasField("g"):
                    graph(attr.g)
                for sub in attr.graphs:
                    graph(sub)

    graph(out.graph)
    return out


def _elem_types(values: Sequence[Any]) -> dict[str, int]:
    return {v.name: v.type.tensor_type.elem_type for v in values}


def _static_batch(value: Any) -> bool:
    dims = value.type.tensor_type.shape.dim
    return len(dims) > 0 and dims[0].HasField("dim_value") and dims[0].dim_value == 1


def build_wrapper(step_model: Any, spec: StepSpec, max_batch_size: int = 8,
                  frame_size: tuple[int, int] | None = None) -> tuple[Any, dict[str, Any]]:
    """The Triton model around a step graph: (onnx.ModelProto, facts about it).

    step_model: the artifact's step graph (``onnx.ModelProto``, inputs ``spec.input_names``, outputs
    ``spec.output_names``). Inputs of the result: FRAME uint8 (N, H, W, 3), START int32 (N, 1) (or (1,)
    when ``max_batch_size`` is 0: Triton makes it), FLUSH int32 (N, 1) when the spec has a flush flag
    (an ordinary input: a client sends (1, 1) either way), STATE_IN_<i>;
    outputs FRAME_OUT uint8 (N, H, W, 3), STATE_OUT_<i> (see the module docstring). The declared
    shapes are what Triton's onnxruntime backend compares with the config (outputs exactly): N is
    dynamic with batching and 1 without; H, W and the state dims that follow them are dynamic, or
    fixed by ``frame_size`` (H, W). The computation is the same either way. Facts: ``per_row`` (the
    step graph has a fixed batch of 1 and runs per batch row in a Loop), ``states`` (per state:
    names, manifest names, dtype, Triton ``dims`` without the batch), ``opset``.
    """
    import onnx
    from onnx import TensorProto, helper

    opset = next((o.version for o in step_model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ExportError(f"step graph: opset {opset}. Expected opset >= {MIN_OPSET} for the Triton wrapper; "
                          "re-export the artifact with this vdeblur.")
    names_in = [i.name for i in step_model.graph.input]
    names_out = [o.name for o in step_model.graph.output]
    if names_in != spec.input_names or names_out != spec.output_names:
        raise ExportError(f"step graph: inputs {names_in} and outputs {names_out}. Expected the manifest's "
                          f"{spec.input_names} and {spec.output_names}; re-export the artifact.")
    if spec.pads_inside:
        raise ExportError("step graph: pads inside (pads_inside). Expected a graph of padded frames; re-export it.")
    batching = max_batch_size > 0
    step = add_prefix(step_model, "step/")
    sin, sout = _elem_types(step.graph.input), _elem_types(step.graph.output)
    per_row = batching and max_batch_size > 1 and _static_batch(step.graph.input[0])

    w = _Builder("vdeblur/")
    feeds: dict[str, str] = {}  # step input (prefixed) -> batched wrapper value
    shape = w.op("Shape", [FRAME], "frame_shape")
    zero, one, two, three = (w.const([i]) for i in range(4))
    n1 = w.op("Slice", [shape, zero, one], "n")
    h1 = w.op("Slice", [shape, one, two], "h")
    w1 = w.op("Slice", [shape, two, three], "w")
    m, m_1 = w.const([spec.pad_multiple]), w.const([spec.pad_multiple - 1])
    hp1 = w.op("Mul", [w.op("Div", [w.op("Add", [h1, m_1]), m]), m], "hp")
    wp1 = w.op("Mul", [w.op("Div", [w.op("Add", [w1, m_1]), m]), m], "wp")

    # the frame: uint8 NHWC -> float NCHW / 255, padded at the bottom and the right (Stream._prepare)
    x = w.op("Cast", [FRAME], "frame_f32", to=TensorProto.FLOAT)
    x = w.op("Div", [x, w.const(np.float32(255.0), np.float32)], "frame_01")
    x = w.op("Transpose", [x], "frame_nchw", perm=[0, 3, 1, 2])
    pads = w.op("Concat", [w.const([0] * 6), w.op("Sub", [hp1, h1]), w.op("Sub", [wp1, w1])], "pads", axis=0)
    pad_inputs = [x, pads] + ([w.const(np.float32(0.0), np.float32)] if spec.pad_mode == "zeros" else [])
    x = w.op("Pad", pad_inputs, "frame_padded", mode=_PAD_MODES[spec.pad_mode])
    frame_in = "step/" + spec.frame_input
    if sin[frame_in] != TensorProto.FLOAT:
        x = w.op("Cast", [x], "frame_cast", to=sin[frame_in])
    feeds[frame_in] = x

    start = w.op("Cast", [w.op("Reshape", [START, w.const([-1])], "start_flat")], "start_bool", to=TensorProto.BOOL)
    n_dim: Any = "N" if batching else 1  # Triton: a variable first dim with batching, the batch of 1 without
    hw: list[Any] = list(frame_size) if frame_size else ["H", "W"]
    padded = spec.padded(*frame_size) if frame_size else None
    inputs = [helper.make_tensor_value_info(FRAME, TensorProto.UINT8, [n_dim, *hw, 3])]
    inputs.append(helper.make_tensor_value_info(START, TensorProto.INT32, [n_dim, 1] if batching else [1]))
    if spec.flush.flag_input:
        flag_in = "step/" + spec.flush.flag_input
        flag = w.op("Reshape", [FLUSH, w.const([-1])], "flush_flat")
        if sin[flag_in] != TensorProto.INT32:
            flag = w.op("Cast", [flag], "flush_cast", to=sin[flag_in])
        feeds[flag_in] = flag
        inputs.append(helper.make_tensor_value_info(FLUSH, TensorProto.INT32, [n_dim, 1]))  # a request: (1, 1)

    outputs = [helper.make_tensor_value_info(FRAME_OUT, TensorProto.UINT8, [n_dim, *hw, 3])]
    states: list[dict[str, Any]] = []
    for s, (name_in, name_out) in zip(spec.states, state_names(len(spec.states)), strict=True):
        parsed = [parse_dim(d) for d in s.shape]
        if not parsed or parsed[0] != ("N", 1) or any(isinstance(p, tuple) and p[0] == "N" for p in parsed[1:]):
            raise UsageError(f"state {s.input_name!r}: shape {s.shape} does not start with N (the batch) alone. "
                             "Triton batches states along their first dimension; this artifact cannot be served "
                             "by Triton (use `vdeblur serve`).")
        onnx_type = helper.np_dtype_to_tensor_dtype(np.dtype(s.dtype))
        step_in, step_out = "step/" + s.input_name, "step/" + s.output_name
        if sin[step_in] != onnx_type or sout[step_out] != onnx_type:
            raise ExportError(f"state {s.input_name!r}: the manifest says {s.dtype}, the step graph has "
                              f"{helper.tensor_dtype_to_np_dtype(sin[step_in])}. Expected the same; re-export it.")
        flat = len(parsed) == 1  # (N,) -> (N, 1) for Triton: dims [1], not []
        if flat:
            dims = [1]
        elif padded is not None:
            dims = list(s.resolve(1, *padded)[1:])
        else:
            dims = [p if isinstance(p, int) else -1 for p in parsed[1:]]
        graph_shape = [n_dim, *[None if d == -1 else d for d in dims]]
        inputs.append(helper.make_tensor_value_info(name_in, onnx_type, graph_shape))
        outputs.append(helper.make_tensor_value_info(name_out, onnx_type, graph_shape))
        state_in = w.op("Reshape", [name_in, w.const([-1])], "state_flat") if flat else name_in
        pieces = []
        for p in parsed:
            if isinstance(p, int):
                pieces.append(w.const([p]))
            elif p[0] == "N":
                pieces.append(n1)
            else:
                base = hp1 if p[0] == "Hp" else wp1
                pieces.append(base if p[1] == 1 else w.op("Div", [base, w.const([p[1]])]))
        init_shape = w.op("Concat", pieces, "init_shape", axis=0)
        init = w.op("ConstantOfShape", [init_shape], "initial",
                    value=onnx.numpy_helper.from_array(np.array([s.initial], dtype=np.dtype(s.dtype))))
        mask = w.op("Reshape", [start, w.const([-1] + [1] * (len(parsed) - 1))], "start_mask")
        feeds[step_in] = w.op("Where", [mask, init, state_in], "state_selected")
        states.append({"input_name": name_in, "output_name": name_out, "from": [s.input_name, s.output_name],
                       "shape": list(s.shape), "dtype": s.dtype, "data_type": _DTYPES[s.dtype], "dims": dims,
                       "initial": s.initial})

    step_outputs: dict[str, str] = {}  # step output (prefixed) -> batched value
    if per_row:
        body = _Builder("vdeblur/row/")
        i = body.name("i")
        i1 = body.op("Unsqueeze", [i, body.const([0])], "i1")
        j1 = body.op("Add", [i1, body.const([1])], "j1")
        for name, value in feeds.items():
            body.op("Slice", [value, i1, j1, body.const([0])], out=name)
        cond_in, cond_out = body.name("cond"), body.name("cond_out")
        body.op("Identity", [cond_in], out=cond_out)
        body_graph = helper.make_graph(
            body.nodes + list(step.graph.node), "vdeblur_step_row",
            [helper.make_tensor_value_info(i, TensorProto.INT64, []),
             helper.make_tensor_value_info(cond_in, TensorProto.BOOL, [])],
            [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []), *step.graph.output],
            initializer=body.inits + list(step.graph.initializer), value_info=list(step.graph.value_info))
        rows = [w.name("rows") for _ in names_out]
        trips = w.op("Gather", [shape, w.const(0)], "batch")
        w.nodes.append(helper.make_node("Loop", [trips, ""], rows, name=w.name("node_Loop"), body=body_graph))
        split = len(w.nodes)
        for name, stacked in zip(names_out, rows, strict=True):  # (N, 1, ...) -> (N, ...)
            step_outputs["step/" + name] = w.op("Squeeze", [stacked, w.const([1])], "row_out")
        step_nodes, step_inits, step_value_info = [], [], []
    else:
        for name, value in feeds.items():
            w.op("Identity", [value], out=name)
        split = len(w.nodes)  # the wrapper's nodes before the step's, then those after
        step_outputs = {"step/" + n: "step/" + n for n in names_out}
        step_nodes = list(step.graph.node)
        step_inits = list(step.graph.initializer)
        step_value_info = list(step.graph.value_info)

    # the output frame: cropped, clipped, * 255 rounded, uint8 NHWC (Stream._emit)
    y = step_outputs["step/" + spec.frame_output]
    y = w.op("Slice", [y, w.const([0, 0]), w.op("Concat", [h1, w1], "hw", axis=0), w.const([2, 3])], "out_crop")
    if sout["step/" + spec.frame_output] != TensorProto.FLOAT:
        y = w.op("Cast", [y], "out_f32", to=TensorProto.FLOAT)
    y = w.op("Clip", [y, w.const(np.float32(0.0), np.float32), w.const(np.float32(1.0), np.float32)], "out_01")
    y = w.op("Mul", [y, w.const(np.float32(255.0), np.float32)], "out_255")
    y = w.op("Floor", [w.op("Add", [y, w.const(np.float32(0.5), np.float32)], "out_half")], "out_round")
    y = w.op("Cast", [y], "out_u8", to=TensorProto.UINT8)
    w.op("Transpose", [y], out=FRAME_OUT, perm=[0, 2, 3, 1])
    for s, st in zip(spec.states, states, strict=True):
        value = step_outputs["step/" + s.output_name]
        if len(s.shape) == 1:
            w.op("Reshape", [value, w.const([-1, 1])], out=st["output_name"])
        else:
            w.op("Identity", [value], out=st["output_name"])

    graph = helper.make_graph(w.nodes[:split] + step_nodes + w.nodes[split:], "vdeblur_triton", inputs, outputs,
                              initializer=w.inits + step_inits,
                              value_info=step_value_info)
    model = helper.make_model(graph, opset_imports=list(step.opset_import), producer_name="vdeblur",
                              producer_version=__version__, ir_version=step.ir_version)
    model.functions.extend(step.functions)
    model.doc_string = (f"vdeblur {spec.family} step graph wrapped for Triton Inference Server: FRAME uint8 NHWC, "
                        "START, FLUSH (flush flag), STATE_IN_*/STATE_OUT_* implicit state, FRAME_OUT uint8 NHWC.")
    onnx.helper.set_model_props(model, {"vdeblur_version": __version__, "vdeblur_lookahead": str(spec.lookahead),
                                        "vdeblur_flush_steps": str(spec.flush.steps)})
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"Triton wrapper of the {spec.family} step graph: invalid ONNX "
                          f"({str(e).strip().splitlines()[0]}). This is a vdeblur bug; please report it.") from e
    return model, {"per_row": per_row, "states": states, "opset": opset}


# --------------------------------------------------------------------------------------------
# config.pbtxt
# --------------------------------------------------------------------------------------------


def candidates(max_batch_size: int, max_sequences: int | None = None) -> int:
    """``oldest.max_candidate_sequences``: how many sequences one model instance serves at once (more
    wait in a backlog until one ends): ``max_sequences``, default max(16, 2 * max_batch_size)."""
    return int(max_sequences) if max_sequences else max(16, 2 * int(max_batch_size))


def _dims(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(d)) for d in dims) + " ]"


def config_text(name: str, backend: str, max_batch_size: int, spec: StepSpec, states: Sequence[dict[str, Any]],
                instances: int = 1, max_sequences: int | None = None, header: Sequence[str] = (),
                frame_size: tuple[int, int] | None = None) -> str:
    """The hand-written, readable config.pbtxt of the wrapper (see the module docstring).

    states: :func:`build_wrapper`'s facts (built with the same ``frame_size``); frame_size: (H, W) for
    a model of one frame size (every dim fixed), None for any size (-1 for H, W and the state dims
    that follow them)."""
    batching = max_batch_size > 0
    lead = [] if batching else [1]  # without batching, dims carry the batch of 1 themselves
    hw = list(frame_size) if frame_size else [-1, -1]
    filename = "model.plan" if backend == "tensorrt" else "model.onnx"
    engine = 'platform: "tensorrt_plan"' if backend == "tensorrt" else 'backend: "onnxruntime"'
    kind = "KIND_GPU" if backend == "tensorrt" else "KIND_AUTO"
    flush = FLUSH if spec.flush.flag_input else ""
    lines = [f"# {line}".replace("\n", " ") for line in header]
    lines += [f'name: "{name}"', engine, f"max_batch_size: {int(max_batch_size)}",
              f'default_model_filename: "{filename}"', ""]
    lines += ["input [",
              "  {", f'    name: "{FRAME}"', "    data_type: TYPE_UINT8", f"    dims: {_dims([*lead, *hw, 3])}",
              "  }" + ("," if flush else "")]
    if flush:
        lines += ["  {", f'    name: "{FLUSH}"', "    data_type: TYPE_INT32", f"    dims: {_dims([*lead, 1])}", "  }"]
    lines += ["]", "output [",
              "  {", f'    name: "{FRAME_OUT}"', "    data_type: TYPE_UINT8", f"    dims: {_dims([*lead, *hw, 3])}",
              "  }", "]", ""]
    lines += ["sequence_batching {", f"  max_sequence_idle_microseconds: {IDLE_MICROSECONDS}",
              "  control_input [", "    {", f'      name: "{START}"', "      control [", "        {",
              "          kind: CONTROL_SEQUENCE_START", "          int32_false_true: [ 0, 1 ]",
              "        }", "      ]", "    }", "  ]"]
    lines += ["  oldest {", f"    max_candidate_sequences: {candidates(max_batch_size, max_sequences)}"]
    if batching:
        lines += [f"    preferred_batch_size: [ {int(max_batch_size)} ]"]
    lines += [f"    max_queue_delay_microseconds: {QUEUE_DELAY_MICROSECONDS}", "  }"]
    lines += ["  state ["]
    for k, st in enumerate(states):
        dims = st["dims"]
        grammar = ", ".join(str(d) for d in st["shape"])
        comment = (f"{st['from'][0]} -> {st['from'][1]}: [{grammar}] {st['dtype']}, initial {st['initial']:g} "
                   "(made by the graph at START)")
        lines += ["    {", f"      # {comment}", f'      input_name: "{st["input_name"]}"',
                  f'      output_name: "{st["output_name"]}"', f"      data_type: {st['data_type']}",
                  f"      dims: {_dims([*lead, *dims])}", "    }" + ("," if k < len(states) - 1 else "")]
    lines += ["  ]", "}", ""]
    lines += ["instance_group [", "  {", f"    count: {int(instances)}", f"    kind: {kind}", "  }", "]", ""]
    params = {"vdeblur_lookahead": str(spec.lookahead), "vdeblur_flush_steps": str(spec.flush.steps),
              "vdeblur_flush_input": flush, "vdeblur_pad_multiple": str(spec.pad_multiple),
              "vdeblur_version": __version__}
    lines += ["parameters ["]
    for k, (key, value) in enumerate(params.items()):
        sep = "," if k < len(params) - 1 else ""
        lines.append(f'  {{ key: "{key}" value: {{ string_value: "{value}" }} }}{sep}')
    lines += ["]", ""]
    return "\n".join(lines)


def read_config(path: str | Path) -> Any:
    """Parse a ``config.pbtxt`` into ``tritonclient.grpc.model_config_pb2.ModelConfig``.

    Raises ExportError naming the file for an unreadable file or a text-format error (a misspelt field,
    an unknown enum, two members of a oneof)."""
    from google.protobuf import text_format

    mc = _model_config_pb2()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ExportError(f"{path}: cannot be read ({e}). Expected a Triton config.pbtxt.") from e
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as e:
        raise ExportError(f"{path}: is not a valid Triton model configuration ({e}). "
                          "Fix the line named, or write it again with `vdeblur triton-repo`.") from e


# --------------------------------------------------------------------------------------------
# Triton's load-time rules
# --------------------------------------------------------------------------------------------

_ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32",
                   7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}


def _graph_io(graph_path: Path) -> tuple[dict[str, tuple[str, list[int]]], dict[str, tuple[str, list[int]]]]:
    """({input: (Triton type, dims with -1 for dynamic)}, {output: ...}) of an ONNX graph."""
    import onnx

    try:
        model = onnx.load(str(graph_path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError...
        raise ExportError(f"{graph_path}: cannot be read as ONNX ({e}). Expected the model of the config.") from e

    def io(values: Any) -> dict[str, tuple[str, list[int]]]:
        out = {}
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            out[v.name] = (_ONNX_TO_TRITON.get(t.elem_type, f"ONNX type {t.elem_type}"), dims)
        return out

    inits = {i.name for i in model.graph.initializer}
    return io(v for v in model.graph.input if v.name not in inits), io(model.graph.output)


def check_config(cfg: Any, graph_path: str | Path | None = None) -> None:
    """Raise ExportError (UsageError for a bad name) when ``cfg`` (a ModelConfig) breaks a rule Triton
    applies when it loads a model but the protobuf parse does not catch:

    - ``max_batch_size`` >= 0; one of ``backend`` / ``platform``; ``oldest`` preferred batch sizes
      no larger than ``max_batch_size``;
    - control inputs: one control each, START/END/READY with a two-value ``*_false_true``, CORRID with
      a data type; a control input also listed as an input has dims ``[1]`` (Triton makes control
      tensors (1,), (N, 1) with batching);
    - states: input and output names distinct from each other and from every other tensor name, no
      name a prefix of another (a Triton confusion reported by users; cheap insurance), dims not
      empty; ``initial_state`` without -1 dims, of the state's rank and fixed dims, and its type;
      no variable state dims with ``max_batch_size`` > 1 (Triton loads that, but a sequence's first
      request, whose variable state dims are 1, cannot be batched with running sequences: the
      backends concatenate a batch's state by its first request's shape);
    - with ``graph_path`` (an ONNX file): every config input, output, control input and state
      name is a graph input/output of the same type and rank (dims + 1 with batching, the batch dim
      dynamic); output and control dims equal the graph's exactly (-1 included: Triton's
      onnxruntime backend compares them so), other fixed dims agree; every graph input is fed by
      the config; the model name equals the model directory's (``<repo>/<name>/<version>/<file>``).
    """
    mc = _model_config_pb2()
    subject = f"model {cfg.name!r}" if cfg.name else "model config"

    def fail(what: str, fix: str) -> None:
        raise ExportError(f"{subject}: {what}. {fix}")

    mbs = int(cfg.max_batch_size)
    if mbs < 0:
        fail(f"max_batch_size is {mbs}", "Expected 0 (no batching) or a positive batch size.")
    if not cfg.backend and not cfg.platform:
        fail("neither backend nor platform is set", 'Expected backend: "onnxruntime" or platform: "tensorrt_plan".')
    type_name = mc.DataType.Name
    tensors: dict[str, tuple[str, list[int]]] = {}  # every config tensor the model reads or writes
    for io in list(cfg.input) + list(cfg.output):
        if io.data_type == mc.TYPE_INVALID:
            fail(f"tensor {io.name!r} has no data_type", "Expected a TYPE_* data type.")
        if any(d < -1 or d == 0 for d in io.dims):
            fail(f"tensor {io.name!r} has dims {list(io.dims)}", "Expected positive sizes or -1 (variable).")
        tensors[io.name] = (type_name(io.data_type), list(io.dims))
    input_names = {i.name for i in cfg.input}
    sb = cfg.sequence_batching
    has_sb = cfg.HasField("sequence_batching")
    if has_sb and sb.WhichOneof("strategy_choice") == "oldest":
        too_big = [b for b in sb.oldest.preferred_batch_size if b > mbs or b < 1]
        if too_big:
            fail(f"oldest.preferred_batch_size has {too_big} with max_batch_size {mbs}",
                 "Expected sizes from 1 to max_batch_size (max_batch_size > 0 for the oldest strategy).")
    controls: dict[str, str] = {}
    for ci in sb.control_input:
        if len(ci.control) != 1:
            fail(f"control input {ci.name!r} has {len(ci.control)} controls", "Expected exactly one.")
        c = ci.control[0]
        kind = mc.ModelSequenceBatching.Control.Kind.Name(c.kind)
        if kind == "CONTROL_SEQUENCE_CORRID":
            if c.data_type == mc.TYPE_INVALID:
                fail(f"control input {ci.name!r} (CORRID) has no data_type", "Expected TYPE_UINT64 or TYPE_STRING.")
            ctype = type_name(c.data_type)
        else:
            pairs = [(list(c.int32_false_true), "TYPE_INT32"), (list(c.fp32_false_true), "TYPE_FP32"),
                     (list(c.bool_false_true), "TYPE_BOOL")]
            given = [(v, t) for v, t in pairs if v]
            if len(given) != 1 or len(given[0][0]) != 2:
                fail(f"control input {ci.name!r} ({kind}) has no two-value *_false_true",
                     "Expected int32_false_true: [ 0, 1 ] (or fp32_/bool_false_true).")
            ctype = given[0][1]
        controls[ci.name] = ctype
        if ci.name in input_names:
            dims = list(next(i for i in cfg.input if i.name == ci.name).dims)
            if dims != [1]:
                fail(f"control input {ci.name!r} is also an input with dims {dims}",
                     "Expected dims [ 1 ]: Triton makes control tensors of shape (1,), (N, 1) with batching.")
    state_names_all: list[str] = []
    for st in sb.state:
        pair = f"state {st.input_name!r} -> {st.output_name!r}"
        if not st.input_name or not st.output_name:
            fail(f"{pair} has an empty name", "Expected input_name and output_name.")
        if st.input_name == st.output_name:
            fail(f"{pair} uses one name for input and output", "Expected two distinct names.")
        if st.data_type == mc.TYPE_INVALID:
            fail(f"{pair} has no data_type", "Expected a TYPE_* data type.")
        if len(st.dims) == 0:
            fail(f"{pair} has empty dims",
                 "Expected at least one dimension (whether Triton accepts empty state dims is not known; "
                 "reshape the state to [ 1 ] in the graph).")
        if any(d < -1 or d == 0 for d in st.dims):
            fail(f"{pair} has dims {list(st.dims)}", "Expected positive sizes or -1 (variable).")
        for init in st.initial_state:
            idims = list(init.dims)
            if any(d < 0 for d in idims):
                fail(f"'initial_state' field for state input name {st.input_name!r} contains variable dimensions "
                     f"{idims}", "Expected fixed dims (Triton refuses -1 there); build the initial value in the "
                     "graph from a START control input instead")
            if len(idims) != len(st.dims) or any(s != -1 and s != i for s, i in zip(st.dims, idims, strict=False)):
                fail(f"initial_state of {pair} has dims {idims} for state dims {list(st.dims)}",
                     "Expected the state's rank and its fixed dims.")
            if init.data_type != st.data_type:
                fail(f"initial_state of {pair} is {type_name(init.data_type)}, the state {type_name(st.data_type)}",
                     "Expected the state's data_type.")
            if init.WhichOneof("state_data") is None:
                fail(f"initial_state of {pair} has neither zero_data nor data_file", "Expected one of them.")
        for name, role in ((st.input_name, "input"), (st.output_name, "output")):
            if name in tensors or name in controls or name in state_names_all:
                fail(f"state {role} name {name!r} is used twice", "Expected every tensor name once.")
            state_names_all.append(name)
            tensors[name] = (type_name(st.data_type), list(st.dims))
    others = list(tensors) + list(controls)
    for a in state_names_all:
        clash = [b for b in others if b != a and (b.startswith(a) or a.startswith(b))]
        if clash:
            fail(f"state name {a!r} and {clash[0]!r}: one is a prefix of the other",
                 "Expected names that are not prefixes of each other (Triton has been reported to confuse them).")
    variable = [st.input_name for st in sb.state if any(d == -1 for d in st.dims)]
    if variable and mbs > 1:
        fail(f"states {variable} have variable dims with max_batch_size {mbs}",
             "Triton gives a sequence's first request state dims of 1 where the config has -1, and a backend builds "
             "a batch's state tensor from its first request's shape: a starting sequence batched with running ones "
             "fails or corrupts their state. Expected max_batch_size 0 or 1, or fixed state dims (one frame size)")

    if graph_path is None:
        return
    graph_path = Path(graph_path)
    if cfg.name and graph_path.parent.name.isdigit() and graph_path.parent.parent.name != cfg.name:
        fail(f"its directory is {graph_path.parent.parent.name!r}",
             "Expected name: to equal the model directory's name (or to be left out).")
    if graph_path.suffix != ".onnx":
        return
    g_in, g_out = _graph_io(graph_path)
    batch = 1 if mbs > 0 else 0
    # (name, graph side, Triton type, config dims, how the dims compare): Triton's onnxruntime backend compares
    # outputs exactly (-1 only where the graph has -1), inputs with the graph's -1 as a wildcard, control
    # tensors as exactly [1]; state dims are not compared (the wildcard rule is applied to them here).
    wanted: list[tuple[str, str, str, list[int], bool]] = []
    wanted += [(i.name, "input", type_name(i.data_type), list(i.dims), False) for i in cfg.input]
    wanted += [(o.name, "output", type_name(o.data_type), list(o.dims), True) for o in cfg.output]
    wanted += [(n, "input", t, [1], True) for n, t in controls.items() if n not in input_names]
    for st in sb.state:
        wanted += [(st.input_name, "input", type_name(st.data_type), list(st.dims), False),
                   (st.output_name, "output", type_name(st.data_type), list(st.dims), False)]
    for name, side, ttype, dims, exact in wanted:
        have = (g_in if side == "input" else g_out).get(name)
        if have is None:
            fail(f"{name!r} is not an {side} of {graph_path.name} (its {side}s: "
                 f"{', '.join(g_in if side == 'input' else g_out)})", "Expected every config tensor in the graph.")
        assert have is not None
        gtype, gdims = have
        if gtype != ttype:
            fail(f"{name!r} is {ttype} in the config and {gtype} in {graph_path.name}", "Expected the same type.")
        if len(gdims) != len(dims) + batch:
            fail(f"{name!r} has dims {dims} in the config (rank {len(dims) + batch} with the batch) and rank "
                 f"{len(gdims)} in {graph_path.name}", "Expected the graph's rank"
                 + (" (Triton prepends the batch dim when max_batch_size > 0)." if batch else "."))
        if batch and gdims[0] != -1:
            fail(f"{name!r} has a fixed first dim {gdims[0]} in {graph_path.name} with max_batch_size {mbs}",
                 "Expected a variable batch dim (or max_batch_size: 0).")
        for c, g in zip(dims, gdims[batch:], strict=True):
            if (c != g) if exact else (c != -1 and g != -1 and c != g):
                fail(f"{name!r} has dims {dims} in the config and {gdims} in {graph_path.name}",
                     "Expected the graph's dims exactly (Triton compares output and control dims exactly, -1 "
                     "included)." if exact else "Expected the fixed dims to agree.")
    fed = {n for n, side, *_ in wanted if side == "input"}
    unfed = [n for n in g_in if n not in fed]
    if unfed:
        fail(f"graph inputs {unfed} of {graph_path.name} are not in the config",
             "Expected every graph input as an input, a control input or a state input.")


# --------------------------------------------------------------------------------------------
# The repository
# --------------------------------------------------------------------------------------------


def write_triton_repo(artifact: str | Path, out: str | Path, backend: str = "onnxruntime", name: str | None = None,
                      precision: str = "fp32", max_batch_size: int | None = None, instances: int = 1,
                      overwrite: bool = False, *, height: int | None = None, width: int | None = None,
                      max_sequences: int | None = None, shapes: str | None = None) -> dict[str, Any]:
    """Write the model of step artifact ``artifact`` into the Triton model repository ``out``.

    Files: ``out/<name>/config.pbtxt`` and ``out/<name>/1/model.onnx`` (``backend`` "onnxruntime":
    the wrapper of the ``portable`` graph of ``precision``) or ``out/<name>/1/model.plan`` ("tensorrt":
    an engine of the wrapper of the ``trt`` graph, built here: needs TensorRT >= 10.9 and an NVIDIA
    GPU, the same TensorRT and GPU model as the Triton server). ``name`` defaults to the artifact
    directory's name.

    Frame size: ``height`` and ``width`` make a model of that one size (every dim of the config fixed),
    which Triton can batch: ``max_batch_size`` sequences per model execution (default 8). Without
    them the model takes any size, and ``max_batch_size`` must be 0 or 1 (default 1): Triton gives a
    sequence's first request state dims of 1 where the config has -1, so a starting sequence cannot
    share an execution with running ones (see :func:`check_config`). ``max_sequences``:
    ``oldest.max_candidate_sequences``, the sequences one instance serves at once (default
    max(16, 2 * max_batch_size)); ``instances``: model instances; ``shapes``: TensorRT with any frame
    size only, the profile's "HxW:HxW:HxW" min:opt:max frame sizes (vdeblur build's --shapes).

    The model directory is written beside ``out/<name>`` and renamed into place: an existing one is
    refused without ``overwrite``, and a failure leaves nothing. Returns a JSON-able report: model,
    repository, files, backend, precision, graph, config summary (inputs, outputs, states,
    parameters), per_row, notes. Raises UsageError (arguments, clip artifacts), ExportError (missing
    graph), MissingDependencyError / BackendError (TensorRT or GPU missing).
    """
    import onnx

    if backend not in BACKENDS:
        raise UsageError(f"backend {backend!r}: Triton models are written for {', '.join(BACKENDS)}. "
                         "Expected one of them.")
    if (height is None) != (width is None):
        raise UsageError("height, width: only one is given. Expected both (a model of one frame size) or neither "
                         "(any size).")
    fixed = height is not None
    if max_batch_size is None:
        max_batch_size = 8 if fixed else 1
    for label, value, low in (("max_batch_size", max_batch_size, 0), ("instances", instances, 1),
                              ("max_sequences", max_sequences, 1), ("height", height, 1), ("width", width, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low):
            raise UsageError(f"{label}: {value!r}. Expected an integer >= {low}.")
    if max_batch_size > 1 and not fixed:
        raise UsageError(f"max_batch_size {max_batch_size}: needs a model of one frame size. With any frame size the "
                         "state dims follow the frame (-1 in the config) and Triton gives a sequence's first request "
                         "state dims of 1, so a starting sequence cannot share a batch with running ones. Expected "
                         "--height and --width (one frame size, batched), or --max-batch-size 1.")
    if shapes is not None and (backend != "tensorrt" or fixed):
        raise UsageError("shapes: sets the frame sizes of a TensorRT plan for any frame size. Expected backend "
                         "'tensorrt' without --height/--width, or no shapes.")
    frame_size = (int(height), int(width)) if height is not None and width is not None else None
    artifact = Path(artifact)
    iface = Interface(artifact)
    spec = iface.spec
    if iface.kind == "clip" or not isinstance(spec, StepSpec):
        raise UsageError(f"{artifact}: is a clip artifact ({spec.family}, windows of {iface.window} frames). "
                         "Triton's sequence batcher sends one frame per request and keeps only per-frame state, "
                         "while a clip graph needs whole windows of frames. Serve it with `vdeblur serve`, which "
                         "runs clip artifacts by windows.")
    name = check_model_name(name if name is not None else artifact.resolve().name)
    out = Path(out)
    target = out / name
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise UsageError(f"{target}: exists. Pass --overwrite to replace it, or choose another --name.")
    lowering = "trt" if backend == "tensorrt" else "portable"
    try:
        graph = iface.graph_path(precision, lowering)
    except ExportError as e:
        have = ", ".join(f"{g.precision}/{g.lowering}" for g in iface.manifest.graphs)
        raise ExportError(f"{artifact}: has no {precision} graph with the {lowering} lowering (it has {have}), which "
                          f"a {backend} Triton model needs. Export it with `vdeblur export ... --plugins {lowering} "
                          f"--precision {precision}`.") from e
    if not graph.is_file():
        raise ExportError(f"{graph}: is missing although the manifest lists it. Re-export the artifact.")
    trt_build = _tensorrt_preflight() if backend == "tensorrt" else None

    step_model = onnx.load(str(graph))
    notes: list[str] = []
    if trt_build is not None:
        notes += trt_build.rewrite(step_model)
    wrapper, facts = build_wrapper(step_model, spec, max_batch_size, frame_size)
    if facts["per_row"]:
        notes.append("the step graph has a fixed batch of 1: the model runs each batch row through it in an ONNX "
                     "Loop (a batch is one model execution; its rows run one after another)")
    header = [f"vdeblur {__version__} `triton-repo`: {spec.family} step artifact {artifact.resolve().name}, "
              f"{precision} {lowering} graph, backend {backend}.",
              f"Streaming: the response to request k is the output of frame k - {spec.lookahead} (drop the first "
              f"{spec.lookahead}); after the last frame send {spec.flush.steps} more requests repeating it"
              + (" with FLUSH = 1." if spec.flush.flag_input else "."),
              "START is the sequence start; the graph builds every state's initial value itself (no initial_state).",
              ("Frames of " + f"{frame_size[0]}x{frame_size[1]} only (HxW)." if frame_size else
               "Frames of any size; a sequence keeps its size."), "See docs/triton.md of vdeblur."]
    text = config_text(name, backend, max_batch_size, spec, facts["states"], instances, max_sequences, header,
                       frame_size)
    filename = "model.plan" if backend == "tensorrt" else "model.onnx"
    payload = (trt_build.build(wrapper, spec, facts, precision, max_batch_size, shapes, frame_size, notes)
               if trt_build is not None
               else wrapper.SerializeToString())

    made_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=out))  # beside the target: one rename
    published = False
    try:
        model_dir = staging / name
        (model_dir / VERSION).mkdir(parents=True)
        (model_dir / VERSION / filename).write_bytes(payload)
        (model_dir / CONFIG).write_text(text)
        cfg = read_config(model_dir / CONFIG)
        if backend == "onnxruntime":
            check_config(cfg, model_dir / VERSION / filename)
        else:  # the plan cannot be read here: check the config against the wrapper it was built from
            copy = staging / "check" / name / VERSION / "model.onnx"
            copy.parent.mkdir(parents=True)
            onnx.save(wrapper, str(copy))
            check_config(cfg, copy)
        publish_dir(model_dir, target)
        published = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made_out and not published:
            with contextlib.suppress(OSError):
                out.rmdir()  # the repository directory this call created, when nothing else went in
    files = [str(target / CONFIG), str(target / VERSION / filename)]
    notes.append(f"start Triton with `tritonserver --model-repository={out.resolve()}`; clients drop the first "
                 f"{spec.lookahead} responses and flush with {spec.flush.steps} repeats of the last frame")
    return {
        "model": name, "repository": str(out), "model_dir": str(target), "files": files, "backend": backend,
        "precision": precision, "lowering": lowering, "graph": str(graph), "family": spec.family,
        "config": {
            "max_batch_size": int(max_batch_size), "instances": int(instances),
            "frame_size": list(frame_size) if frame_size else None, "strategy": "oldest",
            "max_candidate_sequences": candidates(max_batch_size, max_sequences),
            "inputs": [FRAME, *([FLUSH] if spec.flush.flag_input else [])], "control_inputs": [START],
            "outputs": [FRAME_OUT],
            "states": [{k: st[k] for k in ("input_name", "output_name", "from", "data_type", "dims")}
                       for st in facts["states"]],
            "parameters": {k: v.string_value for k, v in cfg.parameters.items()},
        },
        "per_row": facts["per_row"], "opset": facts["opset"], "notes": notes,
    }


# --------------------------------------------------------------------------------------------
# TensorRT (kept small: nothing of it runs without TensorRT and a GPU)
# --------------------------------------------------------------------------------------------


class _TensorRT:
    """What the tensorrt backend adds: the preflight (module, GPU), the build's graph rewrites, the plan."""

    def __init__(self, trt: Any, gpu: dict[str, str], build: Any) -> None:
        self.trt, self.gpu, self.b = trt, gpu, build

    def rewrite(self, model: Any) -> list[str]:
        """vdeblur build's rewrites of what TensorRT's parser rejects (int8 graphs), on the step graph."""
        notes = []
        for fn, what in self.b.TRT_REWRITES:
            count = fn(model)
            if count:
                notes.append(f"{count} {what} (not measured by triton-repo: `vdeblur build --backend tensorrt` "
                             "measures it)")
        return notes

    def build(self, wrapper: Any, spec: StepSpec, facts: dict[str, Any], precision: str, max_batch_size: int,
              shapes: str | None, frame_size: tuple[int, int] | None, notes: list[str]) -> bytes:
        """The serialized engine of the wrapper: one profile over batch 1..max_batch_size, the frame sizes of
        ``shapes`` (vdeblur build's defaults), and states from the START request's 1-sized dims up."""
        from vdeblur.contract.engines import parse_shapes
        from vdeblur.contract.interface import resolve_shape

        trt, b = self.trt, self.b
        sizes = parse_shapes(shapes if frame_size is None else f"{frame_size[0]}x{frame_size[1]}", spec.pad_multiple)
        batch = max(int(max_batch_size), 1)
        profiles: dict[str, list[tuple[int, ...]]] = {}
        for key, (h, w) in zip(("min", "opt", "max"), sizes, strict=True):
            n = 1 if key == "min" else batch
            if frame_size is not None:
                frame_h, frame_w = frame_size
            else:  # min: the smallest frame that pads to h
                frame_h = h - spec.pad_multiple + 1 if key == "min" else h
                frame_w = w - spec.pad_multiple + 1 if key == "min" else w
            profiles.setdefault(FRAME, []).append((n, max(frame_h, 1), max(frame_w, 1), 3))
            control = (n, 1) if max_batch_size > 0 else (1,)
            profiles.setdefault(START, []).append(control)
            if spec.flush.flag_input:
                profiles.setdefault(FLUSH, []).append(control)
            for s, st in zip(spec.states, facts["states"], strict=True):
                if key == "min" and frame_size is None:  # the START request: every variable dim is 1
                    shape = (1, *[1 if d == -1 else d for d in st["dims"]])
                else:
                    full = resolve_shape(s.shape, n, h, w, f"state {s.input_name!r}")
                    shape = (n, 1) if len(full) == 1 else tuple(full)
                profiles.setdefault(st["input_name"], []).append(shape)
        flags = b.trt_build_flags(trt, precision)
        logger = trt.Logger(trt.Logger.WARNING)
        b.register_plugins_once()
        builder = trt.Builder(logger)
        network = builder.create_network(flags.network_bits(trt))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(wrapper.SerializeToString()):
            raise ExportError(b.format_parser_errors([parser.get_error(i) for i in range(parser.num_errors)],
                                                     "the Triton wrapper"))
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(b.DEFAULT_WORKSPACE))
        for flag in flags.builder:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        profile = builder.create_optimization_profile()
        for tensor, (lo, opt, hi) in profiles.items():
            profile.set_shape(tensor, lo, opt, hi)
        if config.add_optimization_profile(profile) < 0:
            raise BackendError(f"tensorrt: the optimisation profile of the Triton wrapper was refused ({profiles}). "
                               "Expected min <= opt <= max sizes; check --shapes.")
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendError("tensorrt: could not build the Triton wrapper's engine (see the TensorRT log above). "
                               "Expected supported layers and vdeblur plugins.")
        notes += list(flags.notes)
        notes.append(f"plan built with TensorRT {flags.version} on {self.gpu.get('name')} (sm "
                     f"{self.gpu.get('compute_capability')}): Triton must run the same TensorRT version on that GPU "
                     f"model; frame sizes {shapes or 'default'} padded to {sizes}")
        return bytes(plan)


def _tensorrt_preflight() -> _TensorRT:
    """TensorRT importable and an NVIDIA GPU visible, before anything is written; the build module
    (vdeblur.build.tensorrt: flags, plugin registration, graph rewrites) imported lazily."""
    from vdeblur.build import tensorrt as build  # the one serve -> build edge (TensorRT only)

    trt = build.import_tensorrt()
    gpu, reason = build.probe_gpu()
    if gpu is None:
        raise BackendError(f"tensorrt: no NVIDIA GPU is visible ({reason}). A Triton TensorRT plan is built on the "
                           "GPU model Triton runs on, with the TensorRT version of the Triton server; run "
                           "triton-repo there, or use --backend onnxruntime.")
    return _TensorRT(trt, gpu, build)
