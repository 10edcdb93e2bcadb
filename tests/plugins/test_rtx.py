"""The TensorRT-RTX plugins generated from the OpSpecs (vdeblur/plugins/rtx.py).

With the real tensorrt_rtx (its ONNX parser and builder run on a CPU): registration, what the
parser hands the creators (fields, their types and order, the NUL after a STRING, the node name),
shape rules in the real expression builder. ``enqueue`` and the kernel launch need a GPU: they run
here against fakes of the CUDA driver that check what the real one would be given.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from vdeblur.errors import BackendError, UsageError
from vdeblur.plugins import rtx
from vdeblur.plugins.registry import get, specs

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (the [tensorrt-rtx] extra)")
pytestmark = pytest.mark.tensorrt_rtx


@pytest.fixture(scope="module")
def registered() -> dict[str, Any]:
    from vdeblur.plugins.lowering import register_tensorrt_rtx_plugins

    trt_module = rtx.import_tensorrt_rtx()
    register_tensorrt_rtx_plugins()
    return {"trt": trt_module, "creators": dict(rtx._REGISTERED)}


def test_registration_is_idempotent(registered: dict[str, Any]) -> None:
    from vdeblur.plugins.lowering import register_tensorrt_rtx_plugins

    register_tensorrt_rtx_plugins()  # again: a no-op, not an error
    assert rtx._REGISTERED == registered["creators"] and set(rtx._REGISTERED) == {s.id for s in specs().values()}
    for spec in specs().values():
        assert rtx.register(spec) is registered["creators"][spec.id]
        creator = registered["creators"][spec.id]
        assert (creator.name, creator.plugin_namespace, creator.plugin_version) == (spec.plugin_name, "vdeblur", "1")
        assert [f.name for f in creator.field_names] == [a.name for a in spec.attrs]
        kinds = {"INT": trt.PluginFieldType.INT32, "FLOAT": trt.PluginFieldType.FLOAT32,
                 "STRING": trt.PluginFieldType.CHAR}
        assert [f.type for f in creator.field_names] == [kinds[a.type] for a in spec.attrs]


def test_import_vdeblur_plugins_stays_torch_and_tensorrt_free() -> None:
    code = ("import sys, vdeblur.plugins, vdeblur.plugins.rtx, vdeblur.plugins.lowering; "
            "print(sorted(m for m in ('torch', 'tensorrt_rtx', 'cuda', 'triton', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _model(nodes: list[Any]) -> Any:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, "H", "W"])
    flow = helper.make_tensor_value_info("flow", TensorProto.FLOAT, [1, 2, "H", "W"])
    outs = [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in nodes]
    return helper.make_model(helper.make_graph(nodes, "g", [x, flow], outs),
                             opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vdeblur", 1)])


def test_what_the_parser_hands_the_creators(registered: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the declared fields, in the creator's order (not the node's), INT as INT32, STRING as
    CHAR with its NUL (stripped before the spec sees it), the ONNX node's name; then a CPU build
    runs the shape rules in the real expression builder."""
    from onnx import helper

    seen: list[tuple[str, list[tuple[str, Any, bytes]], dict[str, Any]]] = []
    real = rtx.read_fields

    def spy(spec: Any, fields: Any) -> dict[str, Any]:
        raw = [(str(f.name), f.type, np.asarray(f.data).astype(np.uint8).tobytes()) for f in fields]
        values = real(spec, fields)
        seen.append((spec.plugin_name, raw, values))
        return values

    monkeypatch.setattr(rtx, "read_fields", spy)
    warp = helper.make_node("FlowWarp", ["x", "flow"], ["warped"], name="my_warp", domain="vdeblur",
                            padding_mode="border", plugin_version="1", plugin_namespace="vdeblur")
    corr = helper.make_node("Correlation", ["x", "x"], ["cost"], name="my_corr", domain="vdeblur")
    corr.attribute.extend([helper.make_attribute("stride", 2), helper.make_attribute("unrelated", 7),
                           helper.make_attribute("max_displacement", 4)])  # not in the creator's order
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(_model([warp, corr]).SerializeToString())
    by_op = {name: (raw, values) for name, raw, values in seen}
    raw, values = by_op["FlowWarp"]
    assert raw == [("padding_mode", trt.PluginFieldType.CHAR, b"border\x00")] and values == {"padding_mode": "border"}
    raw, values = by_op["Correlation"]
    assert [(n, t) for n, t, _ in raw] == [("max_displacement", trt.PluginFieldType.INT32),
                                           ("stride", trt.PluginFieldType.INT32)]
    assert values == {"max_displacement": 4, "stride": 2}
    layers = {network.get_layer(i).name: network.get_layer(i) for i in range(network.num_layers)}
    assert {"my_warp", "my_corr"} <= set(layers)
    assert tuple(network.get_output(0).shape) == (1, 4, -1, -1)
    assert tuple(network.get_output(1).shape) == (1, 25, -1, -1)  # K = 2 * (4 // 2) + 1
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 4, 8, 8), (1, 4, 16, 16), (1, 4, 32, 32))
    profile.set_shape("flow", (1, 2, 8, 8), (1, 2, 16, 16), (1, 2, 32, 32))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is not None


