"""Every released configuration builds with exactly the official state_dict keys and shapes."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from vdeblur.errors import UsageError
from vdeblur.models import PRESETS, create
from vdeblur.models.dstnet import DSTNet, DSTNetL
from vdeblur.models.mmprnn import MMPRNN
from vdeblur.models.mtu import MTU

OUR_PRESETS = sorted(name for name, p in PRESETS.items() if p.family in ("mtu", "mmprnn", "dstnet", "dstnet_L"))


def test_our_presets_are_the_released_ones() -> None:
    assert OUR_PRESETS == sorted(["dstnet", "dstnet_L", "mmprnn_a3b4c16", "mmprnn_a7b8c16", "mmprnn_a9b10c18",
                                  "mtu1", "mtu2", "mtu4", "mtu10", "mtu10_L"])


@pytest.mark.parametrize("preset", OUR_PRESETS)
def test_state_dict_matches_official(preset: str, official_state_dicts: dict[str, Any]) -> None:
    ref = official_state_dicts[preset]
    with torch.device("meta"):
        model = create(preset)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    theirs = [(k, list(s)) for k, s in ref["state_dict"]]
    assert {k for k, _ in ours} == {k for k, _ in theirs}
    assert ours == theirs  # same order too
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(ref["params_M"], abs=1e-4)
    assert model.config() == {k: v for k, v in ref["config"].items()}
    assert PRESETS[preset].family == model.family == ref["family"]


def test_family_overrides_build_the_official_constructor_arguments() -> None:
    mtu = create("mtu", hg_num=3, rb_num=2, ch=8, max_displacement=4, skip_corr_index=[2])
    assert isinstance(mtu, MTU) and len(mtu.HGs) == 3 and len(mtu.motion_layer) == 2
    rnn = create("mmprnn", n_features=8, n_blocks_a=2, n_blocks_b=3, future_frames=1, past_frames=3,
                 activation="relu", do_skip=False)
    assert isinstance(rnn, MMPRNN) and not hasattr(rnn, "skip") and rnn.lookahead == 1
    assert create("mtu2", rb_num=2).config()["rb_num"] == 2
    dst = create("dstnet", num_feat=16, num_block=2)
    assert type(dst) is DSTNet and len(dst.forward_propagation.resblock_bcakward2d.main[0]) == 2
    assert not hasattr(dst, "up") and dst.prop_channels == 16
    large = create("dstnet_L", num_feat=16, num_block=1)
    assert isinstance(large, DSTNetL) and large.prop_channels == 24 and large.up.out_channels == 24
    assert large.config() == {"num_feat": 16, "num_block": 1} and large.kind == "clip"


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("mtu", {"skip_corr_index": [0]}, r"mtu: skip_corr_index=\[0\] is invalid"),
        ("mtu", {"hg_num": 0}, r"mtu: hg_num=0 is invalid"),
        ("mtu", {"n_features": 3}, r"mtu: unknown option\(s\) n_features"),
        ("mmprnn", {"activation": "swish"}, r"activation: 'swish' is unknown"),
        ("mmprnn", {"future_frames": 0}, r"mmprnn: future_frames=0 is invalid"),
        ("mmprnn", {"hg_num": 2}, r"mmprnn: unknown option\(s\) hg_num"),
        ("dstnet", {"num_feat": 0}, r"dstnet: num_feat=0 is invalid"),
        ("dstnet", {"large": True}, r"dstnet: unknown option\(s\) large"),
        ("dstnet_L", {"num_feat": 15}, r"dstnet_L: num_feat=15 is invalid. Expected an even integer"),
    ],
)
def test_bad_configurations_fail_clearly(name: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        create(name, **kwargs)
