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

The NVIDIA GPUs, for build plans, engine cache keys and runtimes: :func:`nvidia_gpus` (names and
compute capabilities from the CUDA driver library, through ctypes) and :func:`nvidia_device_present`.

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


# --------------------------------------------------------------------------------------------
# NVIDIA GPUs: the one "is there a GPU, which one" probe (build plans, cache keys, runtimes)
# --------------------------------------------------------------------------------------------

CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


def nvidia_device_present() -> bool:
    """A cheap look without loading any driver: an NVIDIA device node (``/dev/nvidia0``..., or
    ``/dev/dxg`` under WSL) while ``CUDA_VISIBLE_DEVICES`` does not hide every device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/dxg").exists()


def load_libcuda() -> Any:
    """The CUDA driver library through ctypes; OSError naming what was tried when it is absent."""
    import ctypes
    import ctypes.util
    import sys

    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    found = ctypes.util.find_library("cuda")
    if found:
        names.append(found)
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            errors.append(str(e))
    raise OSError("; ".join(errors) or "not found")


def nvidia_gpus(lib: Any = None) -> tuple[list[dict[str, str]], str]:
    """([{"name", "compute_capability": "9.0"}, ...] of the CUDA devices this process sees, in the
    driver's order (after ``CUDA_VISIBLE_DEVICES``); why the list is empty, else "").

    Asks the CUDA driver library directly (``cuInit``, no context is created), so it needs neither
    torch nor pycuda; ``lib`` stands for libcuda in tests. The dicts are what engine cache keys and
    sidecars record."""
    import ctypes

    if lib is None:
        try:
            lib = load_libcuda()
        except OSError as e:
            return [], f"the CUDA driver library cannot be loaded ({e})"

    def failed(status: int) -> str:
        name = ctypes.c_char_p()
        if lib.cuGetErrorName(int(status), ctypes.byref(name)) == 0 and name.value:
            return str(name.value.decode(errors="replace"))
        return f"CUresult {status}"

    status = lib.cuInit(0)
    if status != 0:
        return [], f"the CUDA driver does not initialise ({failed(status)})"
    count = ctypes.c_int(0)
    status = lib.cuDeviceGetCount(ctypes.byref(count))
    if status != 0:
        return [], f"the CUDA driver cannot count devices ({failed(status)})"
    gpus = []
    for ordinal in range(count.value):
        dev, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        status = lib.cuDeviceGet(ctypes.byref(dev), ordinal)
        if status == 0:
            status = lib.cuDeviceGetName(name, ctypes.c_int(len(name)), dev)
        if status == 0:
            status = lib.cuDeviceGetAttribute(ctypes.byref(major), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
        if status == 0:
            status = lib.cuDeviceGetAttribute(ctypes.byref(minor), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
        if status != 0:
            return [], f"the CUDA driver cannot describe device {ordinal} ({failed(status)})"
        gpus.append({"name": name.value.decode(errors="replace"), "compute_capability": f"{major.value}.{minor.value}"})
    return gpus, "" if gpus else "the CUDA driver reports no device"
