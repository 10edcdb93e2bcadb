"""Figures for the op cards: kernel-vs-reference errors and compiled-kernel resources.

Errors are measured on the Triton kernels (on CUDA when present, else in Triton's interpreter on
CPU) against reference.py; resources come from compiling each kernel to PTX per GPU target and
``ptxas -v`` (no GPU needed).

    python benchmarks/kernel_report.py [--out benchmarks/results/kernel_report.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402


def errors() -> dict[str, dict[str, float]]:
    from vdeblur.plugins.correlation import kernel as ck
    from vdeblur.plugins.correlation import reference as cr
    from vdeblur.plugins.correlation_argmax import kernel as ak
    from vdeblur.plugins.correlation_argmax import reference as ar
    from vdeblur.plugins.flow_warp import kernel as wk
    from vdeblur.plugins.flow_warp import reference as wr

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    out: dict[str, dict[str, float]] = {}
    worst = 0.0
    for shape, d, s in [((1, 16, 23, 37), 4, 1), ((2, 8, 17, 19), 6, 2), ((1, 52, 24, 40), 10, 1)]:
        a, b = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        ref = cr.correlation(a, b, d, s)
        rel = ((ck.correlation(a.to(dev), b.to(dev), d, s).cpu() - ref).abs().max() / ref.abs().max()).item()
        worst = max(worst, rel)
    out["correlation"] = {"max_rel_err_fp32": worst}
    eq, gap = [], 0.0
    for shape, d, p in [((1, 16, 23, 37), 4, 5), ((1, 52, 24, 40), 10, 5), ((2, 8, 17, 19), 3, 3)]:
        a = torch.randn(*shape, generator=g)
        b = torch.roll(a, (1, -2), (2, 3)) + 0.5 * torch.randn(*shape, generator=g)
        flow = ak.correlation_argmax(a.to(dev), b.to(dev), d, p).cpu()
        ref = ar.correlation_argmax(a, b, d, p)
        cost = ar.pooled_cost(a, b, d, p)
        k = 2 * d + 1
        idx = ((flow[:, 1] + d) * k + (flow[:, 0] + d)).long().unsqueeze(1)
        gap = max(gap, (cost.max(1, keepdim=True).values - cost.gather(1, idx)).max().item())
        eq.append((flow == ref).all(1).float().mean().item())
    out["correlation_argmax"] = {"min_fraction_identical": min(eq), "max_pooled_cost_gap": gap}
    worst = 0.0
    for shape in [(1, 16, 23, 37), (2, 26, 45, 80)]:
        for mode in ("zeros", "border"):
            x = torch.randn(*shape, generator=g)
            f = torch.randn(shape[0], 2, *shape[2:], generator=g) * 6
            err = (wk.flow_warp(x.to(dev), f.to(dev), mode).cpu() - wr.flow_warp(x, f, mode)).abs().max().item()
            worst = max(worst, err)
    out["flow_warp"] = {"max_abs_err_fp32": worst}
    return out


def resources() -> list[dict[str, object]]:
    from vdeblur.plugins.correlation import trt as ct
    from vdeblur.plugins.correlation_argmax import trt as at
    from vdeblur.plugins.flow_warp import trt as wt

    rows = []
    for arch in (80, 89, 90):
        for dtype in ("float32", "float16"):
            for op, ck in [("correlation d=10", ct.aot_kernel(dtype, 10, 1, arch)),
                           ("correlation_argmax d=10 pool=5", at.aot_kernel(dtype, 10, 5, arch)),
                           ("flow_warp zeros", wt.aot_kernel(dtype, "zeros", arch))]:
                rows.append({"op": op, "dtype": dtype, **ck.summary()})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kernel_report.json")
    args = ap.parse_args()
    report = {"machine": machine(), "kernel_device": "cuda" if torch.cuda.is_available() else "cpu (interpreter)",
              "errors": errors(), "resources": resources()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["errors"], indent=2))
    for r in report["resources"]:
        print(f"sm_{r['arch']} {r['dtype']:8s} {r['op']:32s} regs={r['registers']} spills={r['spill_stores']}/"
              f"{r['spill_loads']} shared={r['shared_mem']} warps={r['num_warps']}")


if __name__ == "__main__":
    main()
