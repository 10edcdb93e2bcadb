"""Precisions, and what each one must deliver on what users see: the output frames.

Every reduced-precision or optimised path is judged on output frames over a clip (PSNR and the
fraction of values within half an 8-bit level), never on the max difference of a hidden state:

- :data:`VARIANT_BARS`: an export's precision variant against the fp32 PyTorch reference
  (``run_clip``) on the validation clip. A variant below its bar is reported and left out of the
  artifact; the export goes on with the others.
- :data:`ENGINE_BARS`: a built engine (an optimised graph) against the graph it was built from, on
  the same frames. Both compute in the same precision, so the bars are tight; an engine below its
  bar is not used: the build falls back to the source graph without graph optimisation, and says so.

The figures behind the bars (random-weight mtu2 and mmprnn_a7b8c16, 320x180, ONNX Runtime 1.31):
int8 variants reach 55-58 dB against fp32 and optimised int8 engines 67-72 dB against their Q/DQ
graph; ONNX Runtime's U8S8 kernels on an x86 CPU without VNNI, fed full-range weights, fall to
33.6 dB (see :mod:`vdeblur.contract.device`). fp32 engines match their graph to > 140 dB.

Also here: the lowering names and the plugin domain/version (:data:`LOWERINGS`,
:data:`PLUGIN_DOMAIN`, :data:`PLUGIN_VERSION`); :func:`int8_weight_range`, which tells whether an
int8 graph's weights are within the 7-bit range that every CPU computes right, and
:func:`int8_settings`, how such a graph must run on this CPU (the build and the runtime ask it).
Torch-free; onnx is imported only when needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
# ONNX lowerings of the custom ops: "portable" (standard ONNX ops only) and "trt" (one custom node
# per op in PLUGIN_DOMAIN, which is also the TensorRT plugin namespace; PLUGIN_VERSION likewise).
LOWERINGS = ("portable", "trt")
PLUGIN_DOMAIN = "vdeblur"
PLUGIN_VERSION = "1"
_GRAPH, _GRAPHS = 5, 10  # onnx.AttributeProto.GRAPH / GRAPHS (this module does not import onnx)


def onnx_nodes(graph: Any) -> Any:
    """The nodes of an ONNX ``graph`` (a GraphProto) and, depth first, of its subgraphs (the bodies
    of Scan, Loop and If): plugin nodes inside a clip graph's recurrence are found too."""
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == _GRAPH:
                yield from onnx_nodes(a.g)
            elif a.type == _GRAPHS:
                for g in a.graphs:
                    yield from onnx_nodes(g)


def plugin_ids(graph: Any) -> list[str]:
    """The sorted ``vdeblur::Name`` ids of the plugin nodes of an ONNX graph, subgraphs included."""
    return sorted({f"vdeblur::{n.op_type}" for n in onnx_nodes(graph) if n.domain == PLUGIN_DOMAIN})
HALF_LEVEL = 0.5 / 255.0
# Largest |int8 weight| that x86 CPUs without VNNI multiply without saturating (7-bit range).
SAFE_INT8_WEIGHT = 64
# ONNX Runtime session config: run Q/DQ nodes as they are (float), without fusing them into integer kernels.
DISABLE_QDQ = "session.disable_quant_qdq"


@dataclass(frozen=True)
class FrameBar:
    """Minimum PSNR (dB) and minimum fraction of values within half an 8-bit level."""

    min_psnr_db: float
    min_within_half_level: float

    def check(self, psnr_db: float, within: float) -> str | None:
        """None when met; else what fell short, e.g. ``PSNR 33.6 dB < 45.0 dB``."""
        short = []
        if not psnr_db >= self.min_psnr_db:
            short.append(f"PSNR {psnr_db:.2f} dB < {self.min_psnr_db:.1f} dB")
        if not within >= self.min_within_half_level:
            short.append(f"{100 * within:.2f}% within half an 8-bit level < {100 * self.min_within_half_level:.1f}%")
        return "; ".join(short) or None

    def to_dict(self) -> dict[str, float]:
        return {"min_psnr_db": self.min_psnr_db, "min_within_half_level": self.min_within_half_level}


