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
