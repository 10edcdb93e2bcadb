"""torch -> ONNX for step graphs (dynamic H and W) and clip graphs (dynamic T, H and W), in either
plugin lowering, and validation.

:func:`export_step_graph` traces a step module (see export/stepgraph.py) with
``torch.onnx.export(dynamo=True)`` under :func:`vdeblur.plugins.lowering`, names its inputs and
outputs as the StepSpec says, checks it with onnx.checker and, for the ``trt`` lowering, checks
every plugin node against the TensorRT parser conventions.

:func:`stream_onnx` runs a clip through a step graph on ONNX Runtime exactly as the runtime does
(state fed back, warm-up discarded, flush per the spec); :func:`validate` compares that with the
PyTorch reference (``vdeblur.models.run_clip``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from vdeblur.contract.driver import drive_spec, runner
from vdeblur.contract.interface import ClipSpec
from vdeblur.errors import ExportError
from vdeblur.export.stepgraph import StepSpec, dynamic_shapes, example_inputs
from vdeblur.metrics import compare

DEFAULT_OPSET = 18


def export_step_graph(
    step: torch.nn.Module,
    spec: StepSpec | ClipSpec,
    path: str | Path,
    lowering: str = "portable",
    height: int = 64,
    width: int = 64,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Export a step module to ``path`` with dynamic H and W (multiples of ``spec.pad_multiple``), or
    a clip module (ClipSpec) with dynamic T, H and W.

    height, width: the (padded) example size used for tracing. Returns the saved model.
    """
    from vdeblur.plugins import lowering as lowering_ctx
    from vdeblur.plugins import translation_table
    from vdeblur.plugins._onnx import check_plugin_nodes
    from vdeblur.plugins.lowering import plugin_nodes

    hp, wp = spec.padded(height, width)
    args = example_inputs(spec, 2, hp, wp)  # N = 2: a dynamic batch (N = 1 would specialise it)
    # The exporter warns about torchvision ops it cannot register; vdeblur uses none of them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), lowering_ctx(lowering), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                step.eval(), args, dynamo=True, opset_version=opset, verbose=False,
                input_names=spec.input_names, output_names=spec.output_names,
                dynamic_shapes=dynamic_shapes(spec, batch=True),
                custom_translation_table=translation_table() if lowering == "trt" else None,
                optimize=True,
            )
    except Exception as e:  # the exporter raises many types; keep the first lines
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{spec.family}: torch.onnx.export failed ({first}). Re-run with --debug for details.") from e
    if program is None:
        raise ExportError(f"{spec.family}: torch.onnx.export returned nothing.")
    model = program.model_proto
    names_in = [i.name for i in model.graph.input]
    names_out = [o.name for o in model.graph.output]
    if names_in != spec.input_names or names_out != spec.output_names:
        raise ExportError(
            f"{spec.family}: the exported graph has inputs {names_in} and outputs {names_out}. "
            f"Expected {spec.input_names} and {spec.output_names}."
        )
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{spec.family}: the exported ONNX is invalid ({str(e).splitlines()[0]}).") from e
    if lowering == "trt":
        problems = check_plugin_nodes(model, plugin_nodes())
        if problems:
            raise ExportError(f"{spec.family}: plugin nodes do not follow the TensorRT conventions: {problems}.")
    path = Path(path)
    onnx.save(model, str(path))
    return model


def plugins_used(model: onnx.ModelProto) -> list[dict[str, str]]:
    """[{"id": "vdeblur::Name", "version": "1"}] for the plugin nodes of a trt-lowered graph (subgraphs too)."""
    from vdeblur.contract.precision import PLUGIN_VERSION, plugin_ids

    return [{"id": name, "version": PLUGIN_VERSION} for name in plugin_ids(model.graph)]


def ort_session(path: str | Path, threads: int | None = None, config: dict[str, str] | None = None) -> Any:
    """A CPU ONNX Runtime session for a portable graph (``config``: extra session config entries)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def stream_onnx(session: Any, spec: StepSpec | ClipSpec, frames: np.ndarray) -> np.ndarray:
    """Run frames (N, T, 3, H, W) float32 in [0, 1] through a step graph on ONNX Runtime, with the
    one driver (:func:`vdeblur.contract.driver.drive`: padding, initial states, flush, state
    feedback), or through a clip graph by the spec's windows (:func:`drive_clip`). Returns
    (N, T, 3, H, W) float32."""
    return drive_spec(runner(session, spec), spec, np.asarray(frames, dtype=np.float32))


def validation_clip(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A deterministic synthetic clip (1, T, 3, H, W) in [0, 1]: textured content under a smooth
    camera motion (:func:`vdeblur.data.texture.moving_texture`), so motion search and recurrent
    state are exercised."""
    from vdeblur.data.texture import moving_texture

    return torch.from_numpy(moving_texture(frames, height, width, seed=seed))[None]


def validate(
    session: Any, spec: StepSpec, frames: torch.Tensor, reference: torch.Tensor
) -> dict[str, float]:
    """Stream ``frames`` through ``session`` and compare with the reference outputs (run_clip)."""
    out = stream_onnx(session, spec, frames.numpy())
    return compare(out, reference.numpy())
