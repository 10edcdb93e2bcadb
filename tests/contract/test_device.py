"""vdeblur.contract.device: the one CPU probe (model, ISA, int8 saturation) and its override."""

from __future__ import annotations

import pytest

from vdeblur.contract import device


def test_cpu_info_describes_this_machine() -> None:
    info = device.cpu_info()
    assert info["model"] and info["arch"] == device.arch()
    assert 1 <= info["physical_cores"] <= info["logical_cores"]
    assert set(info["isa"]) <= set(device.ISA_FLAGS)
    assert info["vnni"] == any(f in device.cpu_flags() for f in device.VNNI_FLAGS)
    assert "flags_overridden_by" not in info or info["flags_overridden_by"] == device.OVERRIDE_ENV
    assert device.cpu_summary().startswith(info["model"])


@pytest.mark.parametrize(("flags", "saturates"), [
    ("sse4_2,avx,avx2,fma", True),                # AVX2 only (e.g. EPYC Zen 2, Haswell)
    ("avx2,avx512f,avx512bw", True),              # AVX-512 without VNNI (Skylake-SP)
    ("avx2,avx512f,avx512bw,avx512_vnni", False),  # Cascade Lake, Zen 4
    ("avx2,avx_vnni", False),                     # Alder Lake
])
def test_int8_saturation_follows_vnni(flags: str, saturates: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "arch", lambda: "x86_64")
    monkeypatch.setenv(device.OVERRIDE_ENV, flags)
    assert device.int8_saturates() is saturates
    info = device.cpu_info()
    assert info["int8_u8s8_saturates"] is saturates and info["flags_overridden_by"] == device.OVERRIDE_ENV


def test_arm64_does_not_saturate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "arch", lambda: "aarch64")
    monkeypatch.setenv(device.OVERRIDE_ENV, "asimd,asimddp")
    assert device.int8_saturates() is False


def test_load_average() -> None:
    load = device.load_average()
    assert load is None or (len(load) == 3 and all(x >= 0 for x in load))
