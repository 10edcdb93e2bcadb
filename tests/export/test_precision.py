"""Precision variants of step graphs (vdeblur.export.precision): fp16 / bf16 mixed precision with the
sensitive nodes kept float32, int8 Q/DQ calibrated on streamed frames, errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from vdeblur.contract.precision import int8_weight_range
from vdeblur.errors import MissingDependencyError, UsageError
from vdeblur.export import precision as P
from vdeblur.export.onnx import export_step_graph, ort_session, stream_onnx, validation_clip
from vdeblur.export.stepgraph import StepSpec, step_module
from vdeblur.metrics import compare
from vdeblur.models import create, run_clip

FAMILIES = {
    "mtu": ("mtu2", {"ch": 8, "rb_num": 1}),  # two stacks: stack 0 searches motion, stack 1 reuses it
    "mmprnn": ("mmprnn_a3b4c16", {"n_features": 8, "n_blocks_a": 1, "n_blocks_b": 1}),
}
SIZE = (64, 64)


class Exported:
    """One tiny model exported once: its fp32 portable step graph, spec and reference outputs."""

    def __init__(self, family: str, folder: Path) -> None:
        preset, config = FAMILIES[family]
        torch.manual_seed(7)
        self.model = create(preset, **config).eval()
        step, self.spec = step_module(self.model)
        self.folder = folder
        self.path = folder / f"{family}.onnx"
        export_step_graph(step, self.spec, self.path, "portable", *SIZE)
        self.fp32 = onnx.load(str(self.path))
        self.clip = validation_clip(6, *SIZE)
        with torch.no_grad():
            self.reference = run_clip(self.model, self.clip).numpy()
        self.calibration = validation_clip(4, *SIZE, seed=1)[0].numpy()  # (T, 3, H, W)

    def op_types(self, names: list[str]) -> set[str]:
        by_name = {n.name: n.op_type for n in self.fp32.graph.node}
        return {by_name[n] for n in names if n in by_name}

    def psnr(self, path: str) -> dict[str, float]:
        out = stream_onnx(ort_session(path, 1), self.spec, self.clip.numpy())
        return compare(out, self.reference)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    folder = tmp_path_factory.mktemp("precision")
    return {family: Exported(family, folder) for family in FAMILIES}


def io_types(model: onnx.ModelProto) -> dict[str, int]:
    return {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}


def conv_weight_types(model: onnx.ModelProto) -> set[int]:
    inits = {i.name: i.data_type for i in model.graph.initializer}
    return {inits[n.input[1]] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits}


# --------------------------------------------------------------------------------------------
# fp16 / bf16
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fp16_runs_on_ort_close_to_the_fp32_reference(exported: dict[str, Exported], family: str) -> None:
    e = exported[family]
    result = P.convert(e.path, e.folder / f"{family}.fp16.onnx", "fp16", e.spec)
    assert (result.precision, result.method, result.runs_on_ort_cpu) == ("fp16", "mixed-fp16", True)
    out = onnx.load(result.file)
    assert io_types(out) == io_types(e.fp32)  # float32 frames and states in and out, int32 counter
    assert conv_weight_types(out) == {TensorProto.FLOAT16}
    assert not {n.op_type for n in out.graph.node if n.name in result.kept_fp32} & {"Conv", "ConvTranspose"}
    metrics = e.psnr(result.file)
    print(f"\n{family} fp16 vs fp32 reference: {metrics['psnr_db']:.1f} dB, "
          f"{metrics['fraction_within_tol']:.4f} within tol, kept fp32: {len(result.kept_fp32)} nodes")
    assert metrics["psnr_db"] > 40.0


def test_fp16_keeps_motion_search_and_flow_in_fp32(exported: dict[str, Exported]) -> None:
    e = exported["mtu"]
    result = P.convert(e.path, e.folder / "mtu.fp16b.onnx", "fp16", e.spec)
    kept = e.op_types(result.kept_fp32)
    # correlation_argmax (L2 normalisation, correlation MatMuls, pooling, argmax) and flow_warp
    # (grid construction, the flow's nearest upsampling, GridSample).
    assert {"ReduceL2", "MatMul", "AveragePool", "ArgMax", "GridSample", "Range", "Resize"} <= kept
    every = {n.name for n in e.fp32.graph.node if n.op_type in ("ArgMax", "GridSample", "ReduceL2", "AveragePool")}
    every |= {n.name for n in e.fp32.graph.node if n.op_type == "MatMul"}  # the correlation has no learned MatMul
    assert every <= set(result.kept_fp32)
    # In the converted graph these nodes compute in float32 (inputs cast back where needed).
    types = P._elem_types(onnx.load(result.file))
    out = onnx.load(result.file)
    for node in out.graph.node:
        if node.op_type in ("ArgMax", "GridSample", "MatMul", "AveragePool"):
            assert types[node.input[0]] == TensorProto.FLOAT, node.name


def test_bf16_graph_is_valid_and_says_where_it_runs(exported: dict[str, Exported]) -> None:
    e = exported["mtu"]
    result = P.convert(e.path, e.folder / "mtu.bf16.onnx", "bf16", e.spec)
    out = onnx.load(result.file)
    onnx.checker.check_model(out, full_check=True)
    assert P._opset(out) >= P.BF16_MIN_OPSET
    assert io_types(out) == io_types(e.fp32)
    assert conv_weight_types(out) == {TensorProto.BFLOAT16}
    assert {"ArgMax", "GridSample", "ReduceL2"} <= e.op_types(result.kept_fp32)
    assert result.method == "mixed-bf16"
    if not result.runs_on_ort_cpu:  # ORT CPU has no bfloat16 Conv: the reason is reported
        assert "cannot run" in result.notes and "NOT_IMPLEMENTED" in result.notes
    print(f"\nbf16: runs on ORT CPU: {result.runs_on_ort_cpu}; {result.notes}")


def test_fp32_is_a_copy(exported: dict[str, Exported]) -> None:
    e = exported["mmprnn"]
    result = P.convert(e.path, e.folder / "copy.onnx", "fp32", e.spec)
    assert Path(result.file).read_bytes() == e.path.read_bytes()
    assert result.kept_fp32 == [] and result.runs_on_ort_cpu


# --------------------------------------------------------------------------------------------
# int8
# --------------------------------------------------------------------------------------------


def test_calibration_feeds_carry_the_streamed_states(exported: dict[str, Exported]) -> None:
    e = exported["mtu"]
    feeds = P.calibration_feeds(ort_session(e.path, 1), e.spec, e.calibration)
    assert len(feeds) == e.calibration.shape[0] + e.spec.flush.steps
    assert all(set(f) == set(e.spec.input_names) for f in feeds)
    assert [int(f["counter"][0]) for f in feeds] == [0, 1, 2, 3, 3, 3]
    assert not feeds[0]["feat"].any() and feeds[3]["feat"].any()  # real recurrent state after warm-up
    assert feeds[0]["frame"].shape == (1, 3, *SIZE)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_int8_ort_quantizer_runs_on_ort(exported: dict[str, Exported], family: str) -> None:
    e = exported[family]
    result = P.convert(e.path, e.folder / f"{family}.int8.onnx", "int8", e.spec, e.calibration)
    assert (result.method, result.runs_on_ort_cpu) == ("ort-qdq-static", True)
    out = onnx.load(result.file)
    assert io_types(out) == io_types(e.fp32)
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    # Only the learned layers are quantised: the sensitive nodes see no DequantizeLinear input.
    producers = {o: n.op_type for n in out.graph.node for o in n.output}
    for node in out.graph.node:
        if node.name in result.kept_fp32:
            assert "DequantizeLinear" not in {producers.get(x) for x in node.input}, node.name
    if family == "mtu":
        assert {"ArgMax", "GridSample", "MatMul"} <= e.op_types(result.kept_fp32)
    metrics = e.psnr(result.file)
    print(f"\n{family} int8 (ORT QDQ) vs fp32 reference: {metrics['psnr_db']:.1f} dB, "
          f"{metrics['fraction_within_tol']:.4f} within tol")
    assert metrics["psnr_db"] >= 45.0  # the bar on every CPU: 7-bit weights do not saturate without VNNI
    assert result.quantization["weight_bits"] == 7 and result.quantization["max_abs_weight"] <= 64
    assert int8_weight_range(out) == result.quantization["max_abs_weight"]


@pytest.fixture(scope="module")
def full_range_int8(exported: dict[str, Exported]) -> Path:
    e = exported["mmprnn"]
    result = P.convert(e.path, e.folder / "mmprnn.int8full.onnx", "int8", e.spec, e.calibration,
                       int8_weights="full")
    assert result.quantization["weight_bits"] == 8 and result.quantization["max_abs_weight"] > 64
    assert "VNNI" in result.quantization["right_on"]
    return Path(result.file)


def test_int8_full_range_weights_on_a_cpu_without_vnni(exported: dict[str, Exported], full_range_int8: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The non-VNNI path, made visible on any machine by forcing the CPU flags: full-range weights
    run as float Q/DQ there (right), 7-bit weights keep the integer kernels (fast and right)."""
    from vdeblur.contract.device import cpu_info, int8_saturates
    from vdeblur.contract.precision import int8_settings

    e = exported["mmprnn"]
    reduced = P.convert(e.path, e.folder / "mmprnn.int8.onnx", "int8", e.spec, e.calibration).file
    monkeypatch.setenv("VDEBLUR_CPU_FLAGS", "sse4_2,avx,avx2,fma")  # an AVX2-only x86 CPU
    if cpu_info()["arch"] != "x86_64":
        pytest.skip("the U8S8 saturation is an x86-64 matter")
    assert int8_saturates() and cpu_info()["flags_overridden_by"] == "VDEBLUR_CPU_FLAGS"
    full = int8_settings(full_range_int8)
    assert full["disable_quant_qdq"] is True and "float Q/DQ" in full["note"] and full["weight_bits"] == 8
    assert int8_settings(reduced)["disable_quant_qdq"] is False
    assert int8_settings(e.path) is None  # fp32: no int8 weights
    # Float Q/DQ (what the runtime opens on such a CPU) keeps the int8 model's fidelity.
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(str(full_range_int8), opts, providers=["CPUExecutionProvider"])
    metrics = compare(stream_onnx(session, e.spec, e.clip.numpy()), e.reference)
    assert metrics["psnr_db"] >= 45.0
    monkeypatch.setenv("VDEBLUR_CPU_FLAGS", "avx2,avx512f,avx512_vnni")
    assert int8_settings(full_range_int8)["disable_quant_qdq"] is False  # VNNI: the integer kernels are right


