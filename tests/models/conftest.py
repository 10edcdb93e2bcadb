"""Shared helpers of the model tests: official reference data, parity fixtures, tiny models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.models.seeded import seeded_state_dict
from vdeblur.models import create

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
OFFICIAL_STATE_DICTS = REPO.parent / "shared" / "reference" / "official_state_dicts.json"

TINY_MTU = {"hg_num": 3, "rb_num": 1, "ch": 6, "max_displacement": 3, "skip_corr_index": [2]}
TINY_MMPRNN = {"n_features": 4, "n_blocks_a": 1, "n_blocks_b": 1}


@pytest.fixture(scope="session")
def official_state_dicts() -> dict[str, Any]:
    """preset -> {family, config, params_M, state_dict: [[key, shape], ...]} of the official code."""
    if not OFFICIAL_STATE_DICTS.exists():
        pytest.skip(f"{OFFICIAL_STATE_DICTS} is absent (the official state_dict reference beside the repo)")
    return json.loads(OFFICIAL_STATE_DICTS.read_text())["presets"]


def load_fixture(name: str) -> dict[str, Any]:
    """A parity fixture produced from the scratch reconstruction of the official code."""
    return torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)


def weights_checksum(state: dict[str, torch.Tensor]) -> float:
    return float(sum(v.double().sum() for _, v in sorted(state.items())))


def seeded_model(family: str, config: dict[str, Any], seed: int) -> torch.nn.Module:
    """A model of ``family`` with the deterministic weights of :func:`seeded_state_dict`."""
    model = create(family, **config).eval()
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed), strict=True)
    return model


@pytest.fixture
def tiny_mtu() -> torch.nn.Module:
    return seeded_model("mtu", TINY_MTU, 0)


@pytest.fixture
def tiny_mmprnn() -> torch.nn.Module:
    return seeded_model("mmprnn", TINY_MMPRNN, 0)



@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Any:
    """One intra-op thread: these graphs are thousands of tiny ops, where OpenMP gains nothing and,
    on a busy 2-core machine, its spinning barriers made them ~30x slower (measured: 37 s vs 1 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
