"""`vdeblur export`: artifacts in both plugin lowerings, validation, manifest, atomic writes, bad inputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vdeblur.contract import manifest as manifest_mod
from vdeblur.errors import CheckpointError, ExportError, UsageError, VdeblurError
from vdeblur.export.artifact import export_artifact
from vdeblur.runtime.video import load_calibration

MTU = {"ch": 6, "rb_num": 1, "max_displacement": 3}
MMPRNN = {"n_features": 4, "n_blocks_a": 1, "n_blocks_b": 1}
SIZE = {"height": 40, "width": 56, "frames": 5}


@pytest.fixture(scope="module")
def mtu_trt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mtu") / "art"
    report = export_artifact("mtu2", out, overrides=MTU, plugins="trt", **SIZE)
    return out, report


@pytest.fixture(scope="module")
def mmprnn_trt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mmprnn") / "art"
    report = export_artifact("mmprnn_a3b4c16", out, overrides=MMPRNN, plugins="trt", **SIZE)
    return out, report


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.mark.parametrize("fixture", ["mtu_trt", "mmprnn_trt"])
def test_both_lowerings_and_validation(fixture: str, request: pytest.FixtureRequest) -> None:
    out, report = request.getfixturevalue(fixture)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["manifest.json", "model.onnx", "model.portable.onnx", "report.json"]
    portable = onnx.load(str(out / "model.portable.onnx"))
    trt = onnx.load(str(out / "model.onnx"))
    assert not [n for n in portable.graph.node if n.domain == "vdeblur"]
    onnx.checker.check_model(trt, full_check=True)
    fp32 = report["validation"]["results"]["fp32"]
    assert fp32["psnr_db"] == "inf" or fp32["psnr_db"] >= 50.0, fp32  # the bar: >= 50 dB vs run_clip
    assert fp32["fraction_within_tol"] >= 0.999
    assert report["random_weights"] is True
    assert json.loads((out / "report.json").read_text()) == report


def test_trt_graph_of_mtu_holds_the_plugins(mtu_trt: tuple[Path, dict]) -> None:
    out, _ = mtu_trt
    trt = onnx.load(str(out / "model.onnx"))
    plugin_ops = sorted({n.op_type for n in trt.graph.node if n.domain == "vdeblur"})
    assert plugin_ops == ["CorrelationArgmax", "FlowWarp"]
    m = manifest_mod.read(out)
    assert m.plugins == [
        {"id": "vdeblur::CorrelationArgmax", "version": "1"}, {"id": "vdeblur::FlowWarp", "version": "1"},
    ]


def test_manifest_schema(mtu_trt: tuple[Path, dict]) -> None:
    out, _ = mtu_trt
    m = manifest_mod.read(out)
    assert m.kind == "step" and m.format_version == manifest_mod.FORMAT_VERSION
    assert m.model["family"] == "mtu" and m.model["preset"] == "mtu2" and m.model["random_weights"] is True
    assert m.model["config"]["ch"] == 6 and m.model["checkpoint"] is None
    iface = m.interface
    assert iface["frame_input"] == "frame" and iface["input_names"][0] == "frame"
    assert iface["layout"] == "NCHW" and iface["value_range"] == [0.0, 1.0] and iface["dtype"] == "float32"
    assert iface["lookahead"] == 2 and iface["pad_multiple"] == 4 and iface["flush"]["steps"] == 2
    assert all({"input_name", "output_name", "shape", "dtype", "initial"} <= set(s) for s in iface["states"])
    assert m.graph("fp32", "portable").file == "model.portable.onnx"
    assert m.graph("fp32", "trt").file == "model.onnx"
    assert m.opset >= 17
    assert set(m.versions) >= {"vdeblur", "torch", "onnx"}
    from vdeblur.contract.manifest import sha256_file

    assert m.graph("fp32", "trt").sha256 == sha256_file(out / "model.onnx")
    with pytest.raises(ExportError, match="no fp16 graph"):
        m.graph("fp16")
    # The graph inputs are exactly the manifest's.
    portable = onnx.load(str(out / "model.portable.onnx"))
    assert [i.name for i in portable.graph.input] == iface["input_names"]


def test_invalid_manifest_is_refused(tmp_path: Path, mtu_trt: tuple[Path, dict]) -> None:
    data = json.loads((mtu_trt[0] / "manifest.json").read_text())
    del data["interface"]["states"][0]["shape"]
    data["graphs"][0]["precision"] = "fp12"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ExportError, match=r"states\[0\]\.shape missing.*precision 'fp12' is unknown"):
        manifest_mod.read(tmp_path)
    with pytest.raises(ExportError, match="no manifest.json here"):
        manifest_mod.read(tmp_path / "nowhere")


def test_existing_out_is_refused_then_replaced_with_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(UsageError, match="exists and is not empty"):
        export_artifact("mmprnn_a3b4c16", out, overrides=MMPRNN, height=32, width=32, frames=3)
    assert (out / "keep.txt").read_text() == "user file" and leftovers(tmp_path) == []
    export_artifact("mmprnn_a3b4c16", out, overrides=MMPRNN, height=32, width=32, frames=3, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "report.json"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"model": "mtu3"}, UsageError, "mtu3: unknown model"),
        ({"model": "mtu2", "overrides": {"channels": 8}}, UsageError, r"mtu: unknown option\(s\) channels"),
        ({"model": "mtu2", "height": 8}, UsageError, r"--height 8 is out of range"),
        ({"model": "mtu2", "width": 100000}, UsageError, r"--width 100000 is out of range"),
        ({"model": "mtu2", "plugins": "tensorrt"}, UsageError, r"--plugins 'tensorrt' is unknown"),
        ({"model": "mtu2", "precisions": ["fp12"]}, UsageError, "precision fp12 is unknown"),
        ({"model": "mtu2", "precisions": ["int8"]}, UsageError, "int8/fp8 need calibration frames"),
        ({"model": "mtu2", "checkpoint": "/nonexistent.pth"}, UsageError, "no such checkpoint file"),
        # calibration frames are checked before the export runs
        ({"model": "mtu2", "precisions": ["int8"], "calibration": "/nonexistent"}, UsageError,
         r"calibration frames have shape \(\)"),
        ({"model": "mtu2", "precisions": ["int8"], "calibration": np.zeros((4, 1, 8, 8), np.float32)}, UsageError,
         r"calibration frames have shape \(4, 1, 8, 8\)\. Expected \(T, 3, H, W\)"),
        ({"model": "mtu2", "precisions": ["int8"], "calibration": np.full((4, 3, 8, 8), 255.0, np.float32)},
         UsageError, r"must be finite floats in \[0, 1\]"),
    ],
)
def test_bad_inputs_fail_clearly_and_leave_nothing(tmp_path: Path, kwargs: dict, error: type, match: str) -> None:
    out = tmp_path / "art"
    with pytest.raises(error, match=match):
        export_artifact(out=out, **kwargs)
    assert not out.exists() and leftovers(tmp_path) == []


def test_calibration_sources_are_checked_with_a_clear_error(tmp_path: Path) -> None:
    """The applications read calibration frames with load_calibration: a bad source fails before the
    export (which would take minutes), naming what is expected."""
    (tmp_path / "empty").mkdir()
    for source, match in (("/nonexistent", "does not exist"), (__file__, "is not a video"),
                          (tmp_path / "empty", "holds no images")):
        with pytest.raises(UsageError, match=match + r".*Expected --calibration to name a video file or a folder"):
            load_calibration(source, 32, 32)
    bad = subprocess.run([sys.executable, "-m", "vdeblur", "export", "mtu2", "--out", str(tmp_path / "art"),
                          "--precision", "fp32,int8", "--calibration", "/nonexistent"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "/nonexistent: does not exist" in bad.stderr
    assert not (tmp_path / "art").exists()


def test_checkpoint_of_another_family(tmp_path: Path) -> None:
    from vdeblur.models import create

    ckpt = tmp_path / "mmprnn.pth"
    torch.save({"state_dict": create("mmprnn_a3b4c16", **MMPRNN).state_dict()}, ckpt)
    out = tmp_path / "art"
    with pytest.raises(CheckpointError, match="missing"):
        export_artifact("mtu2", out, checkpoint=ckpt, overrides=MTU)
    assert not out.exists() and leftovers(tmp_path) == []


def test_unwritable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot be written"):
        export_artifact("mtu2", blocker / "art", overrides=MTU)


def test_failed_validation_fails_the_export(tmp_path: Path) -> None:
    out = tmp_path / "art"
    with pytest.raises(ExportError, match="validation failed"):
        export_artifact("mmprnn_a3b4c16", out, overrides=MMPRNN, height=32, width=32, frames=3,
                        min_psnr_db=float("inf"))
    assert not out.exists() and leftovers(tmp_path) == []


def test_checkpoint_is_recorded(tmp_path: Path) -> None:
    from vdeblur.models import create

    ckpt = tmp_path / "mmprnn.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in create("mmprnn_a3b4c16", **MMPRNN).state_dict().items()}},
               ckpt)
    report = export_artifact("mmprnn_a3b4c16", tmp_path / "art", checkpoint=ckpt, overrides=MMPRNN,
                             height=32, width=32, frames=3)
    assert report["random_weights"] is False
    m = manifest_mod.read(tmp_path / "art")
    assert m.model["checkpoint"]["sha256"] and m.model["random_weights"] is False


def test_cli_export_json(tmp_path: Path) -> None:
    out = tmp_path / "art"
    proc = subprocess.run(
        [sys.executable, "-m", "vdeblur", "export", "mmprnn_a3b4c16", "--set", "n_features=4", "--set", "n_blocks_a=1",
         "--set", "n_blocks_b=1", "--out", str(out), "--height", "32", "--width", "32", "--frames", "3", "--json"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["artifact"] == str(out) and report["random_weights"] is True
    bad = subprocess.run(
        [sys.executable, "-m", "vdeblur", "export", "mtu2", "--set", "hg_num", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, check=False,
    )
    assert bad.returncode == 2 and "malformed. Expected key=value" in bad.stderr and "Traceback" not in bad.stderr


def test_precision_variants_are_validated(mtu_all_precisions: tuple[Path, dict]) -> None:
    out, report = mtu_all_precisions  # fp16, int8, bf16, from the PNG calibration frames (tests/conftest.py)
    m = manifest_mod.read(out)
    have = {(g.precision, g.lowering) for g in m.graphs}
    assert have == {("fp32", "portable"), ("fp32", "trt"), ("fp16", "portable"), ("fp16", "trt"),
                    ("int8", "portable"), ("bf16", "portable"), ("bf16", "trt")}
    results = report["validation"]["results"]
    for precision in ("fp16", "int8"):
        psnr = results[precision]["psnr_db"]
        print(precision, psnr)
        assert psnr == "inf" or psnr >= 35.0
        assert m.graph(precision).psnr_db == psnr
    assert results["bf16"]["runs_on_ort_cpu"] is False  # recorded, with the reason in the notes
    kept = m.graph("fp16").kept_fp32
    fp16 = onnx.load(str(out / m.graph("fp16").file))
    argmax = [n.name for n in fp16.graph.node if n.op_type == "ArgMax"]
    assert argmax and set(argmax) <= set(kept)  # the motion search stays in fp32
    assert any("int8" in note for note in report["validation"]["notes"])
    assert (out / "model.portable.int8.onnx").is_file()
    assert m.graph("int8").quantization["weight_bits"] == 7 and results["int8"]["passed"] is True
    assert report["skipped"] == []


def test_a_variant_below_its_bar_is_left_out_and_the_export_goes_on(
        tmp_path: Path, calibration_pngs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vdeblur.contract import precision as contract_precision

    monkeypatch.setitem(contract_precision.VARIANT_BARS, "fp16", contract_precision.FrameBar(200.0, 0.0))
    out = tmp_path / "art"
    report = export_artifact("mtu2", out, overrides=MTU, plugins="trt", precisions=["fp16", "bf16"], **SIZE)
    m = manifest_mod.read(out)
    assert {g.precision for g in m.graphs} == {"fp32", "bf16"}  # fp16 is not in the artifact, either lowering
    assert not list(out.glob("*fp16*"))
    (skipped,) = report["skipped"]
    assert skipped["precision"] == "fp16"
    assert re.search(r"below its bar against run_clip \(PSNR [0-9.]+ dB < 200\.0 dB\)", skipped["reason"])
    assert report["validation"]["results"]["fp16"]["passed"] is False
    with pytest.raises(VdeblurError, match="no fp16 graph"):
        m.graph("fp16")


def test_cli_export_rejects_unknown_int8_weights(tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "vdeblur", "export", "mtu2", "--out", str(tmp_path / "x"), "--int8-weights", "6bit"],
        capture_output=True, text=True, check=False,
    )
    assert bad.returncode == 2 and "invalid choice: '6bit'" in bad.stderr
