"""AHFNet deployed under the clip contract, as its issue's done criterion says: `vdeblur export ahfnet
--checkpoint ...` then `vdeblur run` on ONNX Runtime reproduces run_clip.

One module artifact: a tiny AHFNet (seeded weights, saved as ``{'params': state_dict}``) exported through
the CLI with both lowerings and fp32/fp16/int8 graphs, windows of 4 frames overlapping by 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from tests.models.test_ahfnet import TINY, seeded_ahfnet
from tests.runtime.deploy_helpers import run_clip_np, stream_onnxruntime, write_png_folder
from vdeblur.data.texture import moving_texture
from vdeblur.metrics import psnr

WINDOW, OVERLAP = 4, 2
HEIGHT, WIDTH = 40, 54  # not multiples of 4: the runtime pads (replicate) and crops


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from vdeblur.cli import main

    root = tmp_path_factory.mktemp("ahfnet")
    model = seeded_ahfnet(TINY, 1)
    checkpoint = root / "ahfnet_tiny.pth"
    torch.save({"params": model.state_dict()}, checkpoint)
    calibration = write_png_folder(root / "calibration", moving_texture(6, 32, 48, seed=6))  # int8
    out = root / "artifact"
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    assert main(["--json", "export", "ahfnet", "--checkpoint", str(checkpoint), *sets, "--out", str(out),
                 "--plugins", "trt", "--precision", "fp32,fp16,int8", "--calibration", str(calibration),
                 "--height", "32", "--width", "48", "--frames", "5", "--window", str(WINDOW),
                 "--overlap", str(OVERLAP)]) == 0
    return out, model


def _video(frames: int, seed: int = 3) -> np.ndarray:
    return moving_texture(frames, HEIGHT, WIDTH, seed=seed)  # (T, 3, H, W) float32 in [0, 1]




def test_the_manifest_states_a_clip_graph_for_any_number_of_frames(deployed: tuple[Path, Any]) -> None:
    artifact, _ = deployed
    m = json.loads((artifact / "manifest.json").read_text())
    assert m["kind"] == "clip" and m["model"]["family"] == "ahfnet" and m["model"]["config"] == TINY
    assert m["model"]["checkpoint"]["sha256"] and not m["model"]["random_weights"]
    assert m["clip"] == {"window": WINDOW, "overlap": OVERLAP, "latency": WINDOW - 1}
    assert m["interface"]["pad_multiple"] == 4 and m["interface"]["pad_mode"] == "replicate"
    graphs = {(g["precision"], g["lowering"]): g for g in m["graphs"]}
    assert set(graphs) == {("fp32", "portable"), ("fp32", "trt"), ("fp16", "portable"), ("fp16", "trt"),
                           ("int8", "portable")}
    assert m["plugins"] == [{"id": "vdeblur::FlowWarp", "version": "1"}]  # the warps, in the trt lowering
    graph = onnx.load(str(artifact / graphs["fp32", "portable"]["file"]))
    assert [n.op_type for n in graph.graph.node].count("Scan") == 2  # one per direction, any T
    assert all(n.domain in ("", "ai.onnx") for n in graph.graph.node)  # portable: standard ops only
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert len(dims) == 5 and not any(dims[i].HasField("dim_value") for i in (0, 1, 3, 4))
    fp16 = onnx.load(str(artifact / graphs["fp16", "portable"]["file"]))
    scans = [n.name for n in fp16.graph.node if n.op_type == "Scan"]
    assert len(scans) == 2 and set(scans) <= set(graphs["fp16", "portable"]["kept_fp32"])  # recurrences: fp32
    results = json.loads((artifact / "report.json").read_text())["validation"]["results"]
    assert results["fp32"]["psnr_db"] > 60 and results["fp16"]["passed"] and results["int8"]["passed"]


def test_onnxruntime_reproduces_run_clip(deployed: tuple[Path, Any]) -> None:
    artifact, model = deployed
    video = _video(WINDOW)  # no longer than a window: one clip, = run_clip
    want = run_clip_np(model, video)
    assert 0.05 < np.mean((want > 0) & (want < 1))  # the outputs are not saturated
    assert np.abs(want - video).mean() > 1e-2  # nor the input
    assert psnr(stream_onnxruntime(artifact, video), want) >= 45


@pytest.mark.parametrize(("precision", "bar_db"), [("fp16", 60.0), ("int8", 35.0)])
def test_reduced_precisions_stay_close_to_run_clip(deployed: tuple[Path, Any], precision: str,
                                                   bar_db: float) -> None:
    artifact, model = deployed
    video = _video(WINDOW, seed=6)
    got = stream_onnxruntime(artifact, video, precision=precision)
    assert psnr(got, run_clip_np(model, video)) >= bar_db
    assert np.abs(got - stream_onnxruntime(artifact, video)).max() > 0  # not the fp32 graph


def test_engines_build_and_verify(deployed: tuple[Path, Any]) -> None:
    """ONNX Runtime's optimised model (its two Scans once made an invalid saved model: see
    build/onnxruntime.py) and TensorRT-RTX engines of the plugin graph, profiled over the frames."""
    from vdeblur.build import build

    artifact, _ = deployed
    ort = build(artifact, "onnxruntime")
    assert ort["verified"] is True and ort["fallback"] is None and ort["verification"]["psnr_db"] > 60
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (the [tensorrt-rtx] extra)")
    for precision in ("fp32", "fp16"):
        rtx = build(artifact, "tensorrt-rtx", precision, shapes="32x48:32x48:64x64", lowering="trt")
        meta = json.loads(Path(rtx["sidecar"]).read_text())
        assert meta["profiles"]["frames"]["max"] == [1, WINDOW, 3, 64, 64]
        assert set(meta["plugins"]) == {"vdeblur::FlowWarp"}  # SPyNet's and the recurrences' warps


def test_compare_and_bench(deployed: tuple[Path, Any]) -> None:
    from vdeblur.bench import bench
    from vdeblur.runtime.run import compare_backends

    artifact, _ = deployed
    result = compare_backends(artifact, ["torch", "onnxruntime"], frames=6, height=32, width=48)
    assert result["pairs"][0]["psnr_db"] > 60
    payload = bench(artifact, ["onnxruntime"], ["fp32", "fp16"], height=32, width=48, frames=6, warmup=1,
                    threads=1)
    rows = {r["precision"]: r for r in payload["results"]}
    assert rows["fp32"]["latency_frames"] == WINDOW - 1 and rows["fp32"]["psnr_db"] > 60
    assert rows["fp16"]["psnr_db"] > 45 and rows["fp16"]["fps"] > 0


def test_longer_videos_run_by_windows(deployed: tuple[Path, Any]) -> None:
    from vdeblur.export.stepgraph import clip_module, run_windows

    artifact, model = deployed
    video = _video(9, seed=4)
    module, spec = clip_module(model, WINDOW, OVERLAP)
    want = np.clip(run_windows(module, spec, torch.from_numpy(video)[None])[0].numpy(), 0, 1)
    assert np.abs(stream_onnxruntime(artifact, video) - want).max() < 1e-4


def test_vdeblur_run_reproduces_run_clip(deployed: tuple[Path, Any], tmp_path: Path) -> None:
    """The done criterion: `vdeblur run` (ONNX Runtime, PNG frames in and out) >= 45 dB against run_clip."""
    from vdeblur.cli import main
    from vdeblur.runtime.video import iter_frames

    artifact, model = deployed
    frames_in = write_png_folder(tmp_path / "in", _video(6, seed=5))
    quantised = np.stack(list(iter_frames(frames_in))).transpose(0, 3, 1, 2).astype(np.float32) / 255
    out = tmp_path / "out"
    assert main(["run", str(artifact), str(frames_in), f"{out}/", "--window", "30", "--overlap", "0"]) == 0
    got = np.stack(list(iter_frames(out))).astype(np.float32) / 255
    want = run_clip_np(model, quantised).transpose(0, 2, 3, 1)
    assert got.shape == want.shape
    assert psnr(got, want) >= 45