def test_unknown_int8_weights(exported: dict[str, Exported]) -> None:
    e = exported["mtu"]
    with pytest.raises(UsageError, match="int8 weights: '4bit' is unknown"):
        P.convert(e.path, e.folder / "x.onnx", "int8", e.spec, e.calibration, int8_weights="4bit")


# --------------------------------------------------------------------------------------------
# ModelOpt
# --------------------------------------------------------------------------------------------


def test_modelopt_arguments() -> None:
    reader = P.StepCalibrationReader([{"frame": np.zeros((1, 3, 4, 4), np.float32)}])
    args = P.modelopt_arguments("in.onnx", "out.onnx", "fp8", reader, ["node_add_1", "a.b"])
    assert args["onnx_path"] == "in.onnx" and args["output_path"] == "out.onnx"
    assert args["quantize_mode"] == "fp8" and args["calibration_data_reader"] is reader
    assert args["high_precision_dtype"] == "fp32" and args["direct_io_types"] is False
    assert args["nodes_to_exclude"] == ["node_add_1$", r"a\.b$"]  # ModelOpt matches with re.match
    assert "cpu" in args["calibration_eps"]
    assert reader.get_first() is reader.get_next() and reader.get_next() is None
    reader.rewind()
    assert reader.get_next() is not None
    with pytest.raises(UsageError, match="modelopt: precision 'fp16' is not quantised"):
        P.modelopt_arguments("in.onnx", "out.onnx", "fp16", reader, [])


