"""The clip contract end to end on a small DSTNet (bidirectional: windows of frames, stated latency).

One session artifact: a tiny DSTNet exported from an official-format (BasicSR ``{'params': ...}``)
checkpoint with both lowerings and fp16/int8 variants, windows of 4 frames overlapping by 2. The
tests check the manifest, the graph's dynamic T, the window schedule of the runtime against the
model code run on the same windows, a video no longer than a window against run_clip, the official
no-overlap split against run_clip on the official clips, `vdeblur run` on PNG frames, the engine
builds (ONNX Runtime; TensorRT-RTX with a profile over T), compare and bench.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from vdeblur.data.texture import moving_texture
from vdeblur.errors import ShapeError
from vdeblur.metrics import psnr

TINY = {"num_feat": 16, "num_block": 1}
WINDOW, OVERLAP = 4, 2


def _model() -> Any:
    from vdeblur.models import create

    torch.manual_seed(7)
    return create("dstnet", **TINY).eval()


def export_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny DSTNet artifact (tests/conftest.py ``dstnet_artifact``): exported from a
    BasicSR-format checkpoint of :func:`_model`, both lowerings, fp32/fp16/int8, windows of 4 by 2."""
    from vdeblur.export.artifact import export_artifact

    root = tmp_path_factory.mktemp("dstnet")
    checkpoint = root / "DSTNet_tiny.pth"
    torch.save({"params": _model().state_dict()}, checkpoint)  # BasicSR's format
    out = root / "artifact"
    export_artifact("dstnet", out, checkpoint=checkpoint, overrides=TINY, plugins="trt", height=32, width=48,
                    frames=5, window=WINDOW, overlap=OVERLAP, precisions=["fp32", "fp16", "int8"],
                    calibration=moving_texture(6, 32, 48, seed=5))
    return out


@pytest.fixture(scope="module")
def artifact(dstnet_artifact: Path) -> Path:
    return dstnet_artifact


def _video(frames: int, height: int = 36, width: int = 50, seed: int = 3) -> np.ndarray:
    return moving_texture(frames, height, width, seed=seed)  # (T, 3, H, W) float32


def _stream(artifact: Path, video: np.ndarray, backend: str = "onnxruntime", **options: Any) -> np.ndarray:
    from vdeblur.runtime.stream import Stream

    outs: list[tuple[int, np.ndarray]] = []
    with Stream(artifact, backend=backend, **options) as s:
        for f in video.transpose(0, 2, 3, 1):
            outs += s.push(f)
        outs += s.flush()
    assert [i for i, _ in outs] == list(range(len(video)))  # one output per input, in order
    return np.stack([o for _, o in outs]).transpose(0, 3, 1, 2)


def _run_clip(video: np.ndarray) -> np.ndarray:
    from vdeblur.models import run_clip

    return run_clip(_model(), torch.from_numpy(video)[None])[0].numpy()


def test_manifest_states_the_windows_and_the_graph_takes_any_number_of_frames(artifact: Path) -> None:
    m = json.loads((artifact / "manifest.json").read_text())
    assert m["kind"] == "clip"
    assert m["clip"] == {"window": WINDOW, "overlap": OVERLAP, "latency": WINDOW - 1}
    assert m["interface"]["window"] == WINDOW and m["interface"]["pad_multiple"] == 16
    assert {p["id"] for p in m["plugins"]} == {"vdeblur::DynamicFilter", "vdeblur::DynamicDepthwise"}
    assert m["model"]["checkpoint"]["sha256"]
    precisions = {(g["precision"], g["lowering"]) for g in m["graphs"]}
    assert {("fp32", "portable"), ("fp32", "trt"), ("fp16", "portable"), ("int8", "portable")} <= precisions
    fp16 = next(g for g in m["graphs"] if g["precision"] == "fp16" and g["lowering"] == "portable")
    graph = onnx.load(str(artifact / fp16["file"]))
    scans = [n.name for n in graph.graph.node if n.op_type == "Scan"]
    assert len(scans) == 2 and set(scans) <= set(fp16["kept_fp32"])  # the recurrences stay float32
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert len(dims) == 5 and not dims[1].HasField("dim_value")  # T is dynamic
    report = json.loads((artifact / "report.json").read_text())
    assert report["validation"]["results"]["fp32"]["psnr_db"] > 60
    assert report["validation"]["results"]["fp16"]["passed"] and report["validation"]["results"]["int8"]["passed"]


