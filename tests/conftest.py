"""Test configuration shared by the whole suite.

Without a CUDA device, Triton kernels run in Triton's interpreter on CPU tensors
(TRITON_INTERPRET=1, set before any kernel module is imported).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The suite's tensors are tiny: one intra-op thread avoids oversubscribing a shared 2-core machine
# (with other jobs running, multi-threaded tiny ops were ~30x slower).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def kernel_device() -> str:
    """Where Triton kernels run in this session: cuda, or cpu through the interpreter."""
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture
def kernels_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route the custom ops' CPU path through the Triton kernels (interpreter)."""
    if HAS_CUDA:
        pytest.skip("a GPU is present: the custom ops use the kernels on CUDA tensors")
    monkeypatch.setenv("VDEBLUR_CPU_KERNELS", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def spy_on(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[tuple]:
    """Wrap ``module.name`` so that its calls are recorded (and still made); returns the call list.
    The custom-op dispatch tests use it to see that the kernel, not the reference, ran."""
    calls: list[tuple] = []
    real = getattr(module, name)

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


# ----- tiny artifacts of both streaming families, exported once per test session ---------------

MTU = {"ch": 6, "rb_num": 1, "max_displacement": 3}
MMPRNN = {"n_features": 4, "n_blocks_a": 1, "n_blocks_b": 1}


@pytest.fixture(scope="session")
def mtu_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vdeblur.export.artifact import export_artifact

    out = tmp_path_factory.mktemp("runtime") / "mtu"
    export_artifact("mtu2", out, overrides=MTU, height=40, width=56, frames=3)
    return out


@pytest.fixture(scope="session")
def mmprnn_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vdeblur.export.artifact import export_artifact

    out = tmp_path_factory.mktemp("runtime") / "mmprnn"
    export_artifact("mmprnn_a3b4c16", out, overrides=MMPRNN, height=32, width=48, frames=3)
    return out


@pytest.fixture(scope="session")
def dstnet_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DSTNet clip artifact (windows of 4 frames overlapping by 2), shared by the clip tests of
    the runtime and of the server; see tests/runtime/test_clip.py."""
    from tests.runtime.test_clip import export_tiny

    return export_tiny(tmp_path_factory)


@pytest.fixture(scope="session")
def calibration_pngs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 40x56 PNG frames of a moving texture (int8 calibration as the CLI reads it)."""
    import numpy as np

    from vdeblur.data.texture import moving_texture
    from vdeblur.runtime.video import encode_png

    folder = tmp_path_factory.mktemp("calib")
    for i, f in enumerate(moving_texture(6, 40, 56, seed=5)):
        (folder / f"{i:03d}.png").write_bytes(encode_png((f.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)))
    return folder


@pytest.fixture(scope="session")
def mtu_all_precisions(tmp_path_factory: pytest.TempPathFactory, calibration_pngs: Path) -> tuple[Path, dict]:
    """(artifact, export report) of a tiny mtu2 with trt and portable graphs in fp32, fp16, int8 and bf16
    (exported once: the export tests check it, the TensorRT-RTX build tests build every graph of it).
    Tests that write into it (engines) must work on a copy."""
    from vdeblur.export.artifact import export_artifact
    from vdeblur.runtime.video import load_calibration

    out = tmp_path_factory.mktemp("mtu_all") / "art"
    report = export_artifact("mtu2", out, overrides=MTU, plugins="trt", precisions=["fp16", "int8", "bf16"],
                             calibration=load_calibration(calibration_pngs, 40, 56), height=40, width=56, frames=5)
    return out, report
