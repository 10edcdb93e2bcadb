"""Tiny artifacts of both streaming families, exported once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from vdeblur.export.artifact import export_artifact

MTU = {"ch": 6, "rb_num": 1, "max_displacement": 3}
MMPRNN = {"n_features": 4, "n_blocks_a": 1, "n_blocks_b": 1}


@pytest.fixture(scope="session")
def mtu_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runtime") / "mtu"
    export_artifact("mtu2", out, overrides=MTU, height=40, width=56, frames=3)
    return out


@pytest.fixture(scope="session")
def mmprnn_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runtime") / "mmprnn"
    export_artifact("mmprnn_a3b4c16", out, overrides=MMPRNN, height=32, width=48, frames=3)
    return out
