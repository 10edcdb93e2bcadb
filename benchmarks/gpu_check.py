"""One GPU check for a data-center GPU with PyTorch and Triton only (issue 13, item 4).

    python benchmarks/gpu_check.py [--out-dir benchmarks/results] [--budget-s 420]
    python benchmarks/gpu_check.py --dry-run --out-dir /tmp/x   # CPU smoke run: tiny sizes, Triton interpreter

Needs PyTorch with CUDA, Triton, numpy and vdeblur installed with ``pip install --no-deps -e .``:
no TensorRT, no ONNX, no network, no PyAV, scikit-image or Pillow (nothing here imports them, nor
do the vdeblur modules it imports; ``imports`` in the JSON lists them). Sections, each with its
share of the time budget (an item that would start after its section's deadline is recorded as
skipped, with the reason):

1. ``kernels``: every registered plugin op's Triton kernel against its reference on CUDA, float32
   and float16 inputs, on the op's examples and on the shapes mtu2 feeds it at 1280x720 (captured
   from one step of the model); max abs error and the fraction within the op card's tolerance.
2. ``kernel_timing``: kernel vs the materialised PyTorch reference at those 720p shapes: CUDA
   events, the two interleaved (A B B A ...), medians of ``--repeats`` runs, and their ratio.
3. ``latency``: per-frame latency at 1280x720 of mtu2 and mmprnn_a7b8c16 (random weights, seed 0)
   through the torch step module on CUDA: fp32 and fp16 (``.half()`` model, frames and states),
   eager and captured in a CUDA graph (``torch.cuda.graph``; eager is the fallback when capture
   fails), interleaved frame by frame on ``vdeblur.data.texture.moving_texture`` frames. GPU time
   (CUDA events around the step) and wall time (upload, step, download); PSNR of fp16 against fp32
   and the largest difference of the graph outputs from eager, on the same frames.

Writes ``<out-dir>/gpu_check_<gpu-name>.json``. Exit codes: 0 every check ran and passed; 1 a check
failed or raised (``errors`` and the ``ok`` flags in the JSON); 2 this machine cannot run the check
(no CUDA device, PyTorch or Triton missing), with a message and no traceback.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = "vdeblur.gpu_check/1"
FAMILIES = ("mtu2", "mmprnn_a7b8c16")
# Modules absent on the target machine: nothing this script runs may import them.
ABSENT_ON_TARGET = ("av", "skimage", "PIL", "safetensors", "onnxscript", "matplotlib", "tensorrt", "tensorrt_rtx",
                    "pycuda")
SECTION_SHARES = {"kernels": 0.2, "kernel_timing": 0.2, "latency": 0.5}  # of --budget-s; the rest is slack
# An op no family calls is timed at the shapes of one that a family calls: plain correlation at the
# cost volume mtu2's motion search computes (before pooling and argmax).
STAND_INS = {"correlation": ("correlation_argmax", lambda a: {"max_displacement": a["max_displacement"], "stride": 1})}


class Unavailable(Exception):
    """This machine cannot run the check (exit code 2)."""


# --------------------------------------------------------------------------------------------
# Settings, budget, machine
# --------------------------------------------------------------------------------------------


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Sizes and counts: the real run on a GPU, or the CPU smoke run (--dry-run)."""
    if args.dry_run:
        # mtu2's op calls are captured from a narrow MTU (d=2, 4 channels): the interpreter takes
        # ~20 s per correlation_argmax call at mtu2's own d=10 and 52 channels.
        return {"device": "cpu", "height": 32, "width": 48, "frames": 3, "warmup": 2, "timed_frames": 2,
                "repeats": 3, "kernel_warmup": 1, "examples": 1, "cuda_graphs": False,
                "capture_overrides": {"ch": 4, "rb_num": 1, "max_displacement": 2}}
    return {"device": "cuda", "height": 720, "width": 1280, "frames": args.frames, "warmup": 5,
            "timed_frames": args.timed_frames, "repeats": args.repeats, "kernel_warmup": 3, "examples": None,
            "cuda_graphs": not args.no_cuda_graphs, "capture_overrides": {}}


