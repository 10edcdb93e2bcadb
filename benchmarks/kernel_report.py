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
    from vdeblur.plugins import specs
    from vdeblur.plugins.correlation import reference as cr
    from vdeblur.plugins.correlation_argmax import reference as ar
    from vdeblur.plugins.flow_warp import reference as wr
    from vdeblur.plugins.torchop import launch

    corr, search, warp = (specs()[n] for n in ("correlation", "correlation_argmax", "flow_warp"))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    out: dict[str, dict[str, float]] = {}
    worst = 0.0
    for shape, d, s in [((1, 16, 23, 37), 4, 1), ((2, 8, 17, 19), 6, 2), ((1, 52, 24, 40), 10, 1)]:
        a, b = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        ref = cr.correlation(a, b, d, s)
        got = launch(corr, a.to(dev), b.to(dev), max_displacement=d, stride=s).cpu()
        rel = ((got - ref).abs().max() / ref.abs().max()).item()
        worst = max(worst, rel)
    out["correlation"] = {"max_rel_err_fp32": worst}
    eq, gap = [], 0.0
    for shape, d, p in [((1, 16, 23, 37), 4, 5), ((1, 52, 24, 40), 10, 5), ((2, 8, 17, 19), 3, 3)]:
        a = torch.randn(*shape, generator=g)
        b = torch.roll(a, (1, -2), (2, 3)) + 0.5 * torch.randn(*shape, generator=g)
        flow = launch(search, a.to(dev), b.to(dev), max_displacement=d, pool=p).cpu()
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
            got = launch(warp, x.to(dev), f.to(dev), padding_mode=mode).cpu()
            worst = max(worst, (got - wr.flow_warp(x, f, mode)).abs().max().item())
    out["flow_warp"] = {"max_abs_err_fp32": worst}
    # the ops whose cards give float32 and float16-input errors, on the shapes their cards name
    dyn_filter = [((1, 16, 23, 37), 16, 3), ((2, 24, 17, 19), 8, 5), ((1, 8, 40, 64), 8, 3), ((1, 6, 9, 10), 2, 7)]
    out["dynamic_filter"] = _errors_fp32_fp16(specs()["dynamic_filter"], dev, g, [
        ((s, (s[0], grp, k, k, *s[2:])), 1.0) for s, grp, k in dyn_filter])
    dyn_depthwise = [((1, 16, 23, 37), 3), ((2, 24, 17, 19), 5), ((1, 8, 40, 64), 3), ((1, 6, 9, 10), 7)]
    out["dynamic_depthwise"] = _errors_fp32_fp16(specs()["dynamic_depthwise"], dev, g, [
        ((s, (s[0], s[1], k, k), (s[1],)), 1.0) for s, k in dyn_depthwise])
    out["volume_aggregate"] = _errors_fp32_fp16(specs()["volume_aggregate"], dev, g, [
        (((1, 64, 24, 40), (1, 64, 12, 20), (1, 64, 12, 20)), 1.0),
        (((1, 128, 18, 32), (1, 128, 9, 16), (1, 128, 9, 16)), 1.0),
        (((2, 37, 13, 11), (2, 37, 17, 19), (2, 70, 17, 19)), 1.0),
        (((1, 64, 24, 40), (1, 64, 12, 20), (1, 64, 12, 20)), 0.2)])
    return out


def _errors_fp32_fp16(spec: object, dev: str, g: torch.Generator,
                      cases: list[tuple[tuple[tuple[int, ...], ...], float]]) -> dict[str, object]:
    """Kernel against reference.py per case (the inputs' shapes, a scale for their randn values): float32
    inputs, and float16 inputs against the float32 reference on the same (float16-rounded) inputs.
    Absolute errors and errors relative to max |out|."""
    from vdeblur.plugins.torchop import launch

    reference = spec.reference_fn()
    rows = []
    for shapes, scale in cases:
        x = [torch.randn(*shape, generator=g) * scale for shape in shapes]
        row: dict[str, object] = {"shapes": [list(t.shape) for t in x]}
        for dtype, tag in ((torch.float32, "fp32"), (torch.float16, "fp16")):
            xs = [t.to(dtype) for t in x]
            want = reference(*(t.float() for t in xs))
            got = launch(spec, *(t.to(dev) for t in xs)).float().cpu()
            err = (got - want).abs().max().item()
            row[f"max_abs_err_{tag}"] = err
            row[f"max_rel_err_{tag}"] = err / max(want.abs().max().item(), 1e-30)
        rows.append(row)
    summary = {key: max(r[key] for r in rows) for key in rows[0] if key != "shapes"}
    return {**summary, "cases": rows}


def resources() -> list[dict[str, object]]:
    from vdeblur.plugins import specs
    from vdeblur.plugins.aot import compile_op

    cases = [("correlation d=10", "correlation", {"max_displacement": 10, "stride": 1}),
             ("correlation_argmax d=10 pool=5", "correlation_argmax", {"max_displacement": 10, "pool": 5}),
             ("flow_warp zeros", "flow_warp", {"padding_mode": "zeros"}),
             ("dynamic_filter", "dynamic_filter", {}),
             ("dynamic_depthwise", "dynamic_depthwise", {}),
             ("volume_aggregate", "volume_aggregate", {})]
    rows = []
    for arch in (80, 89, 90):
        for dtype in ("float32", "float16"):
            for label, name, attrs in cases:
                ck = compile_op(specs()[name], dtype, attrs, arch)
                rows.append({"op": label, "dtype": dtype, **ck.summary()})
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