# Variant vs the fp32 reference (run_clip). fp32 itself uses the export's --min-psnr (default 40 dB).
VARIANT_BARS = {
    "fp16": FrameBar(35.0, 0.0),
    "bf16": FrameBar(30.0, 0.0),
    "int8": FrameBar(35.0, 0.0),
    "fp8": FrameBar(30.0, 0.0),
}
# Optimised engine vs its own source graph (same precision, same frames).
ENGINE_BARS = {
    "fp32": FrameBar(60.0, 0.999),
    "fp16": FrameBar(45.0, 0.99),
    "bf16": FrameBar(40.0, 0.98),
    "int8": FrameBar(45.0, 0.98),
    "fp8": FrameBar(40.0, 0.95),
}


def frame_metrics(got: Any, want: Any) -> dict[str, float]:
    """PSNR (dB, peak 1; inf when equal) and the fraction within half an 8-bit level of two frame
    arrays in [0, 1] (numpy; clipped to [0, 1] first, as users see them)."""
    import numpy as np

    a = np.clip(np.asarray(got, dtype=np.float64), 0.0, 1.0)
    b = np.clip(np.asarray(want, dtype=np.float64), 0.0, 1.0)
    if a.shape != b.shape:
        return {"psnr_db": float("-inf"), "within_half_level": 0.0}
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return {"psnr_db": float("-inf"), "within_half_level": 0.0}
    mse = float(np.mean((a - b) ** 2))
    psnr = float("inf") if mse == 0.0 else float(10.0 * np.log10(1.0 / mse))
    return {"psnr_db": psnr, "within_half_level": float(np.mean(np.abs(a - b) <= HALF_LEVEL))}


def int8_weight_range(model: Any) -> int:
    """The largest |value| of the int8 weights that feed DequantizeLinear nodes in an
    ``onnx.ModelProto`` (0 without any): at most :data:`SAFE_INT8_WEIGHT` means the graph's integer
    kernels are right on every CPU."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer if i.data_type == TensorProto.INT8}
    largest = 0
    for n in model.graph.node:
        if n.op_type in ("DequantizeLinear", "QLinearConv") and n.input:
            name = n.input[0] if n.op_type == "DequantizeLinear" else n.input[3]
            if name in inits:
                arr = numpy_helper.to_array(inits[name]).astype(np.int32)
                if arr.size:
                    largest = max(largest, int(np.abs(arr).max()))
    return largest


def int8_wrong_here(max_abs_weight: int) -> bool:
    """Whether fused integer kernels would compute an int8 graph with these weights wrong on this
    CPU: weights beyond the 7-bit range on an x86 CPU whose U8S8 kernels saturate (no VNNI)."""
    from vdeblur.contract.device import int8_saturates

    return max_abs_weight > SAFE_INT8_WEIGHT and int8_saturates()


def int8_settings(onnx_path: str | Path) -> dict[str, Any] | None:
    """How an int8 (Q/DQ) graph must run on this CPU, or None for a graph without int8 weights.

    ``{"max_abs_weight": m, "weight_bits": 7|8, "cpu_vnni": bool, "disable_quant_qdq": bool,
    "note": ...}``: Q/DQ fusion is disabled (float Q/DQ, right but not fast) when the weights
    exceed the 7-bit range and this CPU's U8S8 kernels saturate (x86-64 without VNNI)."""
    import onnx

    from vdeblur.contract.device import cpu_info

    model = onnx.load(str(onnx_path), load_external_data=False)
    largest = int8_weight_range(model)
    if largest == 0:
        return None
    disable = int8_wrong_here(largest)
    info = {"max_abs_weight": largest, "weight_bits": 7 if largest <= SAFE_INT8_WEIGHT else 8,
            "cpu_vnni": bool(cpu_info()["vnni"]), "disable_quant_qdq": disable}
    if disable:
        info["note"] = ("int8 runs as float Q/DQ here (right, not fast): the graph has full-range 8-bit weights "
                        "and this x86 CPU has no VNNI, whose U8S8 kernels would saturate. Export with "
                        "--int8-weights reduced (the default) for fast int8 on every CPU.")
    return info
