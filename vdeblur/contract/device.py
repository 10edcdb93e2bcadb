"""This machine's processor: model, architecture, ISA features, and what they mean for int8.

One probe for every layer (build, runtime, bench, benchmarks): results and engines record
:func:`cpu_info`, and the int8 paths ask :func:`int8_saturates` whether this CPU's ONNX Runtime
U8S8 kernels can be trusted with full-range (8-bit) weights.

Why it matters: on x86-64 CPUs without VNNI (AVX2 only, or AVX-512 without VNNI), ONNX Runtime's
U8S8 kernels multiply uint8 activations by int8 weights with ``vpmaddubsw``, which adds each pair
of products into a *saturating* int16: ``255 * 127 * 2 = 64770`` overflows 32767. Weights limited
to 7 bits ([-64, 63], ONNX Runtime's ``reduce_range``) keep every pair within range
(``255 * 64 * 2 = 32640``). VNNI (``vpdpbusd``, AVX-512 VNNI or AVX-VNNI) accumulates in int32 and
ARM64's dot-product kernels do not saturate, so full-range weights are right there.

Pure Python; reads /proc/cpuinfo on Linux. ``VDEBLUR_CPU_FLAGS`` (comma list) overrides the flags
read, for tests that exercise the non-VNNI path on any machine.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

# The flags that decide int8 kernels (and that results record), as /proc/cpuinfo spells them.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "sve")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
OVERRIDE_ENV = "VDEBLUR_CPU_FLAGS"


@functools.lru_cache(maxsize=1)
def _proc_cpuinfo() -> tuple[str | None, frozenset[str]]:
    model: str | None = None
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, frozenset(flags)


def arch() -> str:
    """``x86_64``, ``aarch64``... (normalised: amd64 -> x86_64, arm64 -> aarch64)."""
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (all of them), or the ``VDEBLUR_CPU_FLAGS`` override."""
    override = os.environ.get(OVERRIDE_ENV)
    if override is not None:
        return frozenset(f.strip() for f in override.split(",") if f.strip())
    return _proc_cpuinfo()[1]


def int8_saturates() -> bool:
    """True on x86-64 without VNNI: ONNX Runtime's U8S8 kernels saturate full-range int8 weights."""
    if arch() not in ("x86_64", "i686", "i386"):
        return False
    return not any(f in cpu_flags() for f in VNNI_FLAGS)


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores (distinct physical id / core id pairs of /proc/cpuinfo), else the logical count:
    the intra-op thread count ONNX Runtime itself defaults to, and what benchmarks pin."""
    pairs: set[tuple[str, str]] = set()
    physical = core = None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.cpu_count() or 1
    for line in [*text.splitlines(), ""]:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip():
            if core is not None:
                pairs.add((physical or "0", core))
            physical = core = None
    return len(pairs) or os.cpu_count() or 1


def cpu_info() -> dict[str, Any]:
    """What results and engines record: model, arch, cores, the ISA flags that matter, int8 facts."""
    model, _ = _proc_cpuinfo()
    flags = cpu_flags()
    info: dict[str, Any] = {
        "model": model or platform.processor() or arch(),
        "arch": arch(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "vnni": any(f in flags for f in VNNI_FLAGS),
        "int8_u8s8_saturates": int8_saturates(),
    }
    if os.environ.get(OVERRIDE_ENV) is not None:
        info["flags_overridden_by"] = OVERRIDE_ENV
    return info


def cpu_summary() -> str:
    """One line for humans: ``AMD EPYC 7B13 (x86_64; avx2, avx512_vnni)``."""
    info = cpu_info()
    keys = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp") if f in info["isa"]]
    return f"{info['model']} ({info['arch']}; {', '.join(keys) or 'no SIMD flags read'})"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (Unix), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None