@pytest.mark.parametrize("frames", [11, 12])  # windows that do not and do fit the video exactly
def test_stream_runs_the_windows_the_model_code_runs(artifact: Path, frames: int) -> None:
    from vdeblur.export.stepgraph import clip_module, run_windows

    video = _video(frames)
    module, spec = clip_module(_model(), WINDOW, OVERLAP)
    want = np.clip(run_windows(module, spec, torch.from_numpy(video)[None])[0].numpy(), 0, 1)
    got = _stream(artifact, video)
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(_stream(artifact, video, backend="torch") - want).max() < 1e-5
    # the windows matter: the whole video as one clip differs
    assert np.abs(_run_clip(video) - want).max() > 1e-3


def test_a_video_no_longer_than_a_window_is_one_clip(artifact: Path) -> None:
    video = _video(3)
    assert psnr(_stream(artifact, video), _run_clip(video)) > 60


def test_official_split_is_reproduced(artifact: Path) -> None:
    """--window 5 --overlap 0 on 12 frames: clips 0-4, 5-9 and the last 5 frames (7-11), keeping 10
    and 11 from the last (the earlier clip wins), as the official test and merge do with 30."""
    video = _video(12)
    got = _stream(artifact, video, window=5, overlap=0)
    want = np.concatenate([_run_clip(video[0:5]), _run_clip(video[5:10]), _run_clip(video[7:12])[3:]])
    assert psnr(got, want) > 60
    with pytest.raises(ShapeError, match="window"):
        _stream(artifact, video, window=3, overlap=3)


def test_vdeblur_run_on_png_frames_reproduces_run_clip(artifact: Path, tmp_path: Path) -> None:
    from vdeblur.cli import main
    from vdeblur.runtime.video import encode_png, iter_frames

    video = _video(6, 40, 56, seed=9)
    frames_in = tmp_path / "in"
    frames_in.mkdir()
    uint8 = (video.transpose(0, 2, 3, 1) * 255 + 0.5).astype(np.uint8)
    for i, f in enumerate(uint8):
        (frames_in / f"{i:04d}.png").write_bytes(encode_png(f))
    out = tmp_path / "out"
    assert main(["run", str(artifact), str(frames_in), f"{out}/", "--window", "30", "--overlap", "0"]) == 0
    got = np.stack(list(iter_frames(out))).astype(np.float32) / 255
    want = _run_clip(uint8.transpose(0, 3, 1, 2).astype(np.float32) / 255).transpose(0, 2, 3, 1)
    assert got.shape == want.shape
    assert psnr(got, want) >= 45


def test_engines_build_with_a_profile_over_the_frames(artifact: Path) -> None:
    from vdeblur.build import build

    ort = build(artifact, "onnxruntime")
    assert ort["verification"]["passed"]
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (the [tensorrt-rtx] extra)")
    rtx = build(artifact, "tensorrt-rtx", shapes="32x48:32x48:64x64")
    meta = json.loads(Path(rtx["sidecar"]).read_text()) if rtx.get("sidecar") else rtx
    frames = meta["profiles"]["frames"]
    assert frames["min"][:2] == [1, 1] and frames["opt"][1] == WINDOW and frames["max"] == [1, WINDOW, 3, 64, 64]
    assert set(meta["plugins"]) == {"vdeblur::DynamicFilter", "vdeblur::DynamicDepthwise"}  # the Scan body's too


def test_compare_and_bench_work_on_clip_artifacts(artifact: Path) -> None:
    from vdeblur.bench import bench, format_table
    from vdeblur.runtime.run import compare_backends

    result = compare_backends(artifact, ["torch", "onnxruntime"], frames=6, height=32, width=48)
    assert result["pairs"][0]["psnr_db"] > 60
    payload = bench(artifact, ["onnxruntime"], ["fp32"], height=32, width=48, frames=6, warmup=2, threads=1)
    row = payload["results"][0]
    assert row["latency_frames"] == WINDOW - 1 and row["window"] == WINDOW and row["windows"] >= 2
    assert row["window_ms"]["p50"] > 0 and row["fps"] > 0 and row["psnr_db"] > 60
    assert "latency frames" in format_table(payload)
