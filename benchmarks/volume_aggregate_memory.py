"""Time and peak memory of ``vdeblur::VolumeAggregate`` at ARVo's 720p level-1 sizes, on the CPU.

q: (1, C, 180, 320), k: (1, C, 90, 160), v: (1, Cv, 90, 160): the full volume would be
57600 x 14400 = 829 M entries (3.3 GB in float32). Measured:

- ``torch``: the eager reference (the entry point on CPU tensors, no grad);
- ``torch-backward`` (``--one`` only): the eager forward and backward;
- ``ort``: the portable ONNX lowering (exported with dynamic N, H, W, h, w from a small example) in
  ONNX Runtime's CPU provider.

Each measurement runs in a fresh process: the inputs are made (and the ONNX Runtime session built),
the process's peak RSS is reset (``/proc/self/clear_refs`` 5), then the op runs once; the peak growth is
VmHWM after the run minus VmRSS before it. The later runs are timed.

    .venv/bin/python benchmarks/volume_aggregate_memory.py [--channels 64 128] [--repeats 2]
        [--backends torch ort] [--json benchmarks/results/volume_aggregate_memory.json]
    .venv/bin/python benchmarks/volume_aggregate_memory.py --one ort --onnx PATH --channels 64   # one line of JSON
    .venv/bin/python benchmarks/volume_aggregate_memory.py --one torch-backward --channels 32 --q-hw 90 160 --k-hw 60 80
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
Q_HW = (180, 320)  # 720p at 1/4 resolution (ARVo's level 1 queries)
K_HW = (90, 160)  # the neighbour features max-pooled once (level-1 keys)


def _status() -> dict[str, int]:
    return {k: int(v) * 1024 for k, v in re.findall(r"(Vm\w+):\s+(\d+) kB", Path("/proc/self/status").read_text())}


def _reset_peak() -> int:
    """Reset this process's peak RSS (VmHWM) to its current RSS; returns that RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status()["VmRSS"]


def export_portable(path: Path, channels: int, value_channels: int) -> float:
    """The portable lowering of the op, dynamic in N, H, W, h, w, to ``path``; returns the export seconds."""
    import warnings

    import torch

    from vdeblur.plugins import call, lowering

    class Op(torch.nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return call("volume_aggregate", q, k, v)

    dims = {d: torch.export.Dim(d, min=1 if d == "N" else 2, max=4096) for d in "NHWUV"}
    dynamic = ({0: dims["N"], 2: dims["H"], 3: dims["W"]}, {0: dims["N"], 2: dims["U"], 3: dims["V"]},
               {0: dims["N"], 2: dims["U"], 3: dims["V"]})
    args = (torch.randn(1, channels, 12, 10), torch.randn(1, channels, 23, 29), torch.randn(1, value_channels, 23, 29))
    start = time.perf_counter()
    with warnings.catch_warnings(), lowering("portable"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(Op().eval(), args, dynamo=True, dynamic_shapes=dynamic, opset_version=18,
                                    verbose=False)
    assert program is not None
    program.model_proto  # noqa: B018
    seconds = time.perf_counter() - start
    import onnx

    onnx.save(program.model_proto, str(path))
    return seconds


def measure_one(backend: str, channels: int, value_channels: int, repeats: int, onnx_path: str | None,
                q_hw: tuple[int, int] = Q_HW, k_hw: tuple[int, int] = K_HW) -> dict[str, Any]:
    """One measurement in this process (see the module docstring). Backend "torch-backward": the
    eager forward and backward (gradients of q, k and v)."""
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = [(1, channels, *q_hw), (1, channels, *k_hw), (1, value_channels, *k_hw)]
    arrays = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    if backend in ("torch", "torch-backward"):
        import torch

        from vdeblur.plugins import volume_aggregate

        # The entry point loads the torch side of vdeblur.plugins on first call (~140 MiB of modules):
        # warm it up before the peak is reset, so that only the op's own memory is counted.
        warm = [torch.randn(1, channels, 3, 4, requires_grad=True), torch.randn(1, channels, 2, 3),
                torch.randn(1, value_channels, 2, 3)]
        volume_aggregate(*warm).sum().backward()
    if backend == "torch":
        tensors = [torch.from_numpy(a) for a in arrays]

        def run() -> Any:
            with torch.no_grad():
                return volume_aggregate(*tensors)
        threads = torch.get_num_threads()
    elif backend == "torch-backward":
        tensors = [torch.from_numpy(a).requires_grad_() for a in arrays]
        grad = torch.from_numpy(rng.standard_normal((1, value_channels, *q_hw), dtype=np.float32))

        def run() -> Any:
            return torch.autograd.grad(volume_aggregate(*tensors), tensors, grad)
        threads = torch.get_num_threads()
    elif backend == "ort":
        import onnxruntime as ort

        assert onnx_path is not None, "--onnx is needed for ort"
        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays, strict=True)}

        def run() -> Any:
            return session.run(None, feeds)[0]
        threads = 0  # ONNX Runtime's default: one intra-op thread per core
    else:
        raise SystemExit(f"unknown backend {backend!r}")
    baseline = _reset_peak()
    start = time.perf_counter()
    out = run()
    first = time.perf_counter() - start
    peak = _status()["VmHWM"] - baseline
    del out
    times = []
    for _ in range(repeats - 1):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    full_volume = q_hw[0] * q_hw[1] * k_hw[0] * k_hw[1] * 4
    return {"backend": backend, "channels": channels, "value_channels": value_channels, "q": shapes[0],
            "k": shapes[1], "v": shapes[2], "first_run_s": round(first, 3),
            "best_s": round(min(times + [first]), 3), "peak_growth_bytes": peak,
            "peak_growth_mib": round(peak / 2**20, 1), "full_volume_mib": round(full_volume / 2**20, 1),
            "threads": threads}


