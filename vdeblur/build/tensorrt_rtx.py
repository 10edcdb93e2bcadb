"""The TensorRT-RTX build: engines for RTX GPUs, built ahead of time on any machine (no GPU needed).

TensorRT-RTX (the ``[tensorrt-rtx]`` extra, module ``tensorrt_rtx``) parses and builds on a CPU-only
machine and writes engines that run on the RTX GPUs of the target compute capabilities
(``--compute-capability``, :func:`vdeblur.contract.engines.parse_compute_capabilities`; default:
TensorRT-RTX's portable set, 8.0 8.6 8.9 12.0); the engine is specialised on the GPU at its first
run. The network is strongly typed: the precision is the ONNX graph's. The build takes the ``trt``
lowering of the precision's graph (one plugin node per op, created by the vdeblur IPluginV3
creators of :mod:`vdeblur.plugins.rtx`), or the ``portable`` one where the artifact has no ``trt``
graph of that precision (int8: its calibration needs the plugins to run) or when asked for.

Before parsing, the graph is rewritten where TensorRT(-RTX) rejects what the exporter writes, and
the build result says so: integer-bias DequantizeLinear nodes folded into float constants (exact),
uint8 Q/DQ made symmetric int8 over the same range (TensorRT has no zero points: the int8 engine is
not the validated ONNX Runtime variant), bf16 ConvTranspose run in fp32 (TensorRT-RTX 1.7 cannot
build a bf16 deconvolution: "Could not infer output types"); see
:data:`vdeblur.build.tensorrt.TRT_REWRITES` and :func:`bf16_deconvolution_in_fp32`.

One optimisation profile covers the frame, the flush flag and every state tensor for the
min/opt/max sizes of ``--shapes`` (as the TensorRT build). Engines are cached like TensorRT engines
(:mod:`vdeblur.contract.engines`): ``engines/tensorrt-rtx/<precision>/<key>.plan`` and its ``.json``
sidecar, the key covering the ONNX, precision, shapes, TensorRT-RTX version, the target compute
capabilities, the builder settings and the plugin sources. Nothing here needs a GPU; the engine is
not deserialised (that needs an RTX GPU): the runtime backend ``tensorrt-rtx`` loads it.

The parse-and-build steps are those of :func:`vdeblur.build.tensorrt.compile_engine`; the plugins
are registered through ``vdeblur.plugins.lowering.register_tensorrt_rtx_plugins`` (the build ->
plugins edge; ``import vdeblur.plugins`` is torch-free).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vdeblur import __version__
from vdeblur.build import cache
from vdeblur.build.profile import SHAPE_NAMES, BuildPlan, Shapes, format_shapes
from vdeblur.build.tensorrt import (
    DEFAULT_OPT_LEVEL,
    DEFAULT_WORKSPACE,
    TRT_REWRITES,
    Progress,
    _Log,
    check_rewrites,
    compile_engine,
    dist_version,
    key_extra,
    rewrite_graph,
    sidecar,
)
from vdeblur.contract.engines import (
    RTX_DEFAULT_TARGETS,
    cache_hit,
    cache_key,
    engine_dir,
    engine_files,
    parse_compute_capabilities,
    rtx_targets,
)
from vdeblur.errors import BackendError

BACKEND = "tensorrt-rtx"
NETWORK_FLAGS = ("STRONGLY_TYPED",)
# What TensorRT-RTX logs as errors on a machine without the CUDA driver, although the build goes on.
_CPU_ONLY_NOISE = ("cudaError 35",)


def try_import_tensorrt_rtx() -> Any:
    """The tensorrt_rtx module, or None when it is not installed (plans only)."""
    try:
        import tensorrt_rtx
    except ImportError:
        return None
    return tensorrt_rtx


def import_tensorrt_rtx() -> Any:
    """tensorrt_rtx, ready to parse plugin nodes, or an error naming the [tensorrt-rtx] extra."""
    from vdeblur.plugins.rtx import import_tensorrt_rtx as load  # the build -> plugins edge

    return load("building a TensorRT-RTX engine")


def register_plugins() -> None:
    """Register the vdeblur TensorRT-RTX plugin creators (idempotent)."""
    from vdeblur.plugins.lowering import register_tensorrt_rtx_plugins  # the build -> plugins edge

    register_tensorrt_rtx_plugins()


def bf16_deconvolution_in_fp32(model: Any) -> int:
    """Run every ConvTranspose of bf16 tensors of an ``onnx.ModelProto`` in fp32 (in place: Casts to
    float on its inputs, back to bfloat16 on its output); returns how many.

    TensorRT-RTX 1.7.1 fails to build a bf16 ConvTranspose ("Could not infer output types for
    operation: deconv"), fp16 and fp32 ones build. fp32 is the more exact computation."""
    import onnx
    from onnx import TensorProto, helper

    bf16 = set()
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        if vi.type.tensor_type.elem_type == TensorProto.BFLOAT16:
            bf16.add(vi.name)
    bf16 |= {i.name for i in model.graph.initializer if i.data_type == TensorProto.BFLOAT16}
    for n in model.graph.node:  # Casts to bf16 (the exporter's casts) make bf16 tensors too
        if n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.BFLOAT16 for a in n.attribute):
            bf16.update(n.output)
    nodes, count = [], 0
    for node in model.graph.node:
        if node.op_type != "ConvTranspose" or not node.input or node.input[0] not in bf16:
            nodes.append(node)
            continue
        count += 1
        ins = []
        for i, name in enumerate(node.input):
            if not name:
                ins.append(name)
                continue
            cast = f"{node.name or 'deconv'}__fp32_in{i}"
            nodes.append(helper.make_node("Cast", [name], [cast], name=cast, to=TensorProto.FLOAT))
            ins.append(cast)
        out = f"{node.name or 'deconv'}__fp32_out"
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.input[:]
        new.input.extend(ins)
        del new.output[:]
        new.output.append(out)
        nodes.append(new)
        nodes.append(helper.make_node("Cast", [out], [node.output[0]], name=f"{out}_cast", to=TensorProto.BFLOAT16))
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return count