def test_fields_round_trip_and_rules(registered: dict[str, Any]) -> None:
    spec = get("flow_warp")
    fields = rtx.field_collection(trt, spec, {"padding_mode": "zeros"})
    assert np.asarray(fields[0].data).astype(np.uint8).tobytes() == b"zeros\x00"
    assert rtx.read_fields(spec, fields) == {"padding_mode": "zeros"}
    assert rtx.read_fields(spec, trt.PluginFieldCollection([])) == {"padding_mode": "zeros"}  # the default
    with pytest.raises(UsageError, match=r"padding_mode='wrap' is unknown"):
        rtx.read_fields(spec, rtx.field_collection(trt, spec, {"padding_mode": "wrap"}))
    corr = get("correlation")
    with pytest.raises(UsageError, match=r"attribute max_displacement is missing"):
        rtx.read_fields(corr, trt.PluginFieldCollection([]))
    values = rtx.read_fields(corr, rtx.field_collection(trt, corr, {"max_displacement": 3, "stride": 1}))
    assert values == {"max_displacement": 3, "stride": 1}


# --------------------------------------------------------------------------------------------
# enqueue and the launch, on fakes of the CUDA driver
# --------------------------------------------------------------------------------------------

PTX = """
.visible .entry flow_warp_kernel(
\t.param .u64 .ptr .global .align 1 flow_warp_kernel_param_0,
\t.param .u64 .ptr .global .align 1 flow_warp_kernel_param_1,
\t.param .u32 flow_warp_kernel_param_2,
\t.param .u32 flow_warp_kernel_param_3,
\t.param .u32 flow_warp_kernel_param_4,
\t.param .u64 .ptr .global .align 1 flow_warp_kernel_param_5{extra}
)
"""


class FakeDriver:
    """cuda.bindings.driver as far as Launcher uses it; records launches and decodes the parameters."""

    CUdevice_attribute = SimpleNamespace(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR=75,
                                         CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR=76)
    CUfunction_attribute = SimpleNamespace(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES=8)

    def __init__(self, cc: tuple[int, int] = (8, 9), kinds: list[str] | None = None) -> None:
        self.cc, self.kinds = cc, kinds
        self.loads: list[bytes] = []
        self.launches: list[dict[str, Any]] = []

    def CUstream(self, value: int) -> int:  # noqa: N802 - the driver's name
        return value

    def cuCtxGetDevice(self) -> tuple[int, int]:  # noqa: N802
        return 0, 0

    def cuCtxGetCurrent(self) -> tuple[int, int]:  # noqa: N802
        return 0, 0xC0

    def cuDeviceGetAttribute(self, attr: int, device: int) -> tuple[int, int]:  # noqa: N802
        return 0, self.cc[0] if attr == 75 else self.cc[1]

    def cuModuleLoadData(self, image: bytes) -> tuple[int, str]:  # noqa: N802
        assert image.endswith(b"\x00")
        self.loads.append(image)
        return 0, "module"

    def cuModuleGetFunction(self, module: str, name: bytes) -> tuple[int, str]:  # noqa: N802
        return 0, f"fn:{name.decode()}"

    def cuLaunchKernel(self, fn: str, gx: int, gy: int, gz: int, bx: int, by: int, bz: int, shared: int,  # noqa: N802
                       stream: int, params: int, extra: int) -> tuple[int]:
        pointers = (ctypes.c_void_p * len(self.kinds or [])).from_address(params)
        values = []
        for kind, address in zip(self.kinds or [], pointers, strict=True):
            c_type = ctypes.c_uint64 if kind == "ptr" else ctypes.c_int32
            values.append(c_type.from_address(address).value)
        self.launches.append({"fn": fn, "grid": (gx, gy, gz), "block": (bx, by, bz), "shared": shared,
                              "stream": stream, "args": values, "extra": extra})
        return (0,)

    def cuGetErrorName(self, status: Any) -> tuple[int, bytes]:  # noqa: N802
        return 0, b"CUDA_ERROR_FAKE"


def _desc(dims: tuple[int, ...], dtype: Any) -> Any:
    return SimpleNamespace(dims=dims, type=dtype)