def test_modelopt_missing_names_the_extra(
    exported: dict[str, Exported], monkeypatch: pytest.MonkeyPatch
) -> None:
    e = exported["mmprnn"]
    monkeypatch.setitem(sys.modules, "modelopt", None)  # import modelopt... -> ImportError
    with pytest.raises(MissingDependencyError, match=r"modelopt: not installed.*vdeblur\[quant\]"):
        P.convert(e.path, e.folder / "x.onnx", "int8", e.spec, e.calibration, quantizer="modelopt")


def test_modelopt_int8_runs_on_ort(exported: dict[str, Exported]) -> None:
    pytest.importorskip("modelopt.onnx.quantization", reason="nvidia-modelopt[onnx] (extra [quant]) is absent")
    e = exported["mtu"]
    result = P.convert(e.path, e.folder / "mtu.mo-int8.onnx", "int8", e.spec, e.calibration, quantizer="modelopt")
    assert result.method == "modelopt-int8"
    assert io_types(onnx.load(result.file)) == io_types(e.fp32)
    if result.runs_on_ort_cpu:
        assert e.psnr(result.file)["psnr_db"] > 30.0


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_bad_arguments_fail_clearly(exported: dict[str, Exported], tmp_path: Path) -> None:
    e = exported["mmprnn"]
    dst = tmp_path / "x.onnx"
    with pytest.raises(UsageError, match=r"precision: 'int4' is unknown\. Expected one of fp32, fp16"):
        P.convert(e.path, dst, "int4", e.spec)
    with pytest.raises(UsageError, match=r"quantizer: 'tensorrt' is unknown"):
        P.convert(e.path, dst, "int8", e.spec, e.calibration, quantizer="tensorrt")
    with pytest.raises(UsageError, match=r"int8: no calibration frames\. Pass calibration="):
        P.convert(e.path, dst, "int8", e.spec)
    with pytest.raises(UsageError, match=r"int8: calibration frames have shape \(3, 64, 64\)"):
        P.convert(e.path, dst, "int8", e.spec, e.calibration[0])
    with pytest.raises(UsageError, match=r"fp8: the onnxruntime quantizer does not make fp8"):
        P.convert(e.path, dst, "fp8", e.spec, e.calibration)
    with pytest.raises(UsageError, match=r"mmprnn\.onnx: has inputs .* Pass the StepSpec the graph was exported"):
        P.convert(e.path, dst, "fp16", exported["mtu"].spec)
    with pytest.raises(UsageError, match=r"missing\.onnx: no such file"):
        P.convert(tmp_path / "missing.onnx", dst, "fp16", e.spec)
    assert not dst.exists()


