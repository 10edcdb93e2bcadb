"""`vdeblur demo`: the bundled checkpoint really deblurs, int8 stays close to fp32, files are written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vdeblur.demo import MARKER, _prepare_out, assets, best_crop, labelled_panels, run_demo
from vdeblur.errors import UsageError


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "out"
    return out, run_demo(out)


@pytest.mark.slow
def test_demo_end_to_end(demo: tuple[Path, dict]) -> None:
    out, result = demo
    rows = {r["precision"]: r for r in result["precisions"]}
    assert set(rows) == {"fp32", "int8"} and result["status"] == "done"
    for r in rows.values():
        assert set(r) == {"precision", "psnr_blurry_db", "psnr_deblurred_db", "latency_ms_p50", "latency_frames",
                          "fps", "graph", "skipped", "notes"}
        assert r["latency_frames"] == 2  # MTU's lookahead
        assert r["skipped"] is None and r["fps"] > 0 and r["latency_ms_p50"] > 0
        assert r["graph"]["built"] is True and r["graph"]["file"].startswith("engines/onnxruntime/")
    fp32, int8 = rows["fp32"], rows["int8"]
    assert fp32["psnr_deblurred_db"] > fp32["psnr_blurry_db"]  # the checkpoint improves the held-out clip
    # int8 within 0.3 dB of fp32 against the sharp frames, on any CPU (7-bit weights: no saturation)
    assert abs(int8["psnr_deblurred_db"] - fp32["psnr_deblurred_db"]) <= 0.3
    assert result["cpu"]["arch"]
    for name in ("deblurred_fp32.mp4", "deblurred_int8.mp4", "side_by_side_fp32.png", "side_by_side_int8.png",
                 "artifact", MARKER):
        assert (out / name).exists(), name
    assert json.loads((out / MARKER).read_text())["precisions"] == result["precisions"]
    _prepare_out(out)  # a later run replaces its own previous output
    assert out.is_dir() and not any(out.iterdir())


@pytest.mark.slow
def test_demo_checkpoint_gains_at_least_1_db(demo: tuple[Path, dict]) -> None:
    _, result = demo
    fp32 = next(r for r in result["precisions"] if r["precision"] == "fp32")
    assert fp32["psnr_deblurred_db"] >= fp32["psnr_blurry_db"] + 1.0


@pytest.mark.slow
def test_demo_goes_on_when_a_precision_is_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vdeblur.contract import precision as contract_precision

    monkeypatch.setitem(contract_precision.VARIANT_BARS, "fp16", contract_precision.FrameBar(200.0, 0.0))
    result = run_demo(tmp_path / "out", precisions=["fp16"])
    (row,) = result["precisions"]
    assert row["precision"] == "fp16" and row["psnr_deblurred_db"] is None
    assert "the export left it out: below its bar against run_clip" in row["skipped"]
    assert json.loads((tmp_path / "out" / MARKER).read_text())["status"] == "done"


def test_demo_json_says_failed_when_the_demo_dies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vdeblur.export.artifact as artifact_mod

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(artifact_mod, "export_artifact", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        run_demo(tmp_path / "out", precisions=["fp32"])
    marker = json.loads((tmp_path / "out" / MARKER).read_text())
    assert marker == {"status": "failed", "error": "RuntimeError: disk full"}


def test_demo_precisions_are_checked() -> None:
    with pytest.raises(UsageError, match="demo: precision fp8 is not offered"):
        run_demo("unused", precisions=["fp32", "fp8"])


def test_demo_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds other files"):
        run_demo(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_bundled_assets_are_consistent() -> None:
    files = assets()  # their size budget: tests/data/test_demo_assets.py
    from vdeblur.models import create, load_checkpoint

    report = load_checkpoint(create(files.preset), files.checkpoint)  # official raw state_dict format
    assert report.to_dict()["loaded"] > 0


def test_best_crop_finds_where_deblurring_helps() -> None:
    sharp = np.zeros((60, 80, 3), np.uint8)
    blurry = sharp + 40
    deblurred = blurry.copy()
    deblurred[30:46, 50:66] = 0  # fixed only here
    y, x = best_crop(blurry, deblurred, sharp, size=16)
    assert (y, x) == (30, 50)


def test_labelled_panels() -> None:
    a = np.zeros((40, 50, 3), np.uint8)
    img = labelled_panels([("blurry 27.84 dB", a), ("deblurred 29.50 dB", a + 100), ("sharp", a + 200)],
                          crop=(10, 20), crop_size=16, zoom=3, gap=6)
    assert img.dtype == np.uint8 and img.shape == (22 + 40 + 6 + 48, 3 * 50 + 2 * 6, 3)
    assert (img[:22] < 128).any()  # the titles are drawn
    assert (img[22 + 40 + 6 + 5, 56 + 5] == 100).all()  # the zoomed window of panel 2
