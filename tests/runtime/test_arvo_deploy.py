"""ARVo deployed under the step contract: `vdeblur export arvo --checkpoint ... --set ...` then Stream and
`vdeblur run` on ONNX Runtime reproduce run_clip; fp16 keeps the all-range softmax in float32; the trt
lowering holds the plugin nodes.

One module artifact: a tiny ARVo (seeded weights, saved as ``{'params': state_dict}``; the paper's three
pyramid levels, narrow widths, max displacement 1) exported through the CLI with both lowerings and
fp32/fp16/int8 graphs (about 90 s: the step graph holds two stages, and the exporter spends ~5 s per
volume_aggregate Scan of the portable graph). The example size is 64x64: at 32 rows the 1/32 pyramid level
would be one pixel high and torch.export would specialise the height.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from tests.models.test_arvo import seeded_arvo
from tests.runtime.deploy_helpers import run_clip_np, stream_onnxruntime, write_png_folder
from vdeblur.data.texture import moving_texture
from vdeblur.metrics import psnr

pytestmark = pytest.mark.slow

TINY = {"num_feat": 8, "num_enc_block": 0, "num_dec_block": 1, "levels": 3, "flow_feat": 4, "max_displacement": 1}
HEIGHT, WIDTH = 40, 54  # not multiples of 16: the runtime pads (replicate) and crops


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from vdeblur.cli import main

    root = tmp_path_factory.mktemp("arvo")
    model = seeded_arvo(TINY, 1)
    checkpoint = root / "arvo_tiny.pth"
    torch.save({"params": model.state_dict()}, checkpoint)
    calibration = write_png_folder(root / "calibration", moving_texture(6, 64, 64, seed=6))  # int8
    out = root / "artifact"
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    assert main(["--json", "export", "arvo", "--checkpoint", str(checkpoint), *sets, "--out", str(out),
                 "--plugins", "trt", "--precision", "fp32,fp16,int8", "--calibration", str(calibration),
                 "--height", "64", "--width", "64", "--frames", "4"]) == 0
    return out, model


def _video(frames: int, seed: int = 3) -> np.ndarray:
    return moving_texture(frames, HEIGHT, WIDTH, seed=seed)  # (T, 3, H, W) float32 in [0, 1]




def _nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node, subgraphs (Scan bodies) included."""
    out = []
    for n in graph.node:
        out.append(n)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out += _nodes(a.g)
    return out


def test_the_manifest_states_a_step_graph_with_lookahead_two(deployed: tuple[Path, Any]) -> None:
    artifact, _ = deployed
    m = json.loads((artifact / "manifest.json").read_text())
    assert m["kind"] == "step" and m["model"]["family"] == "arvo" and m["model"]["config"] == TINY
    assert m["model"]["checkpoint"]["sha256"] and not m["model"]["random_weights"]
    interface = m["interface"]
    assert interface["lookahead"] == 2 and interface["pad_multiple"] == 16
    assert interface["flush"] == {"steps": 2, "frame": "repeat_last", "flag_input": None}
    assert [s["input_name"] for s in interface["states"]] == ["counter", "frames", "stage1"]
    assert {p["id"] for p in m["plugins"]} == {"vdeblur::Correlation", "vdeblur::FlowWarp",
                                               "vdeblur::VolumeAggregate"}
    results = json.loads((artifact / "report.json").read_text())["validation"]["results"]
    assert results["fp32"]["psnr_db"] > 60 and results["fp16"]["passed"]


