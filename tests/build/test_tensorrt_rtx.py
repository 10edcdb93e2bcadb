"""`vdeblur build --backend tensorrt-rtx`: real TensorRT-RTX engines built on this CPU.

TensorRT-RTX's ONNX parser and builder run without a GPU, so every family's plugin (``trt``) graph
and portable graph, in every precision the exporter writes, is parsed and built here for real, with
the optimisation profile taken from the manifest (tiny sizes: the size does not change what is
tested). The vdeblur plugins' shape and type rules run inside TensorRT-RTX's expression builder.
Deserialising an engine needs an RTX GPU: see tests/runtime/test_backend_tensorrt_rtx.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import MMPRNN, MTU
from vdeblur.build import build, plan
from vdeblur.build import tensorrt_rtx as build_rtx
from vdeblur.contract import engines
from vdeblur.contract import manifest as manifest_mod
from vdeblur.errors import MissingDependencyError, UsageError

trt_rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (the [tensorrt-rtx] extra)")
pytestmark = pytest.mark.tensorrt_rtx

SHAPES = "32x48:32x48:64x64"  # min:opt:max; tiny: builds take ~0.3-1.5 s each on 2 CPU cores
PRECISIONS = ["fp32", "fp16", "bf16", "int8"]  # what the exporter writes without NVIDIA ModelOpt
FAMILIES = {"mtu": ("mtu2", MTU), "mmprnn": ("mmprnn_a3b4c16", MMPRNN)}


@pytest.fixture(scope="module")
def rtx_artifacts(tmp_path_factory: pytest.TempPathFactory, mtu_all_precisions: tuple[Path, dict]
                  ) -> dict[str, Path]:
    """Private copies of mtu and mmprnn artifacts with trt and portable graphs in fp32, fp16, bf16 and
    int8 (mtu: the session's, shared with the export tests; mmprnn: exported here)."""
    from vdeblur.export.artifact import export_artifact

    root = tmp_path_factory.mktemp("rtx")
    shutil.copytree(mtu_all_precisions[0], root / "mtu", ignore=shutil.ignore_patterns("engines"))
    preset, overrides = FAMILIES["mmprnn"]
    calibration = np.random.default_rng(0).random((3, 3, 32, 48), dtype=np.float32)
    report = export_artifact(preset, root / "mmprnn", overrides=overrides, plugins="trt", height=32, width=48,
                             frames=2, precisions=PRECISIONS, calibration=calibration)
    assert report["skipped"] == []
    return {"mtu": root / "mtu", "mmprnn": root / "mmprnn"}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_graph_of_every_precision_builds(family: str, rtx_artifacts: dict[str, Path]) -> None:
    artifact = rtx_artifacts[family]
    man = manifest_mod.read(artifact)
    graphs = {(g.precision, g.lowering): g for g in man.graphs}
    assert {p for p, _ in graphs} == set(PRECISIONS)
    assert ("int8", "trt") not in graphs  # the exporter writes no plugin-lowered int8 graph
    built = {}
    for (precision, lowering), entry in sorted(graphs.items()):
        result = build(artifact, "tensorrt-rtx", precision, shapes=SHAPES, lowering=lowering)
        engine, sidecar = Path(result["engine"]), Path(result["sidecar"])
        assert engine.parent == artifact / "engines" / "tensorrt-rtx" / precision
        meta = json.loads(sidecar.read_text())
        assert engine.stat().st_size == meta["bytes"] > 100_000 and meta["key"] == result["cache_key"]
        assert meta["backend"] == "tensorrt-rtx" and meta["tensorrt"] == trt_rtx.__version__
        # a cache hit where two lowerings are the same bytes (MMP-RNN has no plugin op) names the first file
        assert meta["onnx"]["sha256"] == entry.sha256
        assert result["cache_hit"] or meta["onnx"] == {"file": entry.file, "sha256": entry.sha256,
                                                       "lowering": lowering}
        assert meta["compute_capabilities"] == list(engines.RTX_DEFAULT_TARGETS) and meta["default_targets"]
        # the profile comes from the manifest: the frame and every state, at the --shapes sizes
        assert list(meta["profiles"]) == man.interface["input_names"]
        assert meta["profiles"]["frame"] == {"min": [1, 3, 32, 48], "opt": [1, 3, 32, 48], "max": [1, 3, 64, 64]}
        for state in man.interface["states"]:
            assert state["input_name"] in meta["dynamic_inputs"] or "Hp" not in str(state["shape"])
        if lowering == "trt" and man.plugins:
            assert meta["plugins"] == sorted(p["id"] if isinstance(p, dict) else p for p in man.plugins)
        notes = " ".join(result["notes"])
        if precision == "int8":
            assert "made symmetric int8" in notes and "integer-bias DequantizeLinear nodes folded" in notes
            if not result["cache_hit"]:  # the rewritten graph is measured against fp32, as the export measured
                check = result["rewrite_check"]
                assert check["measured"] and check["passed"] and check["psnr_db"] >= 35.0, check
                assert json.loads(sidecar.read_text())["rewrite_check"] == check
        else:
            assert result.get("rewrite_check") is None
        if precision == "bf16" and not result["cache_hit"]:
            assert "bf16 ConvTranspose nodes run in fp32" in notes
        built[(precision, lowering)] = result["cache_key"]
    # one engine per distinct graph (MMP-RNN has no plugin op: its two lowerings are one graph)
    distinct = {(p, g.sha256) for (p, _), g in graphs.items()}
    assert len(set(built.values())) == len(distinct)
    assert len(engines.list_engines(artifact, backend="tensorrt-rtx")) == len(distinct)


def test_a_rewritten_int8_graph_below_its_bar_writes_no_engine(rtx_artifacts: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from vdeblur.contract import precision
    from vdeblur.errors import BackendError

    artifact = tmp_path / "art"
    shutil.copytree(rtx_artifacts["mtu"], artifact, ignore=shutil.ignore_patterns("engines"))
    monkeypatch.setitem(precision.VARIANT_BARS, "int8", precision.FrameBar(300.0, 0.0))
    with pytest.raises(BackendError, match=r"rewritten for TensorRT falls short of its bar against the fp32 graph "
                                           r"\(PSNR [0-9.]+ dB < 300\.0 dB\)\. .*no engine was written"):
        build(artifact, "tensorrt-rtx", "int8", shapes=SHAPES)
    assert engines.list_engines(artifact, backend="tensorrt-rtx") == []


def test_plugin_graph_builds_with_the_plugins_of_the_spec(rtx_artifacts: dict[str, Path]) -> None:
    """The mtu trt graph holds plugin nodes; they become PLUGIN_V3 layers with the spec's output shapes."""
    from vdeblur.plugins.lowering import register_tensorrt_rtx_plugins
    from vdeblur.plugins.rtx import import_tensorrt_rtx

    artifact = rtx_artifacts["mtu"]
    trt = import_tensorrt_rtx()
    register_tensorrt_rtx_plugins()
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(0)
    assert trt.OnnxParser(network, logger).parse_from_file(str(artifact / "model.onnx"))
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    plugin_layers = [layer for layer in layers if layer.type == trt.LayerType.PLUGIN_V3]
    assert plugin_layers, "the trt graph of mtu has plugin nodes"
    for layer in plugin_layers:
        out = layer.get_output(0)
        assert out.shape[0] == 1 and -1 in tuple(out.shape)  # N from the input, H and W stay symbolic


def test_cache_key_has_the_version_and_the_targets(rtx_artifacts: dict[str, Path], tmp_path: Path) -> None:
    artifact = tmp_path / "mtu"
    shutil.copytree(rtx_artifacts["mtu"], artifact, ignore=shutil.ignore_patterns("engines"))
    p = plan(artifact, "tensorrt-rtx", "fp16", SHAPES, compute_capability="8.9,8.6")
    assert p.settings["compute_capabilities"] == ["8.6", "8.9"] and p.cached is False and p.cache_key
    first = build(artifact, "tensorrt-rtx", "fp16", shapes=SHAPES, compute_capability="8.6,8.9")
    assert first["cache_key"] == p.cache_key and first["compute_capabilities"] == "8.6, 8.9"
    assert json.loads(Path(first["sidecar"]).read_text())["compute_capabilities"] == ["8.6", "8.9"]
    again = build(artifact, "tensorrt-rtx", "fp16", shapes=SHAPES, compute_capability="sm89,86")
    assert again["cache_hit"] and again["engine"] == first["engine"]
    assert plan(artifact, "tensorrt-rtx", "fp16", SHAPES, compute_capability="8.6,8.9").cached is True
    other = build(artifact, "tensorrt-rtx", "fp16", shapes=SHAPES, compute_capability="12.0")
    assert not other["cache_hit"] and other["cache_key"] != first["cache_key"]
    # the version and the targets are components of the key; a TensorRT key of the same graph differs
    args = ("a" * 64, "fp16", [(32, 48)] * 3)
    base = build_rtx.rtx_key(*args, "1.7.1.116", ("8.6",), {}, 1, 3, {})
    assert base != build_rtx.rtx_key(*args, "1.7.2.1", ("8.6",), {}, 1, 3, {})
    assert base != build_rtx.rtx_key(*args, "1.7.1.116", ("8.6", "8.9"), {}, 1, 3, {})
    assert base != build_rtx.rtx_key(*args, "1.7.1.116", None, {}, 1, 3, {})
    assert engines.cache_key(*args, "1.7.1.116", {"compute_capabilities": ["8.6"]}) != engines.cache_key(
        *args, "1.7.1.116", {"compute_capabilities": ["8.6"]}, backend="tensorrt-rtx")


def test_unsupported_targets_and_arguments_are_usage_errors(rtx_artifacts: dict[str, Path]) -> None:
    artifact = rtx_artifacts["mtu"]
    with pytest.raises(UsageError, match=r"^--compute-capability '9\.0': is not a TensorRT-RTX target\. Expected a "
                                         r"comma list of 7\.5, 8\.0, 8\.6, 8\.9, 12\.0, 12\.1\. Data-center GPUs"):
        build(artifact, "tensorrt-rtx", "fp32", shapes=SHAPES, compute_capability="8.6,9.0")
    with pytest.raises(UsageError, match=r"'70': is not a TensorRT-RTX target"):
        plan(artifact, "tensorrt-rtx", compute_capability="70")
    with pytest.raises(UsageError, match=r"--compute-capability is for --backend tensorrt-rtx"):
        plan(artifact, "tensorrt", compute_capability="8.6")
    with pytest.raises(UsageError, match=r"--lowering 'trt' is not built by onnxruntime"):
        plan(artifact, "onnxruntime", lowering="trt")


def test_missing_extra_names_it(rtx_artifacts: dict[str, Path], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = tmp_path / "mtu"
    shutil.copytree(rtx_artifacts["mtu"], artifact, ignore=shutil.ignore_patterns("engines"))
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    p = plan(artifact, "tensorrt-rtx", "fp32", SHAPES)  # a plan needs no TensorRT-RTX
    assert p.cache_key is None and any("tensorrt_rtx is not installed" in n for n in p.notes)
    with pytest.raises(MissingDependencyError, match=r"^tensorrt_rtx: not installed, but building a TensorRT-RTX "
                                                     r"engine needs it\. .*pip install 'vdeblur\[tensorrt-rtx\]'"):
        build(artifact, "tensorrt-rtx", "fp32", shapes=SHAPES)
    assert not (artifact / "engines").exists()


def test_cli_builds_in_a_fresh_process(rtx_artifacts: dict[str, Path], tmp_path: Path) -> None:
    artifact = tmp_path / "mtu"
    shutil.copytree(rtx_artifacts["mtu"], artifact, ignore=shutil.ignore_patterns("engines"))
    cmd = [sys.executable, "-m", "vdeblur", "build", str(artifact), "--backend", "tensorrt-rtx", "--shapes", SHAPES,
           "--compute-capability", "8.6", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["lowering"] == "trt" and Path(result["engine"]).stat().st_size > 100_000
    bad = subprocess.run([*cmd[:-3], "--compute-capability", "9.0", "--json"], capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 2 and "is not a TensorRT-RTX target" in json.loads(bad.stdout)["error"]["message"]


# --------------------------------------------------------------------------------------------
# The graph rewrites (what TensorRT's parser rejects in the exporter's graphs)
# --------------------------------------------------------------------------------------------


def test_int8_rewrites_keep_the_numbers(rtx_artifacts: dict[str, Path], tmp_path: Path) -> None:
    """The integer-bias fold is exact; the symmetric int8 graph stays close to the validated one on
    ONNX Runtime (what the TensorRT-RTX int8 engine computes cannot be run here)."""
    import onnx
    import onnxruntime as ort

    from vdeblur.build.tensorrt import fold_int32_dequantize, symmetric_activations

    source = rtx_artifacts["mtu"] / "model.portable.int8.onnx"
    model = onnx.load(str(source))
    sess = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    from vdeblur.build.profile import input_profiles

    profiles = input_profiles(manifest_mod.read(source.parent).interface, ((32, 48),) * 3)
    rng = np.random.default_rng(1)
    feeds = {}
    for i in sess.get_inputs():
        shape = profiles[i.name]["opt"]
        kind = np.int64 if "int64" in i.type else np.int32 if "int32" in i.type else np.float32
        feeds[i.name] = rng.random(shape).astype(kind) if kind == np.float32 else np.ones(shape, kind)
    want = sess.run(None, feeds)
    assert fold_int32_dequantize(model) > 0 and fold_int32_dequantize(model) == 0
    folded = tmp_path / "folded.onnx"
    onnx.save(model, str(folded))
    no_fusion = ort.SessionOptions()
    no_fusion.add_session_config_entry("session.disable_quant_qdq", "1")
    exact = ort.InferenceSession(str(folded), no_fusion, providers=["CPUExecutionProvider"]).run(None, feeds)
    reference = ort.InferenceSession(str(source), no_fusion, providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(exact[0], reference[0], atol=1e-5)
    assert symmetric_activations(model) > 0 and symmetric_activations(model) == 0
    assert not [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.UINT8]
    sym = tmp_path / "sym.onnx"
    onnx.save(model, str(sym))
    got = ort.InferenceSession(str(sym), no_fusion, providers=["CPUExecutionProvider"]).run(None, feeds)
    err = np.abs(got[0] - want[0])
    assert err.mean() < 0.05 * max(np.abs(want[0]).mean(), 1e-3), err.mean()


# --------------------------------------------------------------------------------------------
# The parser's library: the wheel's packaging bug
# --------------------------------------------------------------------------------------------


def test_parser_library_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vdeblur.errors import BackendError
    from vdeblur.plugins.rtx import PARSER_LIBRARY, SONAME, ensure_parser_library

    libs = tmp_path / "libs"
    libs.mkdir()
    assert ensure_parser_library(libs, env={}) is None  # no library there: nothing to do
    (libs / SONAME).write_bytes(b"\x7fELF")
    other = tmp_path / "ld"
    other.mkdir()
    (other / PARSER_LIBRARY).write_bytes(b"")
    assert ensure_parser_library(libs, env={"LD_LIBRARY_PATH": f"/nope:{other}"}) == other / PARSER_LIBRARY
    assert not (libs / PARSER_LIBRARY).exists()  # found on LD_LIBRARY_PATH: the wheel is left alone
    link = ensure_parser_library(libs, env={})
    assert link == libs / PARSER_LIBRARY and os.readlink(link) == SONAME
    assert ensure_parser_library(libs, env={}) == link  # again: nothing to do
    if os.geteuid() != 0:  # root writes into read-only directories
        locked = tmp_path / "locked"
        locked.mkdir()
        (locked / SONAME).write_bytes(b"")
        locked.chmod(0o555)
        try:
            with pytest.raises(BackendError, match=r"tensorrt_rtx: its ONNX parser loads libtensorrt_rtx\.so, .* "
                                                   r"`ln -s libtensorrt_rtx\.so\.1 "):
                ensure_parser_library(locked, env={})
        finally:
            locked.chmod(0o755)
    else:
        monkeypatch.setattr(os, "symlink", _read_only)
        locked = tmp_path / "locked"
        locked.mkdir()
        (locked / SONAME).write_bytes(b"")
        with pytest.raises(BackendError, match=r"tensorrt_rtx: its ONNX parser loads libtensorrt_rtx\.so, which the "
                                               r"tensorrt-rtx wheel does not ship .* `ln -s libtensorrt_rtx\.so\.1 "):
            ensure_parser_library(locked, env={})


def _read_only(*args: Any) -> None:
    raise PermissionError(13, "Read-only file system")


_SHIM = """
import sys
from onnx import TensorProto, helper
import tensorrt_rtx as trt
from vdeblur.plugins import registry, rtx
if sys.argv[1] == "fixed":
    print("link", rtx.ensure_parser_library(), flush=True)
for spec in registry.specs().values():
    rtx.register(spec, trt)
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
flow = helper.make_tensor_value_info("flow", TensorProto.FLOAT, [1, 2, 8, 8])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
node = helper.make_node("FlowWarp", ["x", "flow"], ["y"], domain="vdeblur", padding_mode="zeros")
model = helper.make_model(helper.make_graph([node], "g", [x, flow], [y]),
                          opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vdeblur", 1)])
logger = trt.Logger(trt.Logger.ERROR)
network = trt.Builder(logger).create_network(0)
print("parsed", trt.OnnxParser(network, logger).parse(model.SerializeToString()), flush=True)
"""


def test_without_the_link_the_parser_aborts_and_the_fix_works(tmp_path: Path) -> None:
    """The packaging bug, reproduced on a copy of the libraries' directory (symlinks to the real
    files, so $ORIGIN is the copy): the first plugin node aborts the process; with
    :func:`ensure_parser_library` it parses."""
    import tensorrt_rtx_libs

    real = Path(tensorrt_rtx_libs.__file__).resolve().parent
    shim = tmp_path / "tensorrt_rtx_libs"
    shim.mkdir()
    shutil.copy(real / "__init__.py", shim / "__init__.py")
    for lib in real.glob("*.so.*"):
        (shim / lib.name).symlink_to(lib)
    script = tmp_path / "parse.py"
    script.write_text(_SHIM)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[2])])}
    env.pop("LD_LIBRARY_PATH", None)
    broken = subprocess.run([sys.executable, str(script), "as-shipped"], capture_output=True, text=True, env=env,
                            check=False)
    assert broken.returncode != 0 and "parsed" not in broken.stdout
    assert "terminate called" in broken.stderr
    fixed = subprocess.run([sys.executable, str(script), "fixed"], capture_output=True, text=True, env=env,
                           check=False)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert f"link {shim / 'libtensorrt_rtx.so'}" in fixed.stdout and "parsed True" in fixed.stdout
