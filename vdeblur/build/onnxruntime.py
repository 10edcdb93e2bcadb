"""The ONNX Runtime build: the portable graph optimised offline, verified on frames, and session.json.

Writes ``engines/onnxruntime/<precision>/model.optimized.onnx`` and ``session.json`` (formats and
lookup: :mod:`vdeblur.contract.engines`).

The optimised model is saved at ``ORT_ENABLE_EXTENDED``: basic and extended fusions (FusedConv,
...) are portable across CPUs. ``ORT_ENABLE_ALL`` adds the NCHWc layout transform, whose block size
depends on the CPU's vector width; ORT itself warns that such a saved model "may contain hardware
specific optimizations" and should only be used where it was optimised. The runtime opens the saved
model with ``ORT_ENABLE_ALL`` (session.json ``session_options``), so the layout transform is redone
online for the local CPU. Fusions are applied to nodes of the execution providers of the optimising
session (which are those of session.json), and a model optimised with the CUDA provider keeps Memcpy
nodes that the CPU provider cannot load (onnxruntime issue 11348): ``optimized_for`` lists those
providers, and a runtime that uses others must open ``source`` instead. Intra-op spinning is off.

Verification compares what users see: a synthetic clip (textured scene under camera motion,
lookahead + 4 frames at the min size of ``--shapes``, seed 11) streams through the optimised model
and through the source graph without any graph optimisation, both opened as InferenceSessions with
the session options the runtime will use, driven by THE step loop
(:func:`vdeblur.contract.driver.drive_spec`); the output frames must meet the precision's bar
(``vdeblur.contract.precision.ENGINE_BARS``: PSNR and the fraction within half an 8-bit level). An
optimised model below its bar is not used: the build falls back to the source graph opened without
graph optimisation (session.json ``fallback`` says why, with the numbers), and the result and the
CLI say so. int8 on an x86 CPU without VNNI: a graph whose weights exceed the 7-bit range would
saturate ONNX Runtime's U8S8 kernels (``vdeblur.contract.device``), so its Q/DQ run in float
(``session.disable_quant_qdq``: right, not fast), and session.json records it with the CPU the
engine was built on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur import __version__
from vdeblur.build import cache
from vdeblur.build.profile import BuildPlan, first_line
from vdeblur.contract import manifest as manifest_mod
from vdeblur.contract.device import nvidia_device_present
from vdeblur.contract.engines import (
    ORT_MODEL,
    ORT_SESSION,
    SESSION_FORMAT,
    default_session_options,
    engine_dir,
    ort_session_options,
)
from vdeblur.errors import BackendError, ExportError

Progress = Callable[[str, float], None]

ORT_SAVE_LEVEL = "ORT_ENABLE_EXTENDED"  # the level of the saved model (portable, see above)
# ONNX Runtime (1.31) names the output of every GatherSliceToSplitFusion "split_output", once in the main graph
# and again in each Scan body, so the saved model repeats a name and does not load (AHFNet's two scans).
SAVE_DISABLED_OPTIMIZERS = ["GatherSliceToSplitFusion"]
VERIFY_EXTRA_FRAMES = 4  # verification clip: lookahead + this many frames
VERIFY_SEED = 11


def ort_providers(ort: Any) -> list[list[Any]]:
    """[[provider, options], ...] in preference order: CUDA when this onnxruntime has it and an
    NVIDIA device is present, then CPU."""
    providers: list[list[Any]] = []
    if "CUDAExecutionProvider" in ort.get_available_providers() and nvidia_device_present():
        providers.append(["CUDAExecutionProvider", {"device_id": "0"}])
    providers.append(["CPUExecutionProvider", {}])
    return providers


def plan_onnxruntime(directory: Path, precision: str, entry: Any, onnx_path: Path, sha: str,
                     shape_dict: dict[str, list[int]], profiles: dict[str, dict[str, list[int]]],
                     dynamic: list[str], plugins: list[str], notes: list[str], text: str | None) -> BuildPlan:
    import onnxruntime as ort

    if plugins:
        raise ExportError(f"{onnx_path}: has vdeblur plugin nodes ({', '.join(plugins)}), which ONNX Runtime cannot "
                          "run. Expected the portable lowering; re-export the artifact.")
    out = engine_dir(directory, "onnxruntime", precision)
    settings = {
        "optimized_model_level": ORT_SAVE_LEVEL,
        "session_options": default_session_options(),
        "providers": ort_providers(ort),
        "verify_size": shape_dict["min"],
    }
    if text:
        notes = [*notes, "onnxruntime: --shapes only sets the verification frame size (the min size); "
                         "ONNX Runtime takes any size at run time"]
    return BuildPlan(
        backend="onnxruntime", precision=precision, artifact=str(directory), onnx=str(onnx_path), onnx_sha256=sha,
        lowering=entry.lowering, shapes=shape_dict, profiles=profiles, dynamic_inputs=dynamic, plugins=plugins,
        flags={}, workspace_bytes=None, optimization_level=ORT_SAVE_LEVEL, engine_dir=str(out),
        outputs={"model": str(out / ORT_MODEL), "session": str(out / ORT_SESSION)},
        cache_key=None, cached=False, versions={"onnxruntime": ort.__version__, "vdeblur": __version__},
        gpu=None, settings=settings, notes=notes,
    )


def build_onnxruntime(p: BuildPlan, report: Progress) -> dict[str, Any]:
    import onnxruntime as ort

    from vdeblur.contract.device import cpu_info
    from vdeblur.contract.precision import DISABLE_QDQ, ENGINE_BARS, frame_metrics, int8_settings
    from vdeblur.metrics import json_safe

    settings = p.settings
    out = Path(p.engine_dir)
    providers = [(name, opts) for name, opts in settings["providers"]]
    session_options = json.loads(json.dumps(settings["session_options"]))
    int8 = int8_settings(p.onnx)
    notes = list(p.notes)
    if int8 and int8["disable_quant_qdq"]:
        session_options["config_entries"][DISABLE_QDQ] = "1"
        notes.append(int8["note"])
    timings: dict[str, float] = {}
    tmp = cache.temp_file(out, ".model.optimized.", ".onnx")
    ok = False
    fallback: dict[str, Any] | None = None
    try:
        report("optimising with ONNX Runtime", 0.1)
        t = time.perf_counter()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_SAVE_LEVEL)
        opts.optimized_model_filepath = str(tmp)
        opts.log_severity_level = 3
        for key, value in session_options["config_entries"].items():
            opts.add_session_config_entry(key, value)
        try:
            optimiser = ort.InferenceSession(p.onnx, opts, providers=providers,
                                             disabled_optimizers=SAVE_DISABLED_OPTIMIZERS)
        except Exception as e:  # onnxruntime raises its own exception types
            raise BackendError(f"{p.onnx}: ONNX Runtime cannot optimise it ({first_line(e)}). "
                               "Expected a portable-lowering graph; re-export the artifact.") from e
        used = optimiser.get_providers()
        del optimiser
        timings["optimize"] = round(time.perf_counter() - t, 3)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise BackendError(f"{p.onnx}: ONNX Runtime wrote no optimised model. "
                               "Expected a model under 2 GB (larger ones need external initializers).")
        chosen = [[name, dict(o)] for name, o in providers if name in used]
        if len(chosen) < len(providers):
            dropped = [name for name, _ in providers if name not in used]
            notes.append(f"execution providers {', '.join(dropped)} could not be created here and were left out")

        report("verifying the optimised model", 0.5)
        t = time.perf_counter()
        bar = ENGINE_BARS[p.precision]
        got, want = verify_frames(p, tmp, chosen, session_options)
        metrics = frame_metrics(got, want)
        short = bar.check(metrics["psnr_db"], metrics["within_half_level"])
        h, w = p.shapes["min"]
        verification = {"against": f"{os.path.relpath(p.onnx, p.artifact)} without graph optimisation",
                        "clip": f"synthetic moving texture, {len(want)} output frames at {w}x{h}",
                        "psnr_db": json_safe(metrics["psnr_db"]),
                        "within_half_level": metrics["within_half_level"], "bar": bar.to_dict(),
                        "passed": short is None}
        timings["verify"] = round(time.perf_counter() - t, 3)

        report("writing", 0.9)
        model_path, session_path = out / ORT_MODEL, out / ORT_SESSION
        if short is None:
            model_rel, model_file = ORT_MODEL, tmp
            run_options = session_options
        else:
            # Fall back to the source graph as it is: the reference of the verification itself.
            fallback = {"reason": f"the ONNX Runtime-optimised model differs from the source graph ({short})",
                        "uses": "the source graph without graph optimisation (slower)"}
            notes.append(f"fallback: {fallback['reason']}; {fallback['uses']}")
            model_rel, model_file = os.path.relpath(p.onnx, out), Path(p.onnx)
            run_options = {**session_options, "graph_optimization_level": "ORT_DISABLE_ALL"}
        session = {
            "format_version": SESSION_FORMAT,
            "backend": "onnxruntime",
            "precision": p.precision,
            "model": model_rel,
            "model_sha256": manifest_mod.sha256_file(model_file),
            "source": {"file": os.path.relpath(p.onnx, p.artifact), "sha256": p.onnx_sha256, "lowering": p.lowering},
            "optimized_with": {"graph_optimization_level": ORT_SAVE_LEVEL, "onnxruntime": ort.__version__},
            "optimized_for": [name for name, _ in chosen],
            "session_options": run_options,
            "providers": chosen,
            "verification": verification,
            "fallback": fallback,
            "int8": int8,
            "cpu": cpu_info(),
            "vdeblur": __version__,
            "created": cache.now(),
        }
        session_path.unlink(missing_ok=True)  # never a session.json beside another model
        model_path.unlink(missing_ok=True)
        if fallback is None:
            cache.install(tmp, model_path)
        cache.write_session(session_path, session)
        ok = True
    finally:
        tmp.unlink(missing_ok=True)
        if not ok:
            cache.prune_empty(out, Path(p.artifact))
    return {
        "backend": "onnxruntime",
        "precision": p.precision,
        "artifact": p.artifact,
        "engine": str(model_path) if fallback is None else p.onnx,
        "session": str(session_path),
        "cache_hit": False,
        "providers": ",".join(name for name, _ in chosen),
        "optimization_level": ORT_SAVE_LEVEL if fallback is None else "ORT_DISABLE_ALL",
        "verified": verification["passed"],
        "verification": verification,
        "fallback": fallback,
        "int8": int8,
        "cpu": cpu_info(),
        "timings_s": timings,
        "notes": notes,
    }


def verify_frames(p: BuildPlan, optimised: Path, providers: list[list[Any]],
                  session_options: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Output frames (T, 3, H, W) float32 of the optimised model (opened as session.json will say)
    and of the source graph without graph optimisation, for the same synthetic clip at the min
    size, streamed as every runtime streams (:func:`vdeblur.contract.driver.drive_spec`)."""
    import onnxruntime as ort

    from vdeblur.contract.driver import drive_spec, runner
    from vdeblur.contract.interface import StepSpec
    from vdeblur.data.texture import moving_texture

    spec = manifest_mod.read(p.artifact).spec()
    h, w = p.shapes["min"]
    warmup = spec.lookahead if isinstance(spec, StepSpec) else 0  # a clip graph: one clip of these frames
    frames = moving_texture(warmup + VERIFY_EXTRA_FRAMES, h, w, seed=VERIFY_SEED)[None]  # (1, T, 3, H, W)
    reference_options = {**session_options, "graph_optimization_level": "ORT_DISABLE_ALL"}
    outputs = []
    for graph, options in ((optimised, session_options), (Path(p.onnx), reference_options)):
        try:
            session = ort.InferenceSession(str(graph), ort_session_options(ort, options),
                                           providers=[(name, dict(o)) for name, o in providers])
        except Exception as e:  # onnxruntime raises its own exception types
            raise BackendError(f"{graph}: the model does not load in ONNX Runtime for verification "
                               f"({first_line(e)}). Expected it to; re-export the artifact.") from e
        outputs.append(drive_spec(runner(session, spec), spec, frames)[0])
        del session
    return outputs[0], outputs[1]