RTX_REWRITES = (*TRT_REWRITES, (bf16_deconvolution_in_fp32, "bf16 ConvTranspose nodes run in fp32 (TensorRT-RTX "
                                                            "1.7 cannot build bf16 deconvolutions)"))


def targets_component(targets: Sequence[str] | None) -> dict[str, Any]:
    """The GPU component of the cache key of an engine built for ``targets`` (None: the default)."""
    return {"compute_capabilities": list(targets) if targets else "default"}


def rtx_key(onnx_sha256: str, precision: str, shapes: Shapes | Sequence[Sequence[int]], version: str,
            targets: Sequence[str] | None, flags: dict[str, list[str]], workspace: int, opt_level: int,
            versions: dict[str, str | None]) -> str:
    """The cache key of a TensorRT-RTX engine (:func:`vdeblur.contract.engines.cache_key`)."""
    return cache_key(onnx_sha256, precision, shapes, version, targets_component(targets),
                     extra=key_extra(flags, workspace, opt_level, versions), backend=BACKEND)


def plan_tensorrt_rtx(directory: Path, precision: str, entry: Any, onnx_path: Path, sha: str, parsed: Shapes,
                      shape_dict: dict[str, list[int]], profiles: dict[str, dict[str, list[int]]],
                      dynamic: list[str], plugins: list[str], notes: list[str],
                      compute_capability: str | Sequence[str] | None = None) -> BuildPlan:
    """The TensorRT-RTX build plan; with tensorrt_rtx installed, also the cache key and hit (no GPU needed)."""
    targets = parse_compute_capabilities(compute_capability)
    notes = list(notes)
    trt = try_import_tensorrt_rtx()
    version = None if trt is None else str(getattr(trt, "__version__", "")) or None
    versions: dict[str, str | None] = {"tensorrt_rtx": version, "vdeblur": __version__,
                                       "triton": dist_version("triton")}
    flags: dict[str, list[str]] = {"network": list(NETWORK_FLAGS), "builder": []}
    outputs: dict[str, str] = {}
    key = cached = None
    if targets is None:
        notes.append(f"compute capabilities: TensorRT-RTX's default ({', '.join(RTX_DEFAULT_TARGETS)}); "
                     "pass --compute-capability 7.5 for Turing")
    if trt is None:
        notes.append("tensorrt_rtx is not installed here (`pip install 'vdeblur[tensorrt-rtx]'`): cache key and "
                     "cache hit are decided at build time")
    else:
        key = rtx_key(sha, precision, parsed, str(version), targets, flags, DEFAULT_WORKSPACE, DEFAULT_OPT_LEVEL,
                      versions)
        engine, side = engine_files(directory, precision, key, BACKEND)
        outputs = {"engine": str(engine), "sidecar": str(side)}
        cached = cache_hit(engine, side, key)
    return BuildPlan(
        backend=BACKEND, precision=precision, artifact=str(directory), onnx=str(onnx_path), onnx_sha256=sha,
        lowering=entry.lowering, shapes=shape_dict, profiles=profiles, dynamic_inputs=dynamic, plugins=plugins,
        flags=flags, workspace_bytes=DEFAULT_WORKSPACE, optimization_level=DEFAULT_OPT_LEVEL,
        engine_dir=str(engine_dir(directory, BACKEND, precision)), outputs=outputs, cache_key=key, cached=cached,
        versions=versions, gpu=None,
        settings={"batch": 1, "profiles": 1, "compute_capabilities": list(targets) if targets else None},
        notes=notes,
    )


