"""`vdeblur <command>`: a thin layer that parses, calls the library and prints.

Every command takes ``--json`` (print exactly one JSON object on stdout) and ``--debug`` (show
tracebacks). Errors exit non-zero with a one-paragraph message on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from vdeblur import __version__
from vdeblur.errors import UsageError, VdeblurError


def _cmd_models(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from vdeblur.models.registry import families

    fams = families()
    presets = [{"name": p.name, "family": f.name, "kind": f.kind, "config": p.config, "summary": p.summary}
               for f in fams for p in f.presets]
    width = max(len(p["name"]) for p in presets)
    lines = [f"{'preset':<{width}}  {'family':<8}  {'kind':<5}  summary"]
    for p in presets:
        lines.append(f"{p['name']:<{width}}  {p['family']:<8}  {p['kind']:<5}  {p['summary']}")
    lines.append("")
    lines.append("families: " + ", ".join(f.name for f in fams))
    return {"presets": presets, "families": [{"name": f.name, "kind": f.kind, "defaults": f.defaults}
                                             for f in fams]}, "\n".join(lines)


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` options; values are JSON (``[1,2]``, ``8``, ``true``) or else plain strings."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: malformed. Expected key=value, e.g. --set skip_corr_index=[1,2].")
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw
    return overrides


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


class _ProgressBar:
    """Progress on stderr (never under --json): a one-line bar on a terminal; elsewhere (a log, CI)
    a plain line at each tenth of the work, so long runs are not silent."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.lines = enabled and not self.enabled
        self._tenth = -1

    def __call__(self, stage: str, fraction: float) -> None:
        if self.lines:
            tenth = int(10 * fraction) if fraction >= 0 else self._tenth
            if tenth > self._tenth:
                self._tenth = tenth
                sys.stderr.write(f"progress: {100 * max(0.0, fraction):3.0f}% {stage}\n")
                sys.stderr.flush()
            return
        if not self.enabled:
            return
        if fraction < 0:  # unknown total: show the stage (e.g. a frame count and fps)
            sys.stderr.write(f"\r{stage:<60}")
            sys.stderr.flush()
            return
        width = 30
        done = int(round(width * max(0.0, min(1.0, fraction))))
        sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {100 * fraction:3.0f}% {stage:<40}")
        if fraction >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _warn(text: str) -> None:
    """A warning on stderr (also under --json, whose stdout holds only the JSON object)."""
    print(f"warning: {text}", file=sys.stderr)


def _graph_line(name: str, graph: dict[str, Any] | None) -> str:
    """`onnxruntime ran engines/onnxruntime/int8/model.optimized.onnx (built, verified)`."""
    if not graph:
        return f"{name}: ran an unknown graph"
    what = graph.get("file") or "the model code (PyTorch)"
    tags = []
    if graph.get("built"):
        tags.append("built engine" + (", verified" if graph.get("verified") else ""))
    if graph.get("fallback"):
        tags.append(f"build fell back: {graph['fallback']}")
    line = f"{name} ran {what}" + (f" ({'; '.join(tags)})" if tags else "")
    notes = [n for n in graph.get("notes", []) if n]
    return line + "".join(f"\n    note: {n}" for n in notes)


