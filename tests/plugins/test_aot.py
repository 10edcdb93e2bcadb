"""aot.py without TensorRT: what compile_op refuses before compiling, and the PTX parameter list
against TensorRT's AOT launch (issue 13, defect 3).

TensorRT launches an AOT plugin's kernel with one device pointer per input, one 32-bit int per extra
scalar, one device pointer per output (tensorrt/plugin/_lib.py, ``aot_impl``: the extra args are
"located after the tensor inputs and before the tensor outputs"), and nothing else. Triton appends
global- and profile-scratch pointers to every kernel; a PTX that declares them would make the
driver read two kernel arguments TensorRT never passed. The PTX is parsed here with a parser of this
test's own, not aot.py's. The same list, as TensorRT's own Python code computes it from our
registration, is checked in test_trt_registration.py.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from vdeblur.errors import ExportError
from vdeblur.plugins import specs
from vdeblur.plugins.aot import (
    SUPPORTED_ARCHS,
    CompiledKernel,
    check_trt_launch,
    compile_op,
    drop_hidden_params,
    trt_launch_args,
)
from vdeblur.plugins.spec import OpSpec

OPS = list(specs().values())
IDS = [s.name for s in OPS]
# The data-center targets of the TensorRT + AOT plugin path (A100, L4/L40, H100/H200), both engine
# precisions, every op; the other supported targets for one op (the rewrite does not depend on it).
TARGETS = [(a, d) for a in (80, 89, 90) for d in ("float32", "float16")]
OTHER_TARGETS = [a for a in SUPPORTED_ARCHS if a not in (80, 89, 90)]


def test_unsupported_target_and_dtype_fail_clearly() -> None:
    spec = specs()["correlation"]
    with pytest.raises(ExportError, match="sm_61 is not a supported target"):
        compile_op(spec, "float32", {"max_displacement": 4}, 61)
    with pytest.raises(ExportError, match="dtype 'int8' is not supported"):
        compile_op(spec, "int8", {"max_displacement": 4}, 90)


def test_a_launch_plan_that_disagrees_with_the_kernel_is_refused() -> None:
    spec = specs()["flow_warp"]
    wrong = dataclasses.replace(spec, launch=dataclasses.replace(spec.launch, scalars=("x.C", "x.H")))
    with pytest.raises(ExportError, match=r"flow_warp_kernel takes .* Expected 5 parameters: 2 input pointers"):
        compile_op(wrong, "float32", {}, 90)


def entry_params(ptx: str, name: str) -> list[str]:
    """The kinds of ``.entry <name>``'s parameters: "ptr" (.u64 .ptr), "i32" (.u32/.s32/.b32)."""
    m = re.search(rf"\.entry\s+{re.escape(name)}\s*\(([^)]*)\)", ptx)
    assert m, f"no .entry {name} in the PTX"
    kinds = []
    for decl in (d.split() for d in m.group(1).split(",") if d.strip()):
        assert decl[0] == ".param", decl
        if ".u64" in decl and ".ptr" in decl:
            kinds.append("ptr")
        elif {".u32", ".s32", ".b32"} & set(decl):
            kinds.append("i32")
        else:
            kinds.append(" ".join(decl[1:-1]))
    return kinds


def trt_passes(spec: OpSpec) -> list[str]:
    """What TensorRT's AOT launch passes for this op, written from the spec and TensorRT's contract
    (not from aot.py): input pointers, one int32 per extra scalar, output pointers."""
    return ["ptr"] * len(spec.inputs) + ["i32"] * len(spec.launch.scalars) + ["ptr"] * len(spec.outputs)


