"""vdeblur.contract.precision: the frame bars and metrics every verification uses."""

from __future__ import annotations

import numpy as np

from vdeblur.contract.precision import ENGINE_BARS, HALF_LEVEL, PRECISIONS, VARIANT_BARS, FrameBar, frame_metrics


def test_frame_metrics() -> None:
    a = np.full((2, 4, 4, 3), 0.5, np.float32)
    assert frame_metrics(a, a) == {"psnr_db": float("inf"), "within_half_level": 1.0}
    b = a.copy()
    b[0, 0, 0, 0] += 2 * HALF_LEVEL  # one value one 8-bit level off
    m = frame_metrics(b, a)
    assert m["within_half_level"] == 1 - 1 / a.size
    assert abs(m["psnr_db"] - 10 * np.log10(a.size / (2 * HALF_LEVEL) ** 2)) < 1e-6
    assert frame_metrics(a[:1], a)["psnr_db"] == float("-inf")  # shapes differ
    nan = a.copy()
    nan[0, 0, 0, 0] = np.nan
    assert frame_metrics(nan, a)["within_half_level"] == 0.0
    assert frame_metrics(a + 5.0, np.ones_like(a))["psnr_db"] == float("inf")  # compared as users see: clipped


def test_bars() -> None:
    assert set(ENGINE_BARS) == set(PRECISIONS) and set(VARIANT_BARS) == set(PRECISIONS) - {"fp32"}
    bar = FrameBar(45.0, 0.98)
    assert bar.check(50.0, 0.99) is None
    assert bar.check(33.6, 0.22) == "PSNR 33.60 dB < 45.0 dB; 22.00% within half an 8-bit level < 98.0%"
    assert bar.check(float("nan"), 1.0) is not None
