"""A small MTU artifact (portable and trt graphs of mtu2 with ch=8, rb_num=1), exported once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from vdeblur.contract.manifest import GraphEntry, Manifest


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact directory with the portable and trt graphs of a small mtu2 (ch=8, rb_num=1)."""
    from vdeblur.contract.manifest import sha256_file
    from vdeblur.export.onnx import export_step_graph, plugins_used
    from vdeblur.export.stepgraph import step_module
    from vdeblur.models import create

    d = tmp_path_factory.mktemp("engines") / "mtu"
    d.mkdir()
    torch.manual_seed(0)
    model = create("mtu2", ch=8, rb_num=1)
    step, spec = step_module(model)
    export_step_graph(step, spec, d / "model.onnx", "portable", 64, 64)
    trt_model = export_step_graph(step, spec, d / "model.trt.onnx", "trt", 64, 64)
    Manifest(
        model={"family": "mtu", "preset": "mtu2", "config": {"ch": 8, "rb_num": 1}, "checkpoint": None,
               "random_weights": True},
        kind="step",
        interface=spec.to_dict(),
        graphs=[GraphEntry("model.onnx", "fp32", "portable", sha256_file(d / "model.onnx")),
                GraphEntry("model.trt.onnx", "fp32", "trt", sha256_file(d / "model.trt.onnx"))],
        plugins=plugins_used(trt_model),
        opset=18,
        versions={"vdeblur": "test", "torch": torch.__version__},
    ).write(d)
    return d


@pytest.fixture
def artifact_copy(artifact: Path, tmp_path: Path) -> Path:
    """A private copy (without engines) for tests that write or break things."""
    dst = tmp_path / "art"
    shutil.copytree(artifact, dst, ignore=shutil.ignore_patterns("engines"))
    return dst