def set_targets(trt: Any, config: Any, targets: Sequence[str] | None) -> None:
    """Set the target compute capabilities on a builder config (None or empty: TensorRT-RTX's default)."""
    if not targets:
        return
    config.num_compute_capabilities = len(targets)
    for i, cc in enumerate(targets):
        value = getattr(trt.ComputeCapability, "SM" + cc.replace(".", ""), None)
        if value is None or not config.set_compute_capability(value, i):
            raise BackendError(f"tensorrt-rtx {trt.__version__}: cannot target compute capability {cc}. Expected one "
                               f"of {', '.join(n for n in trt.ComputeCapability.__members__ if n.startswith('SM'))}.")


def build_tensorrt_rtx(p: BuildPlan, report: Progress) -> dict[str, Any]:
    """Build (or find in the cache) the TensorRT-RTX engine of plan ``p``; no GPU needed."""
    trt = import_tensorrt_rtx()
    version = str(trt.__version__)
    targets = p.settings.get("compute_capabilities") or None
    versions = {**p.versions, "tensorrt_rtx": version}
    workspace = int(p.workspace_bytes or DEFAULT_WORKSPACE)
    key = rtx_key(p.onnx_sha256, p.precision, [p.shapes[k] for k in SHAPE_NAMES], version, targets, p.flags,
                  workspace, int(p.optimization_level), versions)
    engine_path, sidecar_path = engine_files(p.artifact, p.precision, key, BACKEND)
    result: dict[str, Any] = {
        "backend": BACKEND, "precision": p.precision, "artifact": p.artifact, "engine": str(engine_path),
        "sidecar": str(sidecar_path), "cache_key": key, "cache_hit": False, "tensorrt_rtx": version,
        "compute_capabilities": ", ".join(rtx_targets(targets)) + ("" if targets else " (default)"),
        "onnx": p.onnx, "lowering": p.lowering, "shapes": format_shapes(p.shapes.values()), "profiles": p.profiles,
        "flags": p.flags, "timings_s": {}, "notes": list(p.notes),
    }
    if cache_hit(engine_path, sidecar_path, key):
        result["cache_hit"] = True
        return result

    report("reading the ONNX graph", 0.02)
    onnx_bytes, rewritten = rewrite_graph(p.onnx, RTX_REWRITES)
    result["notes"] += rewritten
    report("checking the rewritten graph", 0.05)
    result["rewrite_check"] = check_rewrites(p, onnx_bytes, rewritten)
    log = _Log(trt, "TensorRT-RTX", quiet=_CPU_ONLY_NOISE)
    bits = 0
    for name in p.flags.get("network", []):
        bits |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    compiled = compile_engine(trt, log, p, report, network_flags=bits, builder_flags=p.flags.get("builder", []),
                              register=register_plugins, configure=lambda config: set_targets(trt, config, targets),
                              onnx_bytes=onnx_bytes, what="TensorRT-RTX")
    result["timings_s"].update(compiled.timings)
    result["notes"] += compiled.notes
    report("writing", 0.95)
    cache.write_engine(engine_path, sidecar_path, compiled.data, sidecar(
        p, key, compiled, backend=BACKEND, tensorrt=version, gpu=None,
        compute_capabilities=list(rtx_targets(targets)), default_targets=targets is None, flags=p.flags,
        strongly_typed=True, versions=versions, rewrites=rewritten, rewrite_check=result["rewrite_check"]))
    result["bytes"] = len(compiled.data)
    return result