def measure_in_subprocess(backend: str, channels: int, value_channels: int, repeats: int,
                          onnx_path: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", backend, "--channels", str(channels),
           "--value-channels", str(value_channels), "--repeats", str(repeats)]
    if onnx_path is not None:
        cmd += ["--onnx", str(onnx_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} measurement failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--value-channels", type=int, default=None, help="Cv (default: C)")
    parser.add_argument("--backends", nargs="+", default=["torch", "ort"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", default=None, help="run one measurement in this process (torch or ort)")
    parser.add_argument("--onnx", default=None)
    parser.add_argument("--q-hw", type=int, nargs=2, default=Q_HW, help="H W of q (default 180 320)")
    parser.add_argument("--k-hw", type=int, nargs=2, default=K_HW, help="h w of k and v (default 90 160)")
    args = parser.parse_args()
    if args.one:
        c = args.channels[0]
        print(json.dumps(measure_one(args.one, c, args.value_channels or c, args.repeats, args.onnx,
                                     tuple(args.q_hw), tuple(args.k_hw))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in args.channels:
            cv = args.value_channels or c
            path = None
            export_s = None
            if "ort" in args.backends:
                path = Path(tmp) / f"va_{c}_{cv}.onnx"
                export_s = round(export_portable(path, c, cv), 2)
            for backend in args.backends:
                row = measure_in_subprocess(backend, c, cv, args.repeats, path if backend == "ort" else None)
                if backend == "ort":
                    row["export_s"] = export_s
                rows.append(row)
                print(f"{backend:5s} C={c:4d} Cv={cv:4d}: first {row['first_run_s']:.2f} s, "
                      f"best {row['best_s']:.2f} s, peak growth {row['peak_growth_mib']:.0f} MiB "
                      f"(full volume {row['full_volume_mib']:.0f} MiB)",
                      flush=True)
    if args.json:
        sys.path.insert(0, str(REPO))
        from benchmarks._common import machine

        args.json.write_text(json.dumps({"rows": rows, "machine": machine()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