# --------------------------------------------------------------------------------------------
# Rules on small synthetic graphs
# --------------------------------------------------------------------------------------------


def _graph(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], y_shape: list[int]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(m, full_check=True)
    return m


def test_normaliser_tails_and_plugin_traces_stay_fp32(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w")
    eps = numpy_helper.from_array(np.array(1e-12, np.float32), "eps")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    traced = helper.make_node("Mul", ["n", "n"], ["sq"], name="traced")
    entry = traced.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.stack_trace", 'File "/x/vdeblur/plugins/flow_warp/reference.py", line 3'
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("ReduceL2", ["c", "axes"], ["l2"], keepdims=1, name="l2"),
        helper.make_node("Clip", ["l2", "eps"], ["cl"], name="clip"),
        helper.make_node("Div", ["c", "cl"], ["n"], name="div"),  # F.normalize
        traced,
        helper.make_node("Softmax", ["sq"], ["s"], axis=1, name="softmax"),
        helper.make_node("Conv", ["s", "w"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    model = _graph(nodes, [w, eps, axes], [1, 4, 8, 8])
    assert P.sensitive_nodes(model) == ["l2", "clip", "div", "traced", "softmax"]
    low = P.mixed_precision(model, "fp16", P.sensitive_nodes(model))
    assert P.float32_nodes(low) == ["l2", "clip", "div", "traced", "softmax"]
    assert io_types(low) == {"x": TensorProto.FLOAT, "y": TensorProto.FLOAT}
    path = tmp_path / "low.onnx"
    onnx.save(low, str(path))
    x = rng.random((1, 4, 8, 8), dtype=np.float32)
    ref = ort_session(_save(model, tmp_path / "ref.onnx")).run(None, {"x": x})[0]
    out = ort_session(path).run(None, {"x": x})[0]
    assert out.dtype == np.float32 and np.abs(out - ref).max() < 1e-2 * np.abs(ref).max()


def test_a_default_constant_of_shape_follows_its_consumers_into_fp16(tmp_path: Path) -> None:
    """ConstantOfShape without ``value`` makes float32 zeros (the ONNX default); lowered, it must make
    fp16 zeros, or its fp16 consumer gets a float32 input (an invalid graph)."""
    shape = numpy_helper.from_array(np.array([1, 4, 8, 8], np.int64), "shape")
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"], name="zeros"),
        helper.make_node("Concat", ["x", "zeros"], ["cat"], axis=1, name="cat"),
        helper.make_node("Relu", ["cat"], ["y"], name="relu"),
    ]
    model = _graph(nodes, [shape], [1, 8, 8, 8])
    low = P.mixed_precision(model, "fp16", [])
    made = next(n for n in low.graph.node if n.op_type == "ConstantOfShape")
    assert [a.t.data_type for a in made.attribute if a.name == "value"] == [TensorProto.FLOAT16]
    x = np.random.default_rng(0).random((1, 4, 8, 8), dtype=np.float32)
    out = ort_session(_save(low, tmp_path / "low.onnx")).run(None, {"x": x})[0]
    assert out.shape == (1, 8, 8, 8) and not out[:, 4:].any() and np.abs(out[:, :4] - x).max() < 1e-3


def test_learned_matmul_bounds_the_motion_search_cone() -> None:
    w = numpy_helper.from_array(np.ones((8, 8), np.float32), "w")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w"], ["lin"], name="linear"),  # learned: the cone stops here
        helper.make_node("MatMul", ["lin", "lin"], ["corr"], name="corr"),
        helper.make_node("ArgMax", ["corr"], ["idx"], axis=1, name="argmax"),
        helper.make_node("Cast", ["idx"], ["y"], to=TensorProto.FLOAT, name="cast"),
    ]
    model = _graph(nodes, [w], [1, 1, 8, 8])
    assert P.sensitive_nodes(model) == ["corr", "argmax"]


def _save(model: onnx.ModelProto, path: Path) -> Any:
    onnx.save(model, str(path))
    return path


def test_specs_are_untouched(exported: dict[str, Exported]) -> None:
    """The manifest interface does not change: the spec round-trips and names every graph IO."""
    for e in exported.values():
        assert StepSpec.from_dict(e.spec.to_dict()) == e.spec
        out = onnx.load(P.convert(e.path, e.folder / "io.onnx", "fp16", e.spec).file)
        assert [i.name for i in out.graph.input] == e.spec.input_names
        assert [o.name for o in out.graph.output] == e.spec.output_names
        assert set(io_types(out).values()) <= {TensorProto.FLOAT, TensorProto.INT32}


def test_trt_lowering_keeps_plugin_nodes_and_their_flow_in_fp32(tmp_path: Path) -> None:
    """A graph of the trt lowering: the plugin nodes and the flow between them stay float32."""
    from vdeblur.plugins.lowering import plugin_nodes

    for node in plugin_nodes().values():
        node.register_schema()
    plugin = {"plugin_namespace": "vdeblur", "plugin_version": "1", "aot": 1}
    w = numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "w")
    four = numpy_helper.from_array(np.array(4.0, np.float32), "four")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["f"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("CorrelationArgmax", ["f", "f"], ["flow"], domain="vdeblur", name="search",
                         max_displacement=2, pool=5, **plugin),
        helper.make_node("Mul", ["flow", "four"], ["flow4"], name="scale"),
        helper.make_node("FlowWarp", ["f", "flow4"], ["warped"], domain="vdeblur", name="warp",
                         padding_mode="zeros", **plugin),
        helper.make_node("Conv", ["warped", "w"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], [w, four]), ir_version=10,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vdeblur", 1)],
    )
    assert P.sensitive_nodes(model) == ["search", "scale", "warp"]
    low = P.mixed_precision(model, "fp16", P.sensitive_nodes(model))
    assert P.float32_nodes(low) == ["search", "scale", "warp"]
    assert conv_weight_types(low) == {TensorProto.FLOAT16}
    assert io_types(low) == {"x": TensorProto.FLOAT, "y": TensorProto.FLOAT}