@pytest.mark.parametrize("arch,dtype", TARGETS, ids=[f"sm_{a}-{d}" for a, d in TARGETS])
@pytest.mark.parametrize("spec", OPS, ids=IDS)
def test_ptx_declares_exactly_what_tensorrt_passes(spec: OpSpec, arch: int, dtype: str) -> None:
    ck = compile_op(spec, dtype, spec.examples[-1].attrs, arch)  # the attributes test_ops.py compiles
    assert f".target sm_{arch}" in ck.ptx
    assert entry_params(ck.ptx, ck.name) == trt_passes(spec), (
        f"{spec.name} sm_{arch} {dtype}: the PTX declares {entry_params(ck.ptx, ck.name)}, "
        f"TensorRT passes {trt_passes(spec)}")
    assert [k for k, _ in trt_launch_args(spec)] == trt_passes(spec)
    assert [p.kind for p in ck.params] == trt_passes(spec)
    if ck.registers is not None:  # ptxas assembled the PTX as TensorRT receives it
        assert 0 < ck.registers <= 255


@pytest.mark.parametrize("arch", OTHER_TARGETS, ids=[f"sm_{a}" for a in OTHER_TARGETS])
def test_ptx_parameters_on_the_other_targets(arch: int) -> None:
    spec = specs()["flow_warp"]
    ck = compile_op(spec, "float32", spec.examples[-1].attrs, arch)
    assert entry_params(ck.ptx, ck.name) == trt_passes(spec)


PTX = """
.visible .entry k(
	.param .u64 .ptr .global .align 1 k_param_0,
	.param .u32 k_param_1,
	.param .u64 .ptr .global .align 1 k_param_2,
	.param .u64 .ptr .global .align 1 k_param_3,
	.param .u64 .ptr .global .align 1 k_param_4
)
.reqntid 128
{
	ld.param.b64 	%rd1, [k_param_0];
	ld.param.b32 	%r1, [k_param_1];
	ld.param.b64 	%rd2, [k_param_2];
	BODY
}
"""
SIGNATURE = {"x": "*fp32", "n": "i32", "y": "*fp32"}


def test_hidden_scratch_pointers_are_removed_from_the_entry() -> None:
    ptx = drop_hidden_params(PTX.replace("BODY", "ret;"), "k", SIGNATURE)
    assert entry_params(ptx, "k") == ["ptr", "i32", "ptr"]
    assert "k_param_3" not in ptx and "k_param_4" not in ptx
    assert ptx.split("{", 1)[1] == PTX.replace("BODY", "ret;").split("{", 1)[1]  # the body is untouched
    assert drop_hidden_params(ptx, "k", SIGNATURE) == ptx  # nothing hidden left: unchanged


def test_a_used_trailing_parameter_or_a_mismatched_signature_is_refused() -> None:
    with pytest.raises(ExportError, match=r"uses its trailing parameter k_param_3 .* Expected Triton's hidden"):
        drop_hidden_params(PTX.replace("BODY", "ld.param.b64 %rd3, [k_param_3];"), "k", SIGNATURE)
    with pytest.raises(ExportError, match=r"declares \['ptr', 'i32', 'ptr', 'ptr', 'ptr'\]\. Expected the signature"):
        drop_hidden_params(PTX.replace("BODY", "ret;"), "k", {"x": "*fp32", "y": "*fp32", "n": "i32"})
    with pytest.raises(ExportError, match="has no .entry other"):
        drop_hidden_params(PTX, "other", SIGNATURE)


def test_the_pre_fix_ptx_of_flow_warp_fails_the_tensorrt_launch_check() -> None:
    # What compile_op returned before the fix: 6 parameters TensorRT passes + 2 scratch pointers.
    kinds = [".u64 .ptr .global .align 1"] * 2 + [".u32"] * 3 + [".u64 .ptr .global .align 1"] * 3
    header = ",\n".join(f"\t.param {k} k_param_{i}" for i, k in enumerate(kinds))
    kernel = CompiledKernel(name="k", ptx=f".visible .entry k(\n{header}\n)\n{{\n\tret;\n}}\n", arch=90,
                            num_warps=4, shared_mem=0, registers=None, spill_stores=None, spill_loads=None)
    assert len(entry_params(kernel.ptx, "k")) == 8
    expected = r"\['ptr \(input x\)', 'ptr \(input flow\)', 'i32 \(scalar x.C\)'"
    with pytest.raises(ExportError, match=r"k for sm_90 declares parameters .* Expected exactly what TensorRT's "
                                          rf"AOT launch passes: {expected}"):
        check_trt_launch(specs()["flow_warp"], kernel)
