"""load_checkpoint: every official release format loads; anything else fails clearly and runs nothing."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.models.conftest import TINY_MMPRNN, TINY_MTU, seeded_model
from vdeblur.errors import CheckpointError
from vdeblur.models import create, load_checkpoint


def _source() -> torch.nn.Module:
    return seeded_model("mtu", TINY_MTU, 21)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _prefixed(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"module." + k: v for k, v in sd.items()}


FORMATS: dict[str, Callable[[dict[str, torch.Tensor]], Any]] = {
    "raw": lambda sd: sd,
    "raw-module": _prefixed,
    "params": lambda sd: {"params": sd},
    "params_ema": lambda sd: {"params_ema": sd, "params": {k: torch.zeros_like(v) for k, v in sd.items()}},
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 7},
    "dataparallel": lambda sd: {"state_dict": _prefixed(sd), "optimizer": {"state": {}, "param_groups": []},
                                "scheduler": {"last_epoch": 3}, "epoch": 500},
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_accepted_formats(fmt: str, tmp_path: Path) -> None:
    source = _source()
    path = tmp_path / "ckpt.pth"
    torch.save(FORMATS[fmt](source.state_dict()), path)
    model = create("mtu", **TINY_MTU)
    report = load_checkpoint(model, path)
    assert _same(model, source)
    assert report.loaded == len(source.state_dict()) and report.format == "torch" and not report.dropped
    containers = {"raw-module": "raw", "dataparallel": "state_dict"}
    assert report.container == containers.get(fmt, fmt)
    assert report.stripped_prefix == ("module." if fmt in ("raw-module", "dataparallel") else None)
    if fmt == "dataparallel":
        assert report.ignored_entries == ["epoch", "optimizer", "scheduler"]


def test_mtu_training_heads_are_dropped_and_reported(tmp_path: Path) -> None:
    source = _source()
    sd = _prefixed(source.state_dict())
    heads = {f"module.deblur_layer.{i}.{p}": torch.randn(3, 12, 3, 3) if p == "weight" else torch.randn(3)
             for i in range(2) for p in ("weight", "bias")}
    path = tmp_path / "MTU2_DVD.pytorch"
    torch.save({**sd, **heads}, path)
    model = create("mtu", **TINY_MTU)
    report = load_checkpoint(model, path)
    assert _same(model, source)
    assert sorted(report.dropped) == sorted(k[len("module."):] for k in heads)
    assert all("training-only" in reason for reason in report.dropped.values())
    assert "dropped 4 keys (training-only" in report.summary()


@pytest.mark.parametrize("prefix", ["module.", "module.model."])
def test_mmprnn_release_format(prefix: str, tmp_path: Path) -> None:
    # train/dp.py: {'epoch', 'model', 'state_dict', 'register_dict', 'optimizer', 'scheduler'}
    source = seeded_model("mmprnn", TINY_MMPRNN, 22)
    path = tmp_path / "model_best.pth.tar"
    sd = {prefix + k: v for k, v in source.state_dict().items()}
    torch.save({"epoch": 500, "model": "MMPRNN", "state_dict": sd, "register_dict": {},
                "optimizer": {"state": {}, "param_groups": []}, "scheduler": {}}, path)
    model = create("mmprnn", **TINY_MMPRNN)
    report = load_checkpoint(model, path)
    assert _same(model, source) and not report.dropped
    assert report.stripped_prefix == prefix
    assert report.ignored_entries == ["epoch", "model", "optimizer", "register_dict", "scheduler"]
    assert any(k.startswith("cell.prior.") for k in model.state_dict())


def test_safetensors(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
    source = _source()
    path = tmp_path / "mtu.safetensors"
    safetensors.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = create("mtu", **TINY_MTU)
    assert load_checkpoint(model, path).format == "safetensors"
    assert _same(model, source)


def test_wrong_family_lists_missing_and_unexpected_keys(tmp_path: Path) -> None:
    path = tmp_path / "mmprnn.pth"
    torch.save({"state_dict": seeded_model("mmprnn", TINY_MMPRNN, 23).state_dict()}, path)
    model = create("mtu", **TINY_MTU)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    match = (r"mmprnn.pth: does not fit mtu\(hg_num=3.*\): \d+ missing keys \(base_conv.0.weight, .*\); "
             r"\d+ unexpected keys \(cell.F_B0.weight, .*another model family")
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_missing_and_unexpected_keys_of_the_same_family(tmp_path: Path) -> None:
    sd = _source().state_dict()
    del sd["out.bias"]
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    match = r"1 missing keys \(out.bias\); 1 unexpected keys \(extra.weight\)"
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(create("mtu", **TINY_MTU), path)


def test_wrong_configuration_lists_shapes(tmp_path: Path) -> None:
    path = tmp_path / "wide.pth"
    torch.save(create("mtu", **{**TINY_MTU, "ch": 8}).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"wide.pth: tensor shapes do not fit mtu.*base_conv.0.weight "
                       r"\(8, 3, 3, 3\) vs \(6, 3, 3, 3\)"):
        load_checkpoint(create("mtu", **TINY_MTU), path)


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "truncated.pth"
    torch.save(_source().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated.pth: cannot be read .* may be truncated"):
        load_checkpoint(create("mtu", **TINY_MTU), path)


class _Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


class _EvilSystem:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("container", ["torch-zip", "plain-pickle"])
@pytest.mark.parametrize("payload", [_Evil, _EvilSystem])
def test_code_executing_pickle_is_refused_and_never_runs(
    container: str, payload: type, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    obj = {**_source().state_dict(), "payload": payload(marker)}
    path = tmp_path / "evil.pth"
    if container == "torch-zip":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"evil.pth: refused to load: the file would import or call"):
        load_checkpoint(create("mtu", **TINY_MTU), path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ([1, 2, 3], r"holds a list. Expected a state_dict"),
        ({"a.weight": torch.zeros(1), "b": 3}, r"entries b are not tensors"),
    ],
)
def test_not_a_state_dict(content: Any, match: str, tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(create("mtu", **TINY_MTU), path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope.pth: no such file"):
        load_checkpoint(create("mtu", **TINY_MTU), tmp_path / "nope.pth")