class Budget:
    """The run's time budget and its split into sections."""

    def __init__(self, total_s: float) -> None:
        self.total_s = total_s
        self.start = time.monotonic()
        self.end = self.start + total_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def section_deadline(self, name: str) -> float:
        return min(self.end, time.monotonic() + SECTION_SHARES[name] * self.total_s)


def machine(torch: Any, triton: Any, device: str) -> dict[str, Any]:
    """GPU name, compute capability, driver, CUDA, versions, CPU: the figures' machine."""
    from vdeblur.contract.device import cpu_info

    info: dict[str, Any] = {
        "cpu": cpu_info().get("model"), "cores": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "triton": triton.__version__, "numpy": _version("numpy"), "device": device,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update({"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{props.major}.{props.minor}",
                     "gpu_memory_gib": round(props.total_memory / 2**30, 1), "gpu_count": torch.cuda.device_count(),
                     "driver": driver_version(), "cudnn": torch.backends.cudnn.version()})
    else:
        info.update({"gpu": None, "compute_capability": None, "driver": None})
    return info


def driver_version() -> str | None:
    """The NVIDIA kernel driver version (/proc/driver/nvidia/version, else nvidia-smi), or None."""
    try:
        m = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([\d.]+)", Path("/proc/driver/nvidia/version").read_text())
        if m:
            return m.group(1)
    except OSError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except Exception:
        return None


def gpu_slug(name: str | None) -> str:
    """'NVIDIA H200' -> 'nvidia-h200' (the result file's suffix)."""
    return re.sub(r"[^a-z0-9]+", "-", (name or "unknown-gpu").lower()).strip("-")


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


class Timer:
    """Times callables on the device: CUDA events on CUDA, perf_counter on the CPU (ms)."""

    def __init__(self, torch: Any, device: str) -> None:
        self.torch, self.cuda = torch, device == "cuda"
        self.kind = "cuda events" if self.cuda else "perf_counter"

    def interleaved(self, fns: dict[str, Callable[[], Any]], repeats: int, warmup: int,
                    deadline: float) -> dict[str, dict[str, Any]]:
        """Median, min and count of ms per callable, run interleaved (A B, then B A...) until
        ``repeats`` rounds or the deadline."""
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        self.sync()
        marks: dict[str, list[Any]] = {k: [] for k in fns}
        names = list(fns)
        for r in range(repeats):
            if r and time.monotonic() > deadline:
                break
            for name in names if r % 2 == 0 else reversed(names):
                marks[name].append(self.measure(fns[name]))
        self.sync()
        out = {}
        for name, ms in marks.items():
            values = [self.ms(m) for m in ms]
            out[name] = {"median_ms": statistics.median(values), "min_ms": min(values), "runs": len(values)}
        return out

    def measure(self, fn: Callable[[], Any]) -> Any:
        if self.cuda:
            start, end = (self.torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            fn()
            end.record()
            return start, end
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    def ms(self, mark: Any) -> float:
        return float(mark[0].elapsed_time(mark[1])) if self.cuda else float(mark)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


class Report:
    """The JSON being written, with the error log shared by the sections."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {"schema": SCHEMA, "errors": []}

    def error(self, section: str, item: str, exc: BaseException) -> None:
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        self.data["errors"].append({"section": section, "item": item, "error": f"{type(exc).__name__}: {exc}",
                                    "traceback_tail": "".join(tb)[-1500:]})
        print(f"gpu_check: {section}: {item} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


@contextmanager
def exact_float32(torch: Any) -> Iterator[None]:
    """TF32 off while references are computed (cuDNN allows it by default)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def padded_frames(spec: Any, height: int, width: int, frames: int) -> Any:
    """``frames`` moving-texture frames (T, 3, Hp, Wp) float32, padded at the bottom and right to
    the step's multiple by replication (as the runtime pads)."""
    import numpy as np

    from vdeblur.data.texture import moving_texture

    clip = moving_texture(frames, height, width, seed=0)
    hp, wp = spec.padded(height, width)
    return np.pad(clip, ((0, 0), (0, 0), (0, hp - height), (0, wp - width)), mode="edge")


def build_step(torch: Any, family: str, device: str, dtype: Any, **overrides: Any) -> tuple[Any, Any]:
    """(step module, StepSpec) of ``family`` with random weights (seed 0) in ``dtype`` on ``device``."""
    from vdeblur.models import create

    torch.manual_seed(0)
    model = create(family, **overrides).eval().to(device=device, dtype=dtype)
    step, spec = model.make_step()
    return step.eval(), spec


def capture_op_calls(torch: Any, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The plugin op calls one fp32 mtu2 step makes on a frame of the run's size (one entry per
    distinct call, with how often a step makes it)."""
    import vdeblur.plugins.torchop as torchop

    step, spec = build_step(torch, "mtu2", cfg["device"], torch.float32, **cfg["capture_overrides"])
    frame = torch.from_numpy(padded_frames(spec, cfg["height"], cfg["width"], 1)).to(cfg["device"])
    states = [torch.from_numpy(a).to(cfg["device"]) for a in spec.initial_arrays(1, *frame.shape[-2:])]
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    real = torchop.call

    def spy(op: Any, *inputs: Any, **attrs: Any) -> Any:
        key = (op.name, tuple(tuple(x.shape) for x in inputs), str(inputs[0].dtype), tuple(sorted(attrs.items())))
        entry = seen.setdefault(key, {"op": op.name, "shapes": [list(x.shape) for x in inputs],
                                      "attrs": op.bind_attrs(attrs), "calls_per_step": 0})
        entry["calls_per_step"] += 1
        return real(op, *inputs, **attrs)

    torchop.call = spy
    try:
        with torch.inference_mode():
            step(frame, *states)
    finally:
        torchop.call = real
    return list(seen.values())


def op_cases(specs: dict[str, Any], captured: list[dict[str, Any]], cfg: dict[str, Any]
             ) -> list[tuple[Any, str, list[list[int]], dict[str, Any]]]:
    """(spec, case label, input shapes, attributes): first every op at the model's shapes (the
    calls captured from mtu2; an op mtu2 does not call: at the shapes of its STAND_INS op, else its
    last example at a quarter of the frame size), timed too; then the op's own examples."""
    model, examples = [], []
    size = f"{cfg['width']}x{cfg['height']}"
    for spec in specs.values():
        mine = [(f"mtu2 {size}", c["shapes"], c["attrs"]) for c in captured if c["op"] == spec.name]
        if not mine and spec.name in STAND_INS:
            other, attrs = STAND_INS[spec.name]
            mine = [(f"mtu2 {size}, shapes of {other}", c["shapes"], spec.bind_attrs(attrs(c["attrs"])))
                    for c in captured if c["op"] == other]
        if not mine:
            quarter = [max(cfg["height"] // 4, 4), max(cfg["width"] // 4, 4)]
            shapes = [[{"H": quarter[0], "W": quarter[1]}.get(d, s) for d, s in zip(inp.layout, shape, strict=True)]
                      for inp, shape in zip(spec.inputs, spec.examples[-1].shapes, strict=True)]
            mine = [(f"last example at {quarter[1]}x{quarter[0]}", shapes, spec.bind_attrs(spec.examples[-1].attrs))]
        model += [(spec, *case) for case in mine]
        chosen = spec.examples if cfg["examples"] is None else spec.examples[:cfg["examples"]]
        examples += [(spec, f"example {i}", [list(s) for s in ex.shapes], spec.bind_attrs(ex.attrs))
                     for i, ex in enumerate(chosen)]
    return model + examples


def random_inputs(torch: Any, shapes: list[list[int]], seed: int) -> list[Any]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in shapes]


def section_kernels(torch: Any, report: Report, budget: Budget, cfg: dict[str, Any],
                    cases: list[tuple[Any, str, list[list[int]], dict[str, Any]]]) -> dict[str, Any]:
    """Every op's kernel against its reference on the device, float32 and float16 inputs."""
    from vdeblur.plugins.torchop import launch

    deadline = budget.section_deadline("kernels")
    dev = cfg["device"]
    results, skipped = [], []
    for n, (spec, label, shapes, attrs) in enumerate(cases):
        for dtype in ("float32", "float16"):
            item = f"{spec.name} {dtype} {label} {shapes}"
            if time.monotonic() > deadline:
                skipped.append({"item": item, "reason": "time budget of the section spent"})
                continue
            try:
                x = [t.to(dev, getattr(torch, dtype)) for t in random_inputs(torch, shapes, seed=n)]
                got = launch(spec, *x, **attrs)
                with exact_float32(torch):
                    want = spec.reference_fn()(*(t.float() for t in x), *attrs.values())
                tol = spec.tolerances.kernel if dtype == "float32" else spec.tolerances.half
                err = (got.double() - want.double()).abs()
                within = (err <= tol.atol + tol.rtol * want.double().abs()).double().mean().item()
                results.append({
                    "op": spec.name, "dtype": dtype, "case": label, "shapes": shapes, "attrs": attrs,
                    "output_dtype": str(got.dtype).removeprefix("torch."), "max_abs_err": err.max().item(),
                    "fraction_within": within, "tolerance": vars(tol), "ok": within >= tol.fraction,
                })
            except Exception as e:  # one failing op must not hide the others
                report.error("kernels", item, e)
    return {"results": results, "skipped": skipped, "ok": all(r["ok"] for r in results)}


def section_kernel_timing(torch: Any, report: Report, budget: Budget, cfg: dict[str, Any], timer: Timer,
                          cases: list[tuple[Any, str, list[list[int]], dict[str, Any]]]) -> dict[str, Any]:
    """Kernel vs the materialised reference at the model's shapes, interleaved, medians."""
    from vdeblur.plugins.torchop import launch

    deadline = budget.section_deadline("kernel_timing")
    dev = cfg["device"]
    results, skipped = [], []
    timed = [c for c in cases if not c[1].startswith("example ")]  # the model's shapes
    for spec, label, shapes, attrs in timed:
        for dtype in ("float32", "float16"):
            item = f"{spec.name} {dtype} {label} {shapes}"
            if time.monotonic() > deadline:
                skipped.append({"item": item, "reason": "time budget of the section spent"})
                continue
            try:
                x = [t.to(dev, getattr(torch, dtype)) for t in random_inputs(torch, shapes, seed=0)]
                kernel = functools.partial(launch, spec, *x, **attrs)
                reference = functools.partial(spec.reference_fn(), *x, *attrs.values())
                with torch.inference_mode():
                    t = timer.interleaved({"kernel": kernel, "reference": reference},
                                          cfg["repeats"], cfg["kernel_warmup"], deadline)
                results.append({
                    "op": spec.name, "dtype": dtype, "case": label, "shapes": shapes, "attrs": attrs,
                    "kernel_ms": t["kernel"]["median_ms"], "reference_ms": t["reference"]["median_ms"],
                    "kernel_min_ms": t["kernel"]["min_ms"], "reference_min_ms": t["reference"]["min_ms"],
                    "runs": t["kernel"]["runs"], "reference_over_kernel": t["reference"]["median_ms"]
                    / max(t["kernel"]["median_ms"], 1e-9),
                })
            except Exception as e:
                report.error("kernel_timing", item, e)
    return {"timer": timer.kind, "reference": "reference.py in PyTorch (materialises the cost volume)",
            "results": results, "skipped": skipped}


class StepRunner:
    """One way of running a step module: precision, eager or CUDA graph; keeps its own state."""

    def __init__(self, torch: Any, step: Any, spec: Any, dtype: Any, device: str, hp: int, wp: int,
                 graph: bool) -> None:
        self.torch, self.step, self.spec, self.dtype, self.device = torch, step, spec, dtype, device
        self.shape = (1, 3, hp, wp)
        self.flag = ([torch.zeros(1, dtype=torch.int32, device=device)] if spec.flush.flag_input else [])
        self.states = self.initial_states()
        self.graph = None
        if graph:
            self.capture()

    def initial_states(self) -> list[Any]:
        arrays = self.spec.initial_arrays(1, self.shape[2], self.shape[3])
        states = [self.torch.from_numpy(a).to(self.device) for a in arrays]
        return [s.to(self.dtype) if s.is_floating_point() else s for s in states]

    def capture(self) -> None:
        """Warm up on a side stream, then capture one step that also writes the new states into the
        state inputs (so every replay advances the stream)."""
        torch = self.torch
        self.frame = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                self.step(self.frame, *self.flag, *self.states)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            out, *new = self.step(self.frame, *self.flag, *self.states)
            for state, value in zip(self.states, new, strict=True):
                state.copy_(value)
        self.out = out
        for state, initial in zip(self.states, self.initial_states(), strict=True):
            state.copy_(initial)
        self.graph = graph

    def push(self, frame: Any) -> Any:
        if self.graph is not None:
            self.frame.copy_(frame)
            self.graph.replay()
            return self.out
        with self.torch.inference_mode():
            out, *self.states = self.step(frame.to(self.dtype), *self.flag, *self.states)
        return out


def push_into(runner: StepRunner, frame: Any, result: list[Any]) -> None:
    result.append(runner.push(frame))


def section_latency(torch: Any, report: Report, budget: Budget, cfg: dict[str, Any], timer: Timer) -> dict[str, Any]:
    """Per-frame latency of each family's step module: fp32/fp16, eager/CUDA graph, interleaved."""
    import numpy as np

    from vdeblur.metrics import psnr

    deadline = budget.section_deadline("latency")
    dev, h, w = cfg["device"], cfg["height"], cfg["width"]
    results, quality, skipped, notes = [], [], [], []
    for i, family in enumerate(FAMILIES):
        # Each family gets an equal part of what is left of the section.
        family_deadline = time.monotonic() + (deadline - time.monotonic()) / (len(FAMILIES) - i)
        if time.monotonic() > deadline:
            skipped.append({"item": family, "reason": "time budget of the section spent"})
            continue
        try:
            runners: dict[str, StepRunner] = {}
            spec = None
            for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
                step, spec = build_step(torch, family, dev, dtype)
                hp, wp = spec.padded(h, w)
                runners[f"{precision} eager"] = StepRunner(torch, step, spec, dtype, dev, hp, wp, graph=False)
                if not cfg["cuda_graphs"]:
                    continue
                try:
                    runners[f"{precision} cuda-graph"] = StepRunner(torch, step, spec, dtype, dev, hp, wp, graph=True)
                except Exception as e:  # capture can fail: eager is the fallback
                    skipped.append({"item": f"{family} {precision} cuda-graph",
                                    "reason": f"capture failed ({type(e).__name__}: {e}); eager only"})
            if not cfg["cuda_graphs"]:
                notes.append("CUDA graphs not tried" + (" (CPU run)" if dev == "cpu" else " (--no-cuda-graphs)"))
            assert spec is not None
            clip = padded_frames(spec, h, w, cfg["frames"])
            marks: dict[str, list[Any]] = {k: [] for k in runners}
            wall: dict[str, list[float]] = {k: [] for k in runners}
            outputs: dict[str, list[Any]] = {k: [] for k in runners}
            names = list(runners)
            for k in range(cfg["warmup"] + cfg["timed_frames"]):
                if k >= cfg["warmup"] and time.monotonic() > family_deadline:
                    skipped.append({"item": f"{family}: frames {k - cfg['warmup'] + 1}..{cfg['timed_frames']}",
                                    "reason": "time budget of the section spent"})
                    break
                host = clip[k % len(clip)][None]
                order = names[k % len(names):] + names[:k % len(names)]  # rotate who goes first
                for name in order:
                    t = time.perf_counter()
                    x = torch.from_numpy(host).to(dev)
                    result: list[Any] = []
                    mark = timer.measure(functools.partial(push_into, runners[name], x, result))
                    out = result[0].float()[..., :h, :w].cpu().numpy()
                    elapsed = (time.perf_counter() - t) * 1e3
                    if k >= cfg["warmup"]:
                        marks[name].append(mark)
                        wall[name].append(elapsed)
                        outputs[name].append(out)
            timer.sync()
            for name, runner in runners.items():
                step_ms = [timer.ms(m) for m in marks[name]]
                results.append({
                    "family": family, "mode": name, "precision": name.split()[0],
                    "cuda_graph": runner.graph is not None, "frame": [w, h], "padded": list(runner.shape[2:]),
                    "frames_timed": len(step_ms),
                    "step_ms_median": statistics.median(step_ms) if step_ms else None,
                    "step_ms_min": min(step_ms) if step_ms else None,
                    "wall_ms_median": statistics.median(wall[name]) if wall[name] else None,
                    "fps_step": 1e3 / statistics.median(step_ms) if step_ms else None,
                })
            mine = results[-len(runners):]
            base = next(r["step_ms_median"] for r in mine if r["mode"] == "fp32 eager")
            for r in mine:
                r["speedup_vs_fp32_eager"] = base / r["step_ms_median"] if base and r["step_ms_median"] else None
            ref = outputs.get("fp32 eager", [])
            for name in names:
                if name == "fp32 eager" or not outputs[name]:
                    continue
                pairs = list(zip(outputs[name], ref, strict=False))
                db = [psnr(a, b) for a, b in pairs]
                finite = [d for d in db if np.isfinite(d)]
                quality.append({
                    "family": family, "mode": name, "against": "fp32 eager", "frames": len(pairs),
                    "psnr_db_mean": statistics.mean(finite) if finite else float("inf"),
                    "psnr_db_min": min(finite) if finite else float("inf"),
                    "frames_identical": len(db) - len(finite),
                    "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in pairs) if pairs else None,
                })
        except Exception as e:
            report.error("latency", family, e)
    return {"results": results, "quality": quality, "skipped": skipped, "notes": sorted(set(notes)),
            "timer": timer.kind + " around the step; wall: upload + step + download",
            "plugin_ops": "Triton kernels" if dev == "cuda" else "references (CPU)"}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--budget-s", type=float, default=420.0, help="time budget of the sections (default 420 s)")
    ap.add_argument("--repeats", type=int, default=50, help="timed runs per kernel and reference (median)")
    ap.add_argument("--frames", type=int, default=12, help="distinct 720p frames cycled through")
    ap.add_argument("--timed-frames", type=int, default=40, help="timed frames per family and mode")
    ap.add_argument("--no-cuda-graphs", action="store_true", help="eager only")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU smoke run: every section on the CPU at tiny sizes, kernels in Triton's interpreter")
    return ap.parse_args(argv)


def import_stack(dry_run: bool) -> tuple[Any, Any]:
    """(torch, triton), or Unavailable. The dry run sets TRITON_INTERPRET=1 before they load."""
    if dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    try:
        import torch
    except ImportError as e:
        raise Unavailable(f"PyTorch is not importable ({e}). Expected PyTorch with CUDA") from None
    if not dry_run and not torch.cuda.is_available():
        raise Unavailable(f"no CUDA device is visible to PyTorch {torch.__version__} (built for CUDA "
                          f"{torch.version.cuda}). Expected an NVIDIA GPU; --dry-run runs the CPU smoke run")
    try:
        import triton
    except ImportError as e:
        raise Unavailable(f"Triton is not importable ({e}). Expected the triton package") from None
    return torch, triton


def run(args: argparse.Namespace) -> int:
    torch, triton = import_stack(args.dry_run)
    cfg = settings(args)
    if args.dry_run:
        torch.set_num_threads(1)
    from vdeblur.plugins import specs

    budget = Budget(args.budget_s)
    report = Report()
    data = report.data
    data.update({"mode": "dry-run" if args.dry_run else "gpu", "argv": sys.argv[1:],
                 "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "budget_s": args.budget_s, "settings": cfg, "machine": machine(torch, triton, cfg["device"])})
    timer = Timer(torch, cfg["device"])
    print(f"gpu_check: {data['mode']} on {data['machine']['gpu'] or 'the CPU'}, budget {args.budget_s:.0f} s")

    for name in ("kernels", "kernel_timing", "latency"):
        data[name] = {"results": [], "skipped": []}
    t = time.monotonic()
    try:
        captured = capture_op_calls(torch, cfg)
    except Exception as e:
        report.error("kernels", "capturing mtu2's op calls", e)
        captured = []
    data["op_calls_mtu2"] = captured
    cases = op_cases(specs(), captured, cfg)
    data["kernels"] = section_kernels(torch, report, budget, cfg, cases)
    data["kernels"]["elapsed_s"] = round(time.monotonic() - t, 2)
    print(f"gpu_check: kernels done in {data['kernels']['elapsed_s']} s")
    for name, fn in (("kernel_timing", lambda: section_kernel_timing(torch, report, budget, cfg, timer, cases)),
                     ("latency", lambda: section_latency(torch, report, budget, cfg, timer))):
        t = time.monotonic()
        data[name] = fn()
        data[name]["elapsed_s"] = round(time.monotonic() - t, 2)
        print(f"gpu_check: {name} done in {data[name]['elapsed_s']} s")

    data["imports"] = {
        "vdeblur": sorted(m for m in sys.modules if m == "vdeblur" or m.startswith("vdeblur.")),
        "absent_on_target_but_imported": sorted(m for m in sys.modules if m.split(".")[0] in ABSENT_ON_TARGET
                                                and sys.modules[m] is not None),
    }
    data["elapsed_s"] = round(budget.elapsed(), 2)
    data["ok"] = bool(data["kernels"].get("ok", False)) and not data["errors"]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    slug = "cpu-dry-run" if args.dry_run else gpu_slug(data["machine"]["gpu"])
    out = args.out_dir / f"gpu_check_{slug}.json"
    out.write_text(json.dumps(plain(data), indent=2, allow_nan=False) + "\n")
    summarise(data, out)
    return 0 if data["ok"] else 1


def plain(value: Any) -> Any:
    """``value`` as strict JSON: non-finite floats as "inf" / "-inf" / "nan", numpy scalars as
    numbers, tuples as lists, anything else unknown as its str."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if hasattr(value, "item"):
        return plain(value.item())
    return str(value)


def summarise(data: dict[str, Any], out: Path) -> None:
    for r in data["kernels"]["results"]:
        if not r["ok"]:
            print(f"gpu_check: kernels: {r['op']} {r['dtype']} {r['case']}: {r['fraction_within']:.4f} within "
                  f"{r['tolerance']} (max abs err {r['max_abs_err']:.3g}). Expected at least "
                  f"{r['tolerance']['fraction']}.", file=sys.stderr)
    for r in data["kernel_timing"]["results"]:
        print(f"  {r['op']:20s} {r['dtype']:8s} kernel {r['kernel_ms']:8.3f} ms  reference {r['reference_ms']:8.3f} ms"
              f"  x{r['reference_over_kernel']:.1f}")
    for r in data["latency"]["results"]:
        print(f"  {r['family']:16s} {r['mode']:16s} step {r['step_ms_median'] or float('nan'):8.2f} ms  "
              f"wall {r['wall_ms_median'] or float('nan'):8.2f} ms  ({r['frames_timed']} frames)")
    for q in data["latency"]["quality"]:
        print(f"  {q['family']:16s} {q['mode']:16s} vs fp32 eager: PSNR {q['psnr_db_mean']} dB, "
              f"max diff {q['max_abs_diff']}")
    skipped = sum(len(data[s]["skipped"]) for s in ("kernels", "kernel_timing", "latency"))
    print(f"gpu_check: {'ok' if data['ok'] else 'FAILED'}: {len(data['errors'])} errors, {skipped} skipped, "
          f"{data['elapsed_s']} s; wrote {out}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except Unavailable as e:
        print(f"gpu_check: {e}.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
