"""Shared helpers of the benchmark suite: machine description, side-by-side timing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def machine() -> dict[str, Any]:
    """The machine of a recorded figure: CPU model and ISA flags (vdeblur.contract.device), cores,
    versions, torch threads, GPU, load average."""
    import onnxruntime
    import torch

    from vdeblur.contract.device import cpu_info, load_average

    info = cpu_info()
    return {
        "cpu": info["model"],
        "cpu_info": info,
        "load_average": load_average(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def side_by_side(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, dict[str, float]]:
    """Time several callables interleaved (A B A B ...), so machine noise hits all alike. Seconds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "runs": len(v)} for k, v in times.items()}