def _cmd_export(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from vdeblur.export.artifact import export_artifact

    precisions = _csv(args.precision) or ["fp32"]
    calibration = None
    if args.calibration is not None and any(p != "fp32" for p in precisions):
        from vdeblur.runtime.video import load_calibration

        calibration = load_calibration(args.calibration, args.height, args.width)  # checked before the export
    report = export_artifact(
        args.model, args.out, checkpoint=args.checkpoint, overrides=parse_sets(args.set), plugins=args.plugins,
        height=args.height, width=args.width, precisions=precisions,
        calibration=calibration, frames=args.frames, min_psnr_db=args.min_psnr, overwrite=args.overwrite,
        int8_weights=args.int8_weights, window=args.window, overlap=args.overlap, progress=_ProgressBar(not args.json),
    )
    for skipped in report.get("skipped", []):
        _warn(f"{skipped['precision']} variant not written: {skipped['reason']}. The other precisions were exported.")
    lines = [f"exported {args.model} to {report['artifact']} in {report['seconds']} s"]
    if report["random_weights"]:
        lines.append("WARNING: no --checkpoint: the weights are random (useful for latency work only).")
    elif report["checkpoint"]:
        ck = report["checkpoint"]
        lines.append(f"checkpoint: {ck.get('loaded', '?')} tensors loaded"
                     + (f", dropped on purpose: {len(ck['dropped'])}" if ck.get("dropped") else ""))
    for g in report["graphs"]:
        psnr = g.get("psnr_db")
        quality = "" if psnr is None else f"  PSNR vs run_clip {psnr if isinstance(psnr, str) else f'{psnr:.2f}'} dB"
        lines.append(f"  {g['file']:<28} {g['precision']:<5} {g['lowering']:<8}{quality}")
    return report, "\n".join(lines)


def _cmd_build(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from vdeblur.build import build

    result = build(args.artifact, args.backend, precision=args.precision, shapes=args.shapes,
                   dry_run=args.dry_run, progress=_ProgressBar(not args.json), lowering=args.lowering,
                   compute_capability=args.compute_capability)
    if result.get("fallback"):
        _warn(f"{args.precision}: {result['fallback']['reason']}; the engine uses {result['fallback']['uses']}.")
    if (result.get("int8") or {}).get("note"):
        _warn(result["int8"]["note"])
    lines = [f"{k}: {v}" for k, v in result.items() if not isinstance(v, (dict, list)) and v is not None]
    verification = result.get("verification")
    if verification:
        psnr = verification["psnr_db"]
        psnr_s = psnr if isinstance(psnr, str) else f"{psnr:.2f}"
        within = 100 * verification["within_half_level"]
        lines.append(f"verification vs {verification['against']}: PSNR {psnr_s} dB, {within:.3f}% within half "
                     "an 8-bit level "
                     f"({'passed' if verification['passed'] else 'failed'}; {verification['clip']})")
    plan = result.get("plan")
    if plan:
        lines += [f"onnx: {plan['onnx']} ({plan['lowering']}), plugins: {', '.join(plan['plugins']) or 'none'}",
                  "optimisation profile (min / opt / max):"]
        for name, prof in plan["profiles"].items():
            lines.append(f"  {name:<12} {prof['min']} / {prof['opt']} / {prof['max']}")
        lines += [f"note: {n}" for n in plan.get("notes", [])]
    return result, "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from vdeblur.runtime.run import run_video

    bar = _ProgressBar(not args.json)
    result = run_video(args.artifact, args.input, args.output, backend=args.backend, precision=args.precision,
                       device=args.device, progress=bar, start=args.start, frames=args.frames, fps=args.fps,
                       crf=args.crf, codec=args.codec, window=args.window, overlap=args.overlap)
    if bar.enabled:
        sys.stderr.write("\n")
    for note in result.get("notes", []):
        _warn(f"{result['output']}: {note}")
    lat = result["latency_ms"]
    text = (f"{result['frames']} frames -> {result['output']} in {result['seconds']:.2f} s ({result['fps']:.2f} fps, "
            f"{result['backend']} {result['precision']}); per-frame latency p50 {lat['p50']:.1f} ms, "
            f"p99 {lat['p99']:.1f} ms")
    if result.get("kind") == "clip":
        text += (f"\nclip windows of {result['window']} frames, overlap {result['overlap']}: an output is final "
                 f"{result['latency_frames']} frames after its input at most")
    text += "\n" + _graph_line(result["backend"], result.get("graph"))
    return result, text


def _cmd_compare(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from vdeblur.runtime.run import compare_backends

    result = compare_backends(args.artifact, _csv(args.backends), precision=args.precision, frames=args.frames,
                              height=args.height, width=args.width, source=args.input, device=args.device,
                              window=args.window, overlap=args.overlap)
    lines = [f"{result['frames']} frames {result['size'][1]}x{result['size'][0]}, precision {result['precision']}"]
    for p in result["pairs"]:
        psnr = p["psnr_db"] if isinstance(p["psnr_db"], str) else f"{p['psnr_db']:.2f}"
        lines.append(f"  {p['a']} vs {p['b']}: PSNR {psnr} dB, max error {p['max_abs_err']:.3g}, "
                     f"{100 * p['fraction_within_tol']:.3f}% within {p['tol']:.4f}")
    for name, reason in result["skipped"].items():
        lines.append(f"  skipped {name}: {reason}")
    lines += ["  " + _graph_line(name, graph) for name, graph in result.get("graphs", {}).items()]
    return result, "\n".join(lines)


def _cmd_bench(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from vdeblur.bench import bench, format_table

    payload = bench(args.target, _csv(args.backends), _csv(args.precisions), height=args.height, width=args.width,
                    frames=args.frames, warmup=args.warmup, device=args.device, report=args.report,
                    progress=_ProgressBar(not args.json), threads=args.threads)
    text = format_table(payload)
    if args.report:
        text += f"\nreport written to {args.report}/ (results.md, results.json, latency_vs_psnr.png)"
    return payload, text


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="artifact directory, or a model (preset/family) exported with random weights")
    p.add_argument("--backends", default="torch,onnxruntime",
                   help="comma list of torch, onnxruntime, tensorrt, tensorrt-rtx (default torch,onnxruntime)")
    p.add_argument("--precisions", default="fp32", help="comma list of fp32,fp16,bf16,int8,fp8 (default fp32)")
    p.add_argument("--height", type=int, default=360, help="frame height (default 360)")
    p.add_argument("--width", type=int, default=640, help="frame width (default 640)")
    p.add_argument("--frames", type=int, default=20, help="timed frames per combination (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames first (default 3)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--threads", type=int, help="intra-op threads of ONNX Runtime and PyTorch (default: physical cores)")
    p.add_argument("--report", help="directory for a Markdown table and a latency-vs-PSNR plot")


def _cmd_demo(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from vdeblur.demo import run_demo

    result = run_demo(args.out, progress=_ProgressBar(not args.json), precisions=_csv(args.precisions) or None)
    clip = result["clip"]
    lines = [f"vdeblur demo: {result['model']} on a held-out {clip['width']}x{clip['height']} clip of "
             f"{clip['frames']} frames ({result['backend']}, {result['seconds']} s)", "",
             f"{'precision':<10} {'PSNR blurry':>12} {'PSNR deblurred':>15} {'latency p50':>12} {'fps':>8}"]
    for r in result["precisions"]:
        if r.get("skipped"):
            lines.append(f"{r['precision']:<10} skipped: {r['skipped']}")
            _warn(f"demo: {r['precision']} skipped: {r['skipped']}")
            continue
        lines.append(f"{r['precision']:<10} {r['psnr_blurry_db']:>9.2f} dB {r['psnr_deblurred_db']:>12.2f} dB "
                     f"{r['latency_ms_p50']:>9.1f} ms {r['fps']:>8.2f}")
        for note in r.get("notes", []):
            lines.append(f"{'':<10} note: {note}")
            _warn(f"demo: {r['precision']}: {note}")
    lines += ["", f"written to {result['out']}/: " + ", ".join(result["files"])]
    return result, "\n".join(lines)


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="vdeblur-demo", help="output directory (default ./vdeblur-demo)")
    p.add_argument("--precisions", default="fp32,int8",
                   help="comma list of fp32,fp16,bf16,int8 to export, build and stream (default fp32,int8)")


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", help="artifact directory written by `vdeblur export`")
    p.add_argument("input", help="video file (mp4/mkv/avi/mov) or folder of images")
    p.add_argument("output", help="video file (mp4/mov/mkv/avi: H.264, webm: VP9; same frame rate) or a folder "
                                  "for PNG frames, written with a trailing '/'")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt", "tensorrt-rtx"), default="onnxruntime")
    p.add_argument("--precision", default="fp32", help="graph of the artifact to run (default fp32)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--start", type=float, default=0.0, help="seconds of the input to skip (default 0)")
    p.add_argument("--frames", type=int, help="process at most this many frames (default: all)")
    p.add_argument("--fps", type=float, help="frame rate of an image-folder input (default 30)")
    p.add_argument("--codec", choices=("h264", "vp9"), help="video codec (default: h264, vp9 for webm)")
    p.add_argument("--crf", type=int, help="encoder quality, lower is better (default: 18 for h264, 31 for vp9)")
    _add_windows(p, "run")


def _add_windows(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--window", type=int, help=f"clip models (DSTNet, AHFNet): frames per window to {what} "
                                              "(default: the artifact's; 30 with --overlap 0 is DSTNet's official "
                                              "test split)")
    p.add_argument("--overlap", type=int, help="clip models: frames shared by consecutive windows; each window keeps "
                                               "its centre (default: the artifact's)")


def _add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", help="artifact directory written by `vdeblur export`")
    p.add_argument("--backends", default="torch,onnxruntime",
                   help="comma list of torch, onnxruntime, tensorrt, tensorrt-rtx (default torch,onnxruntime)")
    p.add_argument("--precision", default="fp32", help="graph of the artifact for non-torch backends")
    p.add_argument("--frames", type=int, default=8, help="number of frames (default 8)")
    p.add_argument("--height", type=int, help="frame height (default 128, or the input's)")
    p.add_argument("--width", type=int, help="frame width (default 128, or the input's)")
    p.add_argument("--input", help="video or image folder to take the frames from (default: synthetic)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    _add_windows(p, "run")


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a preset (mtu2, mmprnn_a7b8c16...) or a family (mtu, mmprnn...)")
    p.add_argument("--checkpoint", help="official checkpoint (.pth/.pt/.safetensors); random weights without")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="configuration override, value as JSON")
    p.add_argument("--out", required=True, help="artifact directory to create")
    p.add_argument("--plugins", choices=("trt", "portable"), default="portable",
                   help="ONNX lowering of the custom ops (default portable; trt adds the TensorRT-plugin graph)")
    p.add_argument("--height", type=int, default=128, help="validation frame height (default 128)")
    p.add_argument("--width", type=int, default=128, help="validation frame width (default 128)")
    p.add_argument("--precision", default="fp32", help="comma list of fp32,fp16,bf16,int8,fp8 (default fp32)")
    p.add_argument("--calibration", help="video file or image folder for int8/fp8 calibration")
    p.add_argument("--frames", type=int, default=6, help="validation clip length (default 6)")
    p.add_argument("--min-psnr", type=float, default=40.0, help="fail the export below this fp32 PSNR (dB)")
    p.add_argument("--int8-weights", choices=("reduced", "full"), default="reduced",
                   help="int8 weight range: reduced (7-bit, right and fast on every CPU; default) or full "
                        "(8-bit, slightly closer to fp32; fast only on VNNI x86 and ARM64 CPUs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory as a whole")
    _add_windows(p, "run by default")


def _add_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", help="artifact directory written by `vdeblur export`")
    p.add_argument("--backend", choices=("onnxruntime", "tensorrt", "tensorrt-rtx"), required=True,
                   help="tensorrt: built on the data-center GPU it is for; tensorrt-rtx: for RTX GPUs, on any machine")
    p.add_argument("--precision", default="fp32", help="which graph of the artifact (default fp32)")
    p.add_argument("--shapes", help="optimisation profile min:opt:max as HxW:HxW:HxW (TensorRT, TensorRT-RTX)")
    p.add_argument("--compute-capability", metavar="CC[,CC...]",
                   help="TensorRT-RTX target GPUs, e.g. 8.6,8.9 (of 7.5, 8.0, 8.6, 8.9, 12.0, 12.1; default: "
                        "TensorRT-RTX's portable set 8.0, 8.6, 8.9, 12.0)")
    p.add_argument("--lowering", choices=("trt", "portable"),
                   help="graph to build (default: portable for onnxruntime; trt for tensorrt; trt for tensorrt-rtx "
                        "where the artifact has it, else portable)")
    p.add_argument("--dry-run", action="store_true", help="print the build plan without building")


def _port(text: str) -> int | None:
    if text == "off":
        return None
    try:
        port = int(text)
    except ValueError:
        raise UsageError(f"port {text!r}: not a number. Expected 0..65535 (0 picks a free port) or off.") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"port {port}: out of range. Expected 0..65535 (0 picks a free port) or off.")
    return port


def _cmd_serve(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str]:
    from vdeblur.serve.server import Server
    from vdeblur.serve.service import read_token

    token = read_token(args.token_file) if args.token_file else None
    server = Server(args.artifacts, host=args.host, http_port=_port(args.http_port), grpc_port=_port(args.grpc_port),
                    backend=args.backend, precision=args.precision, device=args.device, name=args.name, token=token,
                    max_sequences=args.max_sequences, max_queue=args.max_queue,
                    sequence_timeout=args.sequence_timeout, max_batch=args.max_batch, threads=args.threads,
                    window=args.window, overlap=args.overlap)
    server.start()
    server.install_signal_handlers(grace=args.grace)
    info = server.describe()
    if args.json:
        print(json.dumps({"status": "serving", **info}), flush=True)
    else:
        models = "; ".join(f"{m['name']} ({m['kind']}, {m['backend']} {m['precision']}, lookahead {m['lookahead']})"
                           for m in info["models"])
        ends = [f"gRPC {args.host}:{server.grpc_port}" if server.grpc_port is not None else "",
                f"HTTP {args.host}:{server.http_port} (metrics: /metrics)" if server.http_port is not None else ""]
        print(f"vdeblur serve: {models}\nlistening: {', '.join(e for e in ends if e)}"
              f"{'; token required' if token else ''}. SIGTERM or Ctrl-C drains and stops.", flush=True)
    try:
        while not server.wait(0.5):
            pass
    finally:
        server.stop(args.grace)
    print("vdeblur serve: stopped.", file=sys.stderr)
    return None, ""


def _cmd_triton_repo(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from vdeblur.serve.triton_repo import write_triton_repo

    report = write_triton_repo(args.artifact, args.out, backend=args.backend, name=args.name,
                               precision=args.precision, max_batch_size=args.max_batch_size,
                               instances=args.instances, overwrite=args.overwrite, height=args.height,
                               width=args.width, max_sequences=args.max_sequences, shapes=args.shapes)
    cfg = report["config"]
    size = "x".join(map(str, cfg["frame_size"][::-1])) if cfg["frame_size"] else "any frame size"
    lines = [f"wrote {report['model_dir']} ({report['backend']}, {report['precision']}, {size}, "
             f"max_batch_size {cfg['max_batch_size']}, {len(cfg['states'])} implicit states)"]
    lines += [f"  {f}" for f in report["files"]]
    lines += [f"note: {n}" for n in report["notes"]]
    return report, "\n".join(lines)


def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="artifact directories; each is one model, named "
                                                                    "after its directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--http-port", default="8000", help="HTTP/REST port, 0: any free one, off: none (default 8000)")
    p.add_argument("--grpc-port", default="8001", help="gRPC port, 0: any free one, off: none (default 8001)")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch", "tensorrt", "tensorrt-rtx"),
                   help="backend every model runs on (default onnxruntime)")
    p.add_argument("--precision", default="fp32", help="graph of each artifact (default fp32)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--name", help="model name (one artifact only; default: the artifact directory's name)")
    p.add_argument("--token-file", help="file holding a token; requests must carry `authorization: Bearer <token>`")
    p.add_argument("--max-sequences", type=int, default=64, help="open sequences per model (default 64)")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting per model (default 256)")
    p.add_argument("--sequence-timeout", type=float, default=60.0,
                   help="seconds after which an idle sequence is freed (default 60)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="frames of different sequences run as one batch, at most (default 8; 1 turns batching off)")
    p.add_argument("--threads", type=int, help="intra-op threads of each backend (default: the backend's)")
    p.add_argument("--grace", type=float, default=10.0, help="seconds SIGTERM waits for requests (default 10)")
    _add_windows(p, "run")


def _add_triton_repo(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", help="artifact directory written by `vdeblur export` (a step model)")
    p.add_argument("--out", required=True, help="the model repository directory (created if missing)")
    p.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                   help="Triton backend (default onnxruntime; tensorrt builds the plan here, on the GPU and with the "
                        "TensorRT of the Triton server)")
    p.add_argument("--name", help="model name (default: the artifact directory's name)")
    p.add_argument("--precision", default="fp32", help="graph of the artifact (default fp32)")
    p.add_argument("--height", type=int, help="a model of this one frame height (with --width): Triton can batch it")
    p.add_argument("--width", type=int, help="a model of this one frame width (with --height)")
    p.add_argument("--max-batch-size", type=int,
                   help="sequences per model execution (default 8 with --height/--width, else 1: a model of any frame "
                        "size cannot batch, see docs/triton.md)")
    p.add_argument("--max-sequences", type=int, help="sequences one instance serves at once (default max(16, 2 x "
                                                     "max batch size))")
    p.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    p.add_argument("--shapes", help="tensorrt, any frame size: the plan's profile as HxW:HxW:HxW (min:opt:max)")
    p.add_argument("--overwrite", action="store_true", help="replace the model's directory in the repository")


_COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], tuple[dict[str, Any], str]]]] = {
    "models": ("list the model presets and families", _cmd_models),
    "export": ("export a checkpoint to an ONNX artifact directory (validated against PyTorch)", _cmd_export),
    "build": ("build an engine for a backend from an artifact", _cmd_build),
    "run": ("deblur a video or image folder with an artifact", _cmd_run),
    "compare": ("stream the same frames through several backends and compare them", _cmd_compare),
    "bench": ("latency, throughput, memory and PSNR per backend and precision", _cmd_bench),
    "demo": ("the whole path on the bundled checkpoint and clip: export, build, stream, compare", _cmd_demo),
    "serve": ("serve artifacts over the KServe v2 / Triton protocol (gRPC and HTTP), a state per sequence",
              _cmd_serve),  # type: ignore[dict-item]
    "triton-repo": ("write an artifact as a Triton Inference Server model repository (sequence batching, "
                    "implicit state)", _cmd_triton_repo),
}
_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "export": _add_export, "build": _add_build, "run": _add_run, "compare": _add_compare, "bench": _add_bench,
    "demo": _add_demo, "serve": _add_serve, "triton-repo": _add_triton_repo,
}


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default = False if top else argparse.SUPPRESS
    parser.add_argument("--json", action="store_true", default=default,
                        help="print one JSON object on stdout and nothing else")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show tracebacks on errors")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}. See `{self.prog} --help`.")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vdeblur", description="Deploy video-deblurring models.")
    parser.add_argument("--version", action="version", version=f"vdeblur {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, _) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
        if name in _ARGUMENTS:
            _ARGUMENTS[name](p)
    return parser


def _fail(as_json: bool, kind: str, message: str, code: int) -> int:
    """An error: one paragraph on stderr; with --json also ``{"error": {...}}`` as the one JSON object
    on stdout."""
    print(f"error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": {"type": kind, "message": message, "exit_code": code}}))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    as_json = "--json" in argv  # known before parsing succeeds: a usage error answers in JSON too
    try:
        args = build_parser().parse_args(argv)
        debug = bool(args.debug)
        if args.command is None:
            raise UsageError("vdeblur: no command given. Run `vdeblur --help` for the list of commands.")
        payload, text = _COMMANDS[args.command][1](args)
        if payload is None:  # a command that printed its own answer (serve: when it started)
            return 0
        if args.json:
            print(json.dumps(payload))
        else:
            print(text)
        return 0
    except VdeblurError as e:
        if debug:
            traceback.print_exc()
        return _fail(as_json, type(e).__name__, str(e), e.exit_code)
    except KeyboardInterrupt:
        return _fail(as_json, "KeyboardInterrupt", "interrupted.", 130)
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence: no traceback without --debug
        if debug:
            traceback.print_exc()
        return _fail(as_json, "InternalError", f"internal error ({type(e).__name__}: {e}). Re-run with --debug "
                     "for the traceback and report it.", 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