def test_the_trt_lowering_holds_the_plugin_nodes(deployed: tuple[Path, Any]) -> None:
    artifact, _ = deployed
    m = json.loads((artifact / "manifest.json").read_text())
    graphs = {(g["precision"], g["lowering"]): g for g in m["graphs"]}
    trt = onnx.load(str(artifact / graphs["fp32", "trt"]["file"]))
    ops = [n.op_type for n in trt.graph.node if n.domain == "vdeblur"]
    # per stage: PWC-Net's 3 cost volumes and 2 feature warps + 1 frame warp (batched), one aggregation per level
    assert ops.count("VolumeAggregate") == 2 * TINY["levels"]
    assert ops.count("Correlation") == 2 * 3 and ops.count("FlowWarp") == 2 * 3
    assert not any(n.op_type == "Scan" for n in trt.graph.node)  # the aggregation is the plugin, not a Scan
    portable = onnx.load(str(artifact / graphs["fp32", "portable"]["file"]))
    assert all(n.domain in ("", "ai.onnx") for n in _nodes(portable.graph))
    scans = [n for n in portable.graph.node if n.op_type == "Scan"]
    assert len(scans) == 2 * TINY["levels"]  # the online softmax over key chunks, one Scan per aggregation
    body = {n.op_type for n in _nodes(scans[0].attribute[0].g)}
    assert {"MatMul", "ReduceMax", "Exp", "ReduceSum"} <= body


def test_fp16_keeps_the_softmax_path_in_float32(deployed: tuple[Path, Any]) -> None:
    artifact, _ = deployed
    m = json.loads((artifact / "manifest.json").read_text())
    graphs = {(g["precision"], g["lowering"]): g for g in m["graphs"]}
    for lowering, op in (("trt", "VolumeAggregate"), ("portable", "Scan")):
        graph = onnx.load(str(artifact / graphs["fp16", lowering]["file"]))
        kept = set(graphs["fp16", lowering]["kept_fp32"])
        aggregations = [n for n in graph.graph.node if n.op_type == op]
        assert len(aggregations) == 2 * TINY["levels"]
        assert {n.name for n in aggregations} <= kept, lowering  # the aggregation (its softmax) in float32
        types = {vi.name: vi.type.tensor_type.elem_type for vi in (*graph.graph.value_info, *graph.graph.output)}
        for n in aggregations:  # fed and read in float32
            assert all(types.get(x, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for x in n.output if x)
        assert any(n.op_type == "Conv" and n.name not in kept for n in graph.graph.node)  # the rest is fp16


def test_onnxruntime_reproduces_run_clip(deployed: tuple[Path, Any]) -> None:
    artifact, model = deployed
    video = _video(5)
    want = run_clip_np(model, video)
    assert 0.5 < np.mean((want > 0) & (want < 1))  # the outputs are not saturated
    assert np.abs(want - video).mean() > 1e-2  # nor the input
    assert psnr(stream_onnxruntime(artifact, video), want) >= 45


def test_fp16_stays_close_to_run_clip(deployed: tuple[Path, Any]) -> None:
    artifact, model = deployed
    video = _video(4, seed=6)
    got = stream_onnxruntime(artifact, video, precision="fp16")
    assert psnr(got, run_clip_np(model, video)) >= 40
    assert np.abs(got - stream_onnxruntime(artifact, video)).max() > 0  # not the fp32 graph


def test_int8_stays_close_to_run_clip(deployed: tuple[Path, Any]) -> None:
    artifact, model = deployed
    m = json.loads((artifact / "manifest.json").read_text())
    int8 = next(g for g in m["graphs"] if g["precision"] == "int8")
    graph = onnx.load(str(artifact / int8["file"]))
    scans = [n for n in graph.graph.node if n.op_type == "Scan"]
    assert len(scans) == 2 * TINY["levels"]
    assert any(n.op_type == "QuantizeLinear" for n in graph.graph.node)  # the convs are quantised...
    for scan in scans:  # ...the online softmax is not
        assert not any(n.op_type.endswith("QuantizeLinear") for n in _nodes(scan.attribute[0].g))
    video = _video(4, seed=7)
    assert psnr(stream_onnxruntime(artifact, video, precision="int8"), run_clip_np(model, video)) >= 35


def test_engines_build(deployed: tuple[Path, Any]) -> None:
    """ONNX Runtime's verified engine, and TensorRT-RTX engines of the plugin graph (the VolumeAggregate,
    Correlation and FlowWarp plugins inside TensorRT-RTX's builder), profiled from the manifest."""
    from vdeblur.build import build

    artifact, _ = deployed
    ort = build(artifact, "onnxruntime")
    assert ort["verified"] is True and ort["fallback"] is None and ort["verification"]["psnr_db"] > 60
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (the [tensorrt-rtx] extra)")
    for precision in ("fp32", "fp16"):
        rtx = build(artifact, "tensorrt-rtx", precision, shapes="64x64:64x64:128x128", lowering="trt")
        meta = json.loads(Path(rtx["sidecar"]).read_text())
        assert meta["profiles"]["frame"] == {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 128, 128]}
        assert set(meta["plugins"]) == {"vdeblur::Correlation", "vdeblur::FlowWarp", "vdeblur::VolumeAggregate"}


