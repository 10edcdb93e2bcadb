"""Plugin ops: portable ONNX on ONNX Runtime vs the PyTorch reference, on this machine's CPU.

Sizes are those of one 1280x720 MTU frame: motion search on 52-channel features at 320x180
(d = 10, 441 displacements), the plain cost volume at the same size, and the warp of the
26-channel full-resolution features by a 1280x720 flow. Both sides use the same thread count;
the calls are interleaved and the ratio (torch median / ONNX Runtime median) is what to read.

    python benchmarks/ops_onnxruntime.py [--repeats 5] [--out benchmarks/results/ops_onnxruntime.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, side_by_side  # noqa: E402

from vdeblur.plugins import correlation, correlation_argmax, flow_warp, lowering  # noqa: E402


class _Op(torch.nn.Module):
    def __init__(self, fn, **attrs) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.fn, self.attrs = fn, attrs

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fn(a, b, **self.attrs)


def portable_session(module: torch.nn.Module, args: tuple[torch.Tensor, ...], threads: int) -> ort.InferenceSession:
    h, w = torch.export.Dim("H", min=4, max=4096), torch.export.Dim("W", min=4, max=4096)
    with warnings.catch_warnings(), lowering("portable"):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module.eval(), args, dynamo=True, opset_version=18, verbose=False,
                                 dynamic_shapes=tuple({2: h, 3: w} for _ in args))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads would keep burning the cores while the torch side runs in between.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(prog.model_proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ops_onnxruntime.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 52, 180, 320, generator=g), torch.randn(1, 52, 180, 320, generator=g)
    warp_in = torch.rand(1, 26, 720, 1280, generator=g), torch.randn(1, 2, 720, 1280, generator=g) * 8
    cases = [
        ("correlation_argmax d=10 pool=5, 52ch 320x180", _Op(correlation_argmax, max_displacement=10, pool=5), feats),
        ("correlation d=10, 52ch 320x180", _Op(correlation, max_displacement=10), feats),
        ("flow_warp zeros, 26ch 1280x720", _Op(flow_warp, padding_mode="zeros"), warp_in),
    ]
    results = []
    for name, module, inputs in cases:
        sess = portable_session(module, inputs, args.threads)
        feeds = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs, strict=True)}
        with torch.inference_mode():
            ref = module(*inputs).numpy()
        out = sess.run(None, feeds)[0]
        agree = float((out == ref).mean()) if "argmax" in name else float(np.abs(out - ref).max())
        with torch.inference_mode():
            timing = side_by_side({"torch": lambda m=module, x=inputs: m(*x),
                                   "onnxruntime": lambda s=sess, f=feeds: s.run(None, f)}, repeats=args.repeats)
        row = {
            "case": name,
            "torch_ms": 1e3 * timing["torch"]["median_s"],
            "onnxruntime_ms": 1e3 * timing["onnxruntime"]["median_s"],
            "speedup_ort_over_torch": timing["torch"]["median_s"] / timing["onnxruntime"]["median_s"],
            ("fraction_equal" if "argmax" in name else "max_abs_err"): agree,
        }
        results.append(row)
        print(json.dumps(row))
    report = {"benchmark": "ops_onnxruntime", "machine": machine(), "threads": args.threads,
              "repeats": args.repeats, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
