"""Shared helpers of the model tests: official reference data, parity fixtures, tiny models."""

from __future__ import annotations

import json
import re
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
TINY_DSTNET = {"num_feat": 16, "num_block": 1}

# DSTNet with plain seeded weights overflows to NaN within 3 to 5 frames: its per-pixel dynamic filter
# multiplies the recurrent state by kernels predicted from that same state (quadratic growth), and 15
# to 30 residual blocks per step add gain. Measured on the official code (Deblur(64, 15), 32x48): state
# max 6 -> 5.8e3 -> 1.6e9 -> NaN. Two scales keep every configuration bounded over 30 frames: the
# residual blocks' conv weights x 0.1 (the scale of BasicSR's own ResidualBlockNoBN initialisation,
# default_init_weights(..., 0.1)) and the per-pixel kernel predictor's tokernel weights x 0.1.
DSTNET_FIXTURE_SCALES = {
    r"\.resblock_bcakward2d\.main\.0\.\d+\.conv[12]\.weight$": 0.1,
    r"\.kernel_conv_pixel\.tokernel\.weight$": 0.1,
}


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


def dstnet_fixture_state_dict(template: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The DSTNet parity-fixture weights for a state_dict ``template`` (ours or the official one: same
    keys): :func:`seeded_state_dict`, the Haar filters ``wave.haar_weights`` kept as in ``template``
    (the fixed filters both constructors store), then :data:`DSTNET_FIXTURE_SCALES`."""
    state = seeded_state_dict(template, seed)
    state["wave.haar_weights"] = template["wave.haar_weights"].detach().clone()
    for key in state:
        for pattern, scale in DSTNET_FIXTURE_SCALES.items():
            if re.search(pattern, key):
                state[key] = state[key] * scale
    return state


def dstnet_fixture_model(family: str, config: dict[str, Any], seed: int) -> torch.nn.Module:
    """A DSTNet model (family "dstnet" or "dstnet_L") with :func:`dstnet_fixture_state_dict` weights."""
    model = create(family, **config).eval()
    model.load_state_dict(dstnet_fixture_state_dict(model.state_dict(), seed), strict=True)
    return model


@pytest.fixture
def tiny_mtu() -> torch.nn.Module:
    return seeded_model("mtu", TINY_MTU, 0)


@pytest.fixture
def tiny_mmprnn() -> torch.nn.Module:
    return seeded_model("mmprnn", TINY_MMPRNN, 0)


@pytest.fixture
def tiny_dstnet() -> torch.nn.Module:
    return dstnet_fixture_model("dstnet", TINY_DSTNET, 0)



@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Any:
    """One intra-op thread: these graphs are thousands of tiny ops, where OpenMP gains nothing and,
    on a busy 2-core machine, its spinning barriers made them ~30x slower (measured: 37 s vs 1 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