def test_vdeblur_run_reproduces_run_clip(deployed: tuple[Path, Any], tmp_path: Path) -> None:
    """The done criterion: `vdeblur run` (ONNX Runtime, PNG frames in and out) >= 45 dB against run_clip."""
    from vdeblur.cli import main
    from vdeblur.runtime.video import iter_frames

    artifact, model = deployed
    frames_in = write_png_folder(tmp_path / "in", _video(3, seed=5))
    quantised = np.stack(list(iter_frames(frames_in))).transpose(0, 3, 1, 2).astype(np.float32) / 255
    out = tmp_path / "out"
    assert main(["run", str(artifact), str(frames_in), f"{out}/"]) == 0
    got = np.stack(list(iter_frames(out))).astype(np.float32) / 255
    want = run_clip_np(model, quantised).transpose(0, 2, 3, 1)
    assert got.shape == want.shape
    assert psnr(got, want) >= 45


def test_the_torch_backend_agrees_with_onnxruntime(deployed: tuple[Path, Any]) -> None:
    from vdeblur.runtime.run import compare_backends

    artifact, _ = deployed
    result = compare_backends(artifact, ["torch", "onnxruntime"], frames=4, height=32, width=48)
    assert result["pairs"][0]["psnr_db"] > 60


def test_triton_repo_serves_what_stream_gives(deployed: tuple[Path, Any], tmp_path: Path) -> None:
    """`vdeblur triton-repo` on ARVo: the wrapper holds Scan bodies that read the step graph's weights from
    the outer scope (onnx.compose.add_prefix left those names unprefixed: an invalid model). Under the
    sequence-batcher emulation two sequences batched give what each gives alone, and that is Stream's output."""
    from tests.serve.test_triton_repo import Client, Triton, _alone, _frames, _run, _stream
    from vdeblur.serve.triton_repo import check_config, read_config, write_triton_repo

    artifact, _ = deployed
    report = write_triton_repo(artifact, tmp_path / "models", name="arvo", height=HEIGHT, width=WIDTH,
                               max_batch_size=2)
    model_dir = tmp_path / "models" / "arvo"
    check_config(read_config(model_dir / "config.pbtxt"), model_dir / "1" / "model.onnx")
    assert report["per_row"] is False  # the step graph's batch is dynamic: the two rows run in one pass
    a, b = _frames(5, seed=1, height=HEIGHT, width=WIDTH), _frames(4, seed=2, height=HEIGHT, width=WIDTH)
    triton = Triton(model_dir, seed=5)
    clients = [Client(1, a, triton.params), Client(2, b, triton.params)]
    _run(triton, clients, starts=[0, 2])  # b starts (garbage state, START=1) beside a running one
    for client, frames in zip(clients, (a, b), strict=True):
        alone, streamed = _alone(model_dir, frames), _stream(artifact, frames)
        assert len(client.outputs) == len(alone) == len(streamed) == len(frames)
        for got, one, want in zip(client.outputs, alone, streamed, strict=True):
            np.testing.assert_array_equal(got, one)
            np.testing.assert_array_equal(one, want)
