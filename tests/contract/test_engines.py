"""vdeblur.contract.engines: the engine cache both sides share (layout, --shapes, cache key,
sidecar lookup, session options) — what the build writes and the runtime finds."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vdeblur.contract import engines
from vdeblur.contract.engines import (
    DEFAULT_SHAPES,
    build_command,
    cache_hit,
    cache_key,
    choose_cached_engine,
    find_engine,
    list_engines,
    parse_shapes,
    shape_notes,
)
from vdeblur.errors import UsageError

# --------------------------------------------------------------------------------------------
# --shapes
# --------------------------------------------------------------------------------------------


def test_default_shapes() -> None:
    assert parse_shapes(None, 4) == DEFAULT_SHAPES == ((256, 256), (720, 1280), (1088, 1920))
    assert parse_shapes("", 16) == DEFAULT_SHAPES
    assert shape_notes(None, 16) == []
    # 720 is not a multiple of 32: rounded up, with a note
    assert parse_shapes(None, 32) == ((256, 256), (736, 1280), (1088, 1920))
    assert shape_notes(None, 32) == [
        "opt size 720x1280 rounded up to 736x1280 (the runtime pads frames to multiples of 32, "
        "the graph sees the padded size)"]


def test_shapes_are_parsed_and_rounded_up() -> None:
    assert parse_shapes("128x128:256x256:512x512", 4) == ((128, 128), (256, 256), (512, 512))
    assert parse_shapes(" 250X250 : 250x500:1080x1920 ", 4) == ((252, 252), (252, 500), (1080, 1920))
    assert parse_shapes("1080x1920:1080x1920:1080x1920", 16) == ((1088, 1920),) * 3
    assert parse_shapes("720x1280", 16) == ((720, 1280),) * 3  # one size: a fixed profile
    notes = shape_notes("250x250:256x256:1081x1920", 4)
    assert [n.split(" rounded")[0] for n in notes] == ["min size 250x250", "max size 1081x1920"]
    assert "252x252" in notes[0] and "1084x1920" in notes[1]
    assert engines.shapes_text(((1, 2), (3, 4), (5, 6))) == "1x2:3x4:5x6" and engines.shapes_text(None) is None
    with pytest.raises(UsageError, match=r"shapes: 7 is not three \(height, width\) pairs"):
        engines.shapes_text(7)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "match"), [
    ("256x256:720x1280", r"has 2 sizes\. Expected min:opt:max as HxW:HxW:HxW"),
    ("256x256:720x1280:1088x1920:2000x2000", r"has 4 sizes"),
    ("256:720x1280:1088x1920", r"'256' is not a size\. Expected HEIGHTxWIDTH"),
    ("256x256:720*1280:1088x1920", r"'720\*1280' is not a size"),
    ("256x256::1088x1920", r"'' is not a size"),
    ("axb:720x1280:1088x1920", r"'axb' is not a size"),
    ("256x256:720x1280.5:1088x1920", r"'720x1280\.5' is not a size"),
    ("0x256:720x1280:1088x1920", r"the min size 0x256 is not positive\. Expected heights and widths >= 1"),
    ("256x256:-720x1280:1088x1920", r"the opt size -720x1280 is not positive"),
    ("512x512:256x256:1088x1920", r"the heights 512, 256, 1088 decrease\. Expected min <= opt <= max"),
    ("256x256:720x1280:1088x1000", r"the widths 256, 1280, 1000 decrease"),
])
def test_bad_shapes_fail_clearly(text: str, match: str) -> None:
    with pytest.raises(UsageError, match=r"^--shapes '.*': " + match):
        parse_shapes(text, 4)


def test_bad_pad_multiple() -> None:
    with pytest.raises(UsageError, match="pad_multiple: 0 is not a positive integer"):
        parse_shapes(None, 0)


# --------------------------------------------------------------------------------------------
# Cache key
# --------------------------------------------------------------------------------------------

GPU = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
KEY_ARGS: dict[str, Any] = {"onnx_sha256": "ab" * 32, "precision": "fp16", "shapes": DEFAULT_SHAPES,
                            "trt_version": "10.13.0.35", "gpu": GPU}


def test_cache_key_is_stable() -> None:
    key = cache_key(**KEY_ARGS)
    assert key == cache_key(**KEY_ARGS)
    assert key == cache_key(**{**KEY_ARGS, "gpu": dict(reversed(list(GPU.items()))),
                               "shapes": [list(s) for s in DEFAULT_SHAPES]})
    assert key.startswith("fp16-") and len(key) == len("fp16-") + 20
    assert all(c.isalnum() or c in "-_" for c in key)
    assert key == cache_key(**KEY_ARGS, extra={}) != cache_key(**KEY_ARGS, extra={"workspace_bytes": 1})


@pytest.mark.parametrize(("component", "value"), [
    ("onnx_sha256", "cd" * 32),
    ("precision", "fp32"),
    ("shapes", ((256, 256), (720, 1280), (1088, 1984))),
    ("trt_version", "11.4.0"),
    ("gpu", {**GPU, "compute_capability": "9.1"}),
    ("gpu", {**GPU, "name": "NVIDIA H200"}),
])
def test_cache_key_changes_with_each_component(component: str, value: Any) -> None:
    assert cache_key(**{**KEY_ARGS, component: value}) != cache_key(**KEY_ARGS)


# --------------------------------------------------------------------------------------------
# Layout, sidecars, the lookup
# --------------------------------------------------------------------------------------------


def test_layout(tmp_path: Path) -> None:
    assert engines.engine_dir(tmp_path, "onnxruntime", "int8") == tmp_path / "engines" / "onnxruntime" / "int8"
    assert engines.engine_files(tmp_path, "fp16", "fp16-k") == (tmp_path / "engines/tensorrt/fp16/fp16-k.plan",
                                                                tmp_path / "engines/tensorrt/fp16/fp16-k.json")
    assert engines.timing_cache_path(tmp_path) == tmp_path / "engines" / "tensorrt" / "timing.cache"
    assert build_command("art", "tensorrt", "fp16") == "vdeblur build art --backend tensorrt --precision fp16"
    assert build_command("a", "tensorrt", "fp32", "8x8").endswith("--precision fp32 --shapes 8x8")


def test_cache_hit_needs_matching_sidecar(tmp_path: Path) -> None:
    engine, sidecar = engines.engine_files(tmp_path, "fp32", "k")
    engine.parent.mkdir(parents=True)
    data = b"engine bytes"
    assert not cache_hit(engine, sidecar, "k")
    engine.write_bytes(data)
    assert not cache_hit(engine, sidecar, "k")  # no sidecar: an interrupted build
    meta = {"key": "k", "engine": "k.plan", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    sidecar.write_text(json.dumps(meta))
    assert cache_hit(engine, sidecar, "k")
    assert not cache_hit(engine, sidecar, "other")
    engine.write_bytes(b"engine bytez")  # same size, other content
    assert not cache_hit(engine, sidecar, "k")
    sidecar.write_text("{not json")
    assert not cache_hit(engine, sidecar, "k")


def _sidecar(**kw: Any) -> dict[str, Any]:
    meta = {"engine": "fp32-x.plan", "precision": "fp32", "onnx": {"sha256": "b" * 64}, "tensorrt": "10.13.0",
            "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"}, "created": "2026-01-01T00:00:00+00:00",
            "shapes": {"min": [8, 8], "opt": [16, 16], "max": [64, 64]}}
    meta.update(kw)
    return meta


def test_choose_cached_engine() -> None:
    gpu = {"name": "NVIDIA H100", "compute_capability": "9.0"}
    old, new = _sidecar(engine="old.plan"), _sidecar(engine="new.plan", created="2026-02-01T00:00:00+00:00")
    others = [_sidecar(engine="fp16.plan", precision="fp16"), _sidecar(engine="o.plan", onnx={"sha256": "c" * 64}),
              _sidecar(engine="t.plan", tensorrt="10.9.0"), _sidecar(engine="g.plan", gpu={"name": "A100"})]
    chosen = choose_cached_engine([old, *others, new], "fp32", "b" * 64, "10.13.0", gpu)
    assert chosen is not None and chosen["engine"] == "new.plan"
    assert choose_cached_engine(others, "fp32", "b" * 64, "10.13.0", gpu) is None
    # unknown TensorRT version / GPU: not filtered on them
    assert choose_cached_engine([others[2]], "fp32", "b" * 64, None, None) is not None
    # a profile asked for: only an engine built for exactly those sizes
    wide = _sidecar(engine="wide.plan", shapes={"min": [8, 8], "opt": [16, 16], "max": [128, 128]})
    pick = choose_cached_engine([old, wide], "fp32", "b" * 64, "10.13.0", gpu, ((8, 8), (16, 16), (128, 128)))
    assert pick is not None and pick["engine"] == "wide.plan"
    assert choose_cached_engine([old, wide], "fp32", "b" * 64, None, None, ((8, 8), (8, 8), (8, 8))) is None


def test_list_and_find_engines(tmp_path: Path) -> None:
    directory = engines.engine_dir(tmp_path, "tensorrt", "fp32")
    directory.mkdir(parents=True)
    meta = _sidecar(engine="fp32-a.plan")
    (directory / "fp32-a.json").write_text(json.dumps(meta))
    (directory / "junk.json").write_text("[1, 2]")  # not a sidecar
    assert list_engines(tmp_path) == []  # sidecar without its engine
    (directory / "fp32-a.plan").write_bytes(b"plan")
    assert list_engines(tmp_path) == [meta] == list_engines(tmp_path, "fp32")
    assert list_engines(tmp_path, "fp16") == []
    # an engine of the old flat layout (engines/tensorrt/<key>.plan) is not found
    shutil.copy(directory / "fp32-a.json", directory.parent / "fp32-a.json")
    shutil.copy(directory / "fp32-a.plan", directory.parent / "fp32-a.plan")
    assert list_engines(tmp_path) == [meta]
    found = find_engine(tmp_path, "fp32", "b" * 64, trt_version="10.13.0", gpu=meta["gpu"])
    assert found == (directory / "fp32-a.plan", meta)
    assert find_engine(tmp_path, "fp32", "b" * 64, trt_version="10.14.0", gpu=None) is None
    assert engines.describe_sidecar(meta) == "fp32 8x8:16x16:64x64, TensorRT 10.13.0, NVIDIA H100 (sm 9.0)"


# --------------------------------------------------------------------------------------------
# ONNX Runtime session options
# --------------------------------------------------------------------------------------------


def test_ort_session_options_from_session_json(tmp_path: Path) -> None:
    class Options:
        def __init__(self) -> None:
            self.entries: dict[str, str] = {}

        def add_session_config_entry(self, key: str, value: str) -> None:
            self.entries[key] = value

    ort = SimpleNamespace(SessionOptions=Options,
                          GraphOptimizationLevel=SimpleNamespace(ORT_ENABLE_ALL=99, ORT_DISABLE_ALL=0),
                          ExecutionMode=SimpleNamespace(ORT_SEQUENTIAL=0, ORT_PARALLEL=1))
    settings = engines.default_session_options()
    opts = engines.ort_session_options(ort, settings)
    assert opts.graph_optimization_level == 99 and opts.execution_mode == 0
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (0, 1)
    assert opts.entries == {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}
    assert engines.read_session(tmp_path, "fp32") is None
    path = engines.engine_dir(tmp_path, "onnxruntime", "fp32") / engines.ORT_SESSION
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"session_options": settings}))
    assert engines.read_session(tmp_path, "fp32") == {"session_options": settings}