def test_enqueue_launches_the_kernel_with_the_launch_plan() -> None:
    """Shapes -> the spec's grid and scalars; inputs, scalars, outputs in the kernel's order; PTX for
    the newest target <= the GPU's."""
    spec = get("flow_warp")
    ptx = PTX.format(extra="")
    kinds = rtx.ptx_param_kinds(ptx, "flow_warp_kernel")
    driver = FakeDriver(cc=(12, 1), kinds=kinds)
    compiled: list[tuple[Any, ...]] = []

    def compile_op(s: Any, dtype: str, attrs: dict[str, Any], arch: int) -> Any:
        compiled.append((s.id, dtype, dict(attrs), arch))
        return SimpleNamespace(name="flow_warp_kernel", ptx=ptx, block_x=128, shared_mem=0)

    plugin_class, creator_class = rtx.plugin_classes(spec, trt, launcher=rtx.Launcher(driver), compile_op=compile_op)
    creator = creator_class()
    plugin = creator.create_plugin("node", rtx.field_collection(trt, spec, {"padding_mode": "border"}),
                                   trt.TensorRTPhase.RUNTIME)
    x, flow = _desc((2, 4, 24, 40), trt.float16), _desc((2, 2, 24, 40), trt.float16)
    for _ in range(2):
        plugin.enqueue([x, flow], [_desc((2, 4, 24, 40), trt.float16)], [0x1000, 0x2000], [0x3000], 0, 0x77)
    assert compiled[0] == ("vdeblur::FlowWarp", "float16", {"padding_mode": "border"}, 120)
    assert len(driver.loads) == 1  # loaded once per context
    launch = driver.launches[0]
    assert launch["grid"] == (-(-24 * 40 // 128), 2, 1) and launch["block"] == (128, 1, 1)
    assert launch["stream"] == 0x77 and launch["fn"] == "fn:flow_warp_kernel"
    assert launch["args"] == [0x1000, 0x2000, 4, 24, 40, 0x3000]
    twin = plugin.clone()
    assert isinstance(twin, plugin_class) and twin.attrs == plugin.attrs


def test_launch_args_reject_a_mismatched_kernel() -> None:
    with pytest.raises(BackendError, match=r"the kernel declares parameters \['ptr', 'i32'\]\. Expected "
                                           r"\['ptr', 'ptr'\]"):
        rtx.launch_args(["ptr", "i32"], [1], [], [2])
    assert rtx.launch_args(["ptr", "i32", "ptr"], [1], [5], [2]) == [("ptr", 1), ("i32", 5), ("ptr", 2)]
    with pytest.raises(BackendError, match="declares parameters"):  # Triton's scratch pointers left in the PTX
        rtx.launch_args(["ptr", "i32", "ptr", "ptr"], [1], [5], [2])
    assert rtx.kernel_arch(89) == 89 and rtx.kernel_arch(121) == 120 and rtx.kernel_arch(87) == 86
    with pytest.raises(BackendError, match=r"sm_70 is older than every kernel target"):
        rtx.kernel_arch(70)


def test_launcher_reports_driver_errors() -> None:
    driver = FakeDriver(kinds=["ptr"])
    driver.cuModuleLoadData = lambda image: (209, None)  # type: ignore[method-assign]
    kernel = SimpleNamespace(name="k", ptx=".entry k(.param .u64 a)", block_x=32, shared_mem=0)
    with pytest.raises(BackendError, match=r"tensorrt-rtx plugin: loading the PTX of k failed \(CUDA_ERROR_FAKE\)"):
        rtx.Launcher(driver).launch(kernel, (1, 1, 1), [("ptr", 1)], 0)


def test_missing_cuda_python_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from vdeblur.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(MissingDependencyError, match=r"cuda-python: not installed.*vdeblur\[tensorrt-rtx\]"):
        rtx.import_cuda_driver()


@pytest.mark.gpu
def test_enqueue_runs_the_kernel_on_a_gpu() -> None:
    """On an NVIDIA GPU: the plugin's enqueue, through cuda-python, against the reference."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU (CUDA)")
    from vdeblur.plugins.flow_warp.reference import flow_warp

    spec = get("flow_warp")
    _, creator_class = rtx.plugin_classes(spec, trt)
    plugin = creator_class().create_plugin("n", rtx.field_collection(trt, spec, {"padding_mode": "zeros"}),
                                           trt.TensorRTPhase.RUNTIME)
    x = torch.rand(1, 3, 20, 36, device="cuda")
    flow = (torch.rand(1, 2, 20, 36, device="cuda") - 0.5) * 6
    out = torch.empty_like(x)
    stream = torch.cuda.current_stream()
    plugin.enqueue([_desc(tuple(x.shape), trt.float32), _desc(tuple(flow.shape), trt.float32)],
                   [_desc(tuple(out.shape), trt.float32)], [x.data_ptr(), flow.data_ptr()], [out.data_ptr()], 0,
                   stream.cuda_stream)
    torch.cuda.synchronize()
    torch.testing.assert_close(out, flow_warp(x, flow, "zeros"), atol=1e-4, rtol=0)
