"""Image comparison metrics shared by export validation, `vdeblur compare` and the benchmarks.

Numpy only (the runtime must not need torch). Images are float arrays in [0, 1], any shape.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Default per-pixel tolerance for "fraction within tolerance": half an 8-bit code value.
PIXEL_TOL = 0.5 / 255.0


def psnr(a: Any, b: Any, peak: float = 1.0) -> float:
    """PSNR in dB between two images/videos in [0, peak]; inf when identical."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def compare(test: Any, reference: Any, tol: float = PIXEL_TOL) -> dict[str, float]:
    """PSNR (dB), max abs error and the fraction of values within ``tol`` of the reference."""
    t = np.asarray(test, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if t.shape != r.shape:
        raise ValueError(f"compare: shapes {t.shape} and {r.shape} differ")
    err = np.abs(t - r)
    return {
        "psnr_db": psnr(t, r),
        "max_abs_err": float(err.max()) if err.size else 0.0,
        "fraction_within_tol": float((err <= tol).mean()) if err.size else 1.0,
        "tol": tol,
    }


def json_safe(value: float) -> float | str:
    """An infinite PSNR as the string "inf" (or "-inf") so reports stay valid JSON."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value
