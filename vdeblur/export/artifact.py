"""checkpoint -> artifact directory: the `vdeblur export` pipeline.

1. build the model (preset or family + overrides) and load the checkpoint (or keep random weights,
   flagged in the manifest and the report: useful for latency work only);
2. turn it into a step graph (export/stepgraph.py) and export it to ONNX with dynamic H and W in the
   requested plugin lowering; the portable graph is always written (ONNX Runtime runs it, and it is
   what validation runs), the ``trt`` graph in addition when asked for;
3. validate: stream a short clip at the requested size through the portable graph on ONNX Runtime and
   compare with ``vdeblur.models.run_clip`` (PSNR, max error, fraction within tolerance); a failed
   validation fails the export;
4. precision variants (export/precision.py), each with its PSNR against the fp32 reference;
5. write manifest.json and report.json.

Everything is written into a temporary directory beside ``out`` and renamed at the end, so an
error leaves nothing behind, and an existing ``out`` is never mixed with a new export (it is
refused, or replaced as a whole with ``overwrite=True``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.contract.files import publish_dir, sha256_file, write_json
from vdeblur.contract.interface import ClipSpec
from vdeblur.contract.manifest import GraphEntry, Manifest
from vdeblur.contract.precision import PRECISIONS
from vdeblur.errors import ExportError, UsageError

Progress = Callable[[str, float], None]

MIN_SIZE, MAX_SIZE = 16, 4096
DEFAULT_MIN_PSNR_DB = 40.0


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    from vdeblur import __version__

    return {"vdeblur": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_SIZE <= value <= MAX_SIZE:
        raise UsageError(
            f"export: --{name} {value!r} is out of range. Expected an integer in [{MIN_SIZE}, {MAX_SIZE}]."
        )
    return value


def _check_precisions(precisions: list[str]) -> list[str]:
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise UsageError(
            f"export: precision {', '.join(unknown)} is unknown. Expected some of {', '.join(PRECISIONS)}."
        )
    return ["fp32", *[p for p in dict.fromkeys(precisions) if p != "fp32"]]


def _staging_dir(out: Path, overwrite: bool) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UsageError(
            f"{out}: exists and is not empty. Choose a new --out directory, or pass --overwrite to replace it "
            "(an export never mixes its files with an existing directory)."
        )
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as e:
        raise UsageError(f"{out}: cannot be written ({e.strerror or e}). Expected a writable --out location.") from e


def export_artifact(
    model: str,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    plugins: str = "portable",
    height: int = 128,
    width: int = 128,
    precisions: list[str] | None = None,
    calibration: np.ndarray | None = None,
    frames: int = 6,
    min_psnr_db: float = DEFAULT_MIN_PSNR_DB,
    overwrite: bool = False,
    int8_weights: str = "reduced",
    window: int | None = None,
    overlap: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Export ``model`` (preset or family) to an artifact directory ``out``; returns the report.

    height, width: the frame size of validation; the graph itself accepts any size (dynamic H and W,
    padded to the model's multiple by the runtime).
    calibration: frames (T, 3, H, W) float32 in [0, 1] for int8/fp8 (at most 16 are used); the
    applications read them from a video or an image folder with
    :func:`vdeblur.runtime.video.load_calibration`.
    int8_weights: "reduced" (7-bit weights: right on every CPU, the default) or "full" (8-bit: for
    VNNI x86 and ARM64 CPUs), see vdeblur.export.precision.
    window, overlap: clip models only: the windows the runtime runs by default (the manifest's;
    default: the model's). Their graph takes any number of frames; validation runs the whole
    validation clip as one clip against run_clip.

    A precision variant that fails (its transform, or its bar against run_clip) is not written; the
    report's ``validation.skipped`` lists it with the reason, and the export goes on. Only the fp32
    graph failing its --min-psnr fails the export.
    """
    step_progress = progress or (lambda stage, fraction: None)
    out = Path(out)
    if plugins not in ("portable", "trt"):
        raise UsageError(f"export: --plugins {plugins!r} is unknown. Expected 'trt' or 'portable'.")
    _check_size("height", height)
    _check_size("width", width)
    if frames < 1:
        raise UsageError(f"export: --frames {frames} is invalid. Expected at least 1 validation frame.")
    wanted = _check_precisions(precisions or ["fp32"])
    from vdeblur.export.precision import INT8_WEIGHTS

    if int8_weights not in INT8_WEIGHTS:
        raise UsageError(f"export: --int8-weights {int8_weights!r} is unknown. Expected one of "
                         f"{', '.join(INT8_WEIGHTS)}.")
    if any(p in ("int8", "fp8") for p in wanted) and calibration is None:
        raise UsageError("export: int8/fp8 need calibration frames. Pass --calibration VIDEO_OR_FOLDER.")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UsageError(f"{checkpoint}: no such checkpoint file. Expected a .pth/.pt/.safetensors file.")
    if calibration is not None:
        calibration = _check_calibration_frames(calibration)

    import torch

    from vdeblur.models import create, load_checkpoint, run_clip
    from vdeblur.models.registry import resolve

    family, preset, config = resolve(model, **(overrides or {}))
    step_progress("building the model", 0.0)
    torch.manual_seed(0)  # random weights (no checkpoint) are reproducible
    net = create(model, **(overrides or {}))
    load_report = None
    ckpt_info = None
    if checkpoint is not None:
        load_report = load_checkpoint(net, checkpoint)
        ckpt_info = {"path": str(Path(checkpoint).resolve()), "sha256": sha256_file(checkpoint)}

    from vdeblur.export.onnx import (
        export_step_graph,
        ort_session,
        plugins_used,
        stream_onnx,
        validation_clip,
    )
    from vdeblur.export.stepgraph import graph_module
    from vdeblur.metrics import compare, json_safe

    staging = _staging_dir(out, overwrite)
    try:
        started = time.perf_counter()
        step, spec = graph_module(net, window, overlap)
        # Clip graphs are validated on the whole validation clip as one clip (= run_clip).
        vspec = spec.windowed(max(spec.window, frames), 0) if isinstance(spec, ClipSpec) else spec
        portable_file = "model.onnx" if plugins == "portable" else "model.portable.onnx"
        step_progress("exporting the portable graph", 0.1)
        export_step_graph(step, spec, staging / portable_file, "portable", height, width)
        graphs = [GraphEntry(portable_file, "fp32", "portable", sha256_file(staging / portable_file))]
        used: list[dict[str, str]] = []
        if plugins == "trt":
            step_progress("exporting the TensorRT-plugin graph", 0.3)
            trt_model = export_step_graph(step, spec, staging / "model.onnx", "trt", height, width)
            used = plugins_used(trt_model)
            graphs.append(GraphEntry("model.onnx", "fp32", "trt", sha256_file(staging / "model.onnx")))

        step_progress("validating on ONNX Runtime", 0.5)
        clip = validation_clip(frames, height, width)
        reference = run_clip(net, clip).numpy()
        session = ort_session(staging / portable_file)
        fp32 = compare(stream_onnx(session, vspec, clip.numpy()), reference)
        graphs[0].psnr_db = json_safe(fp32["psnr_db"])  # type: ignore[assignment]
        validation: dict[str, Any] = {
            "frames": frames, "height": height, "width": width, "source": "synthetic moving texture",
            "reference": "vdeblur.models.run_clip (PyTorch, fp32)", "min_psnr_db": min_psnr_db,
            "results": {"fp32": {k: json_safe(v) for k, v in fp32.items()}},
        }
        if not fp32["psnr_db"] >= min_psnr_db:
            raise ExportError(
                f"{model}: validation failed: the exported fp32 graph reaches {fp32['psnr_db']:.2f} dB against "
                f"run_clip, below the {min_psnr_db:.1f} dB required. Nothing was written."
            )

        calib = calibration[:16] if calibration is not None and len(wanted) > 1 else None
        for i, precision in enumerate(wanted[1:]):
            step_progress(f"{precision} variant", 0.6 + 0.35 * i / max(1, len(wanted) - 1))
            graphs += _precision_variants(staging, graphs, precision, vspec, calib, clip, reference, validation,
                                          int8_weights)

        manifest = Manifest(
            model={"family": family, "preset": preset, "config": config, "checkpoint": ckpt_info,
                   "random_weights": checkpoint is None},
            kind=spec.kind, interface=spec.to_dict(), graphs=graphs, plugins=used,
            clip={"window": spec.window, "overlap": spec.overlap, "latency": spec.latency}
            if isinstance(spec, ClipSpec) else None,
            opset=_opset(staging / portable_file), versions=_versions(),
        )
        manifest.write(staging)
        report = {
            "artifact": str(out),
            "model": manifest.model,
            "random_weights": checkpoint is None,
            "checkpoint": load_report.to_dict() if load_report is not None else None,
            "plugins": plugins,
            "graphs": [g.__dict__ for g in graphs],
            "validation": validation,
            "skipped": validation.get("skipped", []),
            "seconds": round(time.perf_counter() - started, 2),
        }
        write_json(staging / "report.json", report)
        publish_dir(staging, out)
        step_progress("done", 1.0)
        return report
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_calibration_frames(frames: Any) -> np.ndarray:
    """Calibration frames as float32 (T, 3, H, W) in [0, 1], or a UsageError saying what is wrong."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[1] != 3 or arr.shape[0] < 1 or min(arr.shape[2:]) < 2:
        raise UsageError(f"export: calibration frames have shape {arr.shape}. Expected (T, 3, H, W) RGB, T >= 1.")
    if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise UsageError("export: calibration frames must be finite floats in [0, 1]. Read them with "
                         "vdeblur.runtime.video.load_calibration.")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _precision_variants(
    staging: Path, graphs: list[GraphEntry], precision: str, spec: Any, calib: Any, clip: Any,
    reference: Any, validation: dict[str, Any], int8_weights: str = "reduced",
) -> list[GraphEntry]:
    """Write the ``precision`` variant of each fp32 graph (the portable one first); the portable one
    is streamed on ONNX Runtime and compared with the reference frames. A variant below its bar
    (vdeblur.contract.precision.VARIANT_BARS), or whose transform failed, is reported in
    ``validation`` and left out (its files removed); the export goes on with the other precisions."""
    from vdeblur.contract.precision import DISABLE_QDQ, VARIANT_BARS, frame_metrics, int8_settings
    from vdeblur.errors import ExportError
    from vdeblur.export import precision as precision_mod
    from vdeblur.export.onnx import ort_session, stream_onnx
    from vdeblur.metrics import compare, json_safe

    entries: list[GraphEntry] = []
    bar = VARIANT_BARS[precision]
    fp32_graphs = sorted((g for g in graphs if g.precision == "fp32"), key=lambda g: g.lowering != "portable")
    for fp32 in fp32_graphs:
        stem = Path(fp32.file).name[: -len(".onnx")]
        dst = staging / f"{stem}.{precision}.onnx"
        if fp32.lowering == "trt" and precision in ("int8", "fp8"):
            # Calibrating the trt graph needs a runtime that executes its plugin nodes (TensorRT).
            validation.setdefault("notes", []).append(
                f"{precision}: no trt-lowered variant (calibration needs TensorRT to run the plugin nodes); "
                f"the portable {precision} graph is in the artifact."
            )
            continue
        quantizer = "modelopt" if precision == "fp8" else "onnxruntime"  # fp8 Q/DQ come from NVIDIA ModelOpt
        try:
            result = precision_mod.convert(staging / fp32.file, dst, precision, spec, calib, quantizer=quantizer,
                                           int8_weights=int8_weights)
        except ExportError as e:  # the transform failed: report it, keep the rest of the export
            _drop_variant(staging, entries, dst, precision, validation, f"the transform failed: {e}")
            return []
        entry = GraphEntry(dst.name, precision, fp32.lowering, sha256_file(dst), kept_fp32=list(result.kept_fp32),
                           quantization=result.quantization)
        if fp32.lowering == "portable":
            info: dict[str, Any] = {"method": result.method, "runs_on_ort_cpu": result.runs_on_ort_cpu,
                                    "notes": result.notes, "bar": bar.to_dict()}
            if result.quantization:
                info["quantization"] = result.quantization
            validation["results"][precision] = info
            if result.runs_on_ort_cpu:
                # Run it as the runtime will on this CPU (full-range int8 weights without VNNI: float Q/DQ),
                # so that the bar measures the variant, not this CPU's integer kernels.
                int8 = int8_settings(dst) if precision == "int8" else None
                config = {DISABLE_QDQ: "1"} if int8 and int8["disable_quant_qdq"] else None
                if config:
                    info["notes"] += f"; validated as float Q/DQ ({int8['note']})"
                got = stream_onnx(ort_session(dst, config=config), spec, clip.numpy())
                metrics = compare(got, reference)
                frames = frame_metrics(got, reference)
                entry.psnr_db = json_safe(metrics["psnr_db"])  # type: ignore[assignment]
                info.update({k: json_safe(v) for k, v in metrics.items()})
                info["within_half_level"] = frames["within_half_level"]
                short = bar.check(frames["psnr_db"], frames["within_half_level"])
                info["passed"] = short is None
                if short:
                    _drop_variant(staging, entries, dst, precision, validation,
                                  f"below its bar against run_clip ({short})")
                    return []
            else:
                info["passed"] = None  # not verifiable on this machine: said in the notes
        entries.append(entry)
    return entries


def _drop_variant(staging: Path, entries: list[GraphEntry], dst: Path, precision: str,
                  validation: dict[str, Any], reason: str) -> None:
    """Remove a failed variant's files and record why it is not in the artifact."""
    dst.unlink(missing_ok=True)
    for e in entries:
        (staging / e.file).unlink(missing_ok=True)
    entries.clear()
    info = validation["results"].setdefault(precision, {})
    info["passed"] = False
    info["skipped"] = reason
    validation.setdefault("skipped", []).append({"precision": precision, "reason": reason})
