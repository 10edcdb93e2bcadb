"""Ahead-of-time compilation of the Triton kernels for TensorRT's AOT plugins (no tensorrt needed).

TensorRT's quickly deployable plugins (``@trtp.aot_impl``) take PTX, a kernel name, launch
parameters and the int scalars to pass. :func:`compile_op` compiles an op's kernel as its spec's
launch plan says (pointer types from the input and output dtypes, int scalars, the attributes as
constexprs); :func:`compile_kernel` compiles any ``@triton.jit`` kernel for a given GPU architecture
on any machine (Triton ships the NVIDIA back end and ptxas), and reads the register and spill counts
from ``ptxas -v`` for the op cards.

TensorRT's AOT launch passes exactly: one device pointer per plugin input, one 32-bit int per extra
scalar (``SymInt32``), one device pointer per plugin output (tensorrt/plugin/_lib.py, ``aot_impl``:
"extra_args ... located after the tensor inputs and before the tensor outputs"). Triton 3.x
appends hidden pointer parameters to every kernel it compiles (global scratch, and in the versions
this package supports, >= 3.5, profile scratch too), which its own launchers fill with NULL when
unused; Triton has no option to leave them out, and TensorRT cannot pass them (its extra arguments
are 32-bit ints, placed before the outputs). So
:func:`compile_kernel` makes the PTX right by construction: it refuses a kernel that needs scratch
memory, checks that the trailing hidden parameters are pointers the kernel body never reads, and
removes them from the ``.entry`` declaration (ptxas then assembles the PTX as TensorRT gets it).
:func:`compile_op` checks the resulting parameter list against :func:`trt_launch_args`.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from vdeblur.errors import ExportError

if TYPE_CHECKING:
    from vdeblur.plugins.spec import OpSpec

SUPPORTED_ARCHS = (75, 80, 86, 89, 90, 100, 120)

_TRITON_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_COMPILED: dict[tuple[Any, ...], CompiledKernel] = {}


@dataclass(frozen=True)
class PtxParam:
    """One parameter of a PTX ``.entry``: its name, its type ("u64", "u32"...) and whether it is
    declared a pointer (``.ptr``)."""

    name: str
    type: str
    pointer: bool

    @property
    def kind(self) -> str:
        """What a launch must pass for it: "ptr" (a 64-bit device pointer), "i32" (a 32-bit int), or
        the PTX type for anything else."""
        if self.type in ("u64", "b64", "s64") and self.pointer:
            return "ptr"
        if self.type in ("u32", "b32", "s32"):
            return "i32"
        return self.type


@dataclass(frozen=True)
class CompiledKernel:
    """A kernel compiled to PTX for one GPU architecture, with what ptxas reports about it."""

    name: str
    ptx: str
    arch: int
    num_warps: int
    shared_mem: int
    registers: int | None
    spill_stores: int | None
    spill_loads: int | None

    @property
    def block_x(self) -> int:
        return self.num_warps * 32

    @property
    def params(self) -> list[PtxParam]:
        """The parameters the PTX ``.entry`` of this kernel declares, in order."""
        return ptx_entry_params(self.ptx, self.name)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("ptx")
        d["ptx_bytes"] = len(self.ptx)
        return d


def triton_dtype(dtype: str) -> str:
    """'float32' | 'float16' | 'bfloat16' -> Triton's pointer element name."""
    try:
        return _TRITON_DTYPES[dtype]
    except KeyError:
        raise ExportError(f"aot: dtype {dtype!r} is not supported. Expected one of {sorted(_TRITON_DTYPES)}.") from None


def trt_launch_args(spec: OpSpec) -> list[tuple[str, str]]:
    """What TensorRT's AOT launch of op ``spec``'s kernel passes, in order, as (kind, source) pairs:
    ("ptr", "input <name>") per input, ("i32", "scalar <input>.<letter>") per launch-plan scalar
    (qdp.py returns them as ``SymInt32``), ("ptr", "output <name>") per output."""
    return ([("ptr", f"input {i.name}") for i in spec.inputs]
            + [("i32", f"scalar {s}") for s in spec.launch.scalars]
            + [("ptr", f"output {o.name}") for o in spec.outputs])


def check_trt_launch(spec: OpSpec, kernel: CompiledKernel) -> None:
    """ExportError unless ``kernel``'s PTX declares exactly the parameters TensorRT passes."""
    declared = [p.kind for p in kernel.params]
    passed = trt_launch_args(spec)
    if declared != [kind for kind, _ in passed]:
        raise ExportError(
            f"aot: kernel {kernel.name} for sm_{kernel.arch} declares parameters {declared}. Expected exactly "
            f"what TensorRT's AOT launch passes: {[f'{kind} ({src})' for kind, src in passed]}."
        )


def compile_op(spec: OpSpec, dtype: str, attrs: Mapping[str, Any], arch: int = 90) -> CompiledKernel:
    """PTX of op ``spec``'s kernel for ``sm_<arch>`` and inputs of ``dtype`` ('float32' | 'float16'),
    with the attributes baked in. Kernel parameters: one pointer per input, the launch plan's int
    scalars, one pointer per output (TensorRT's AOT order), then the constexprs. The PTX declares
    exactly those parameters (:func:`check_trt_launch`), without Triton's hidden scratch pointers.

    Compiled once per process for each (kernel, launch plan, dtypes, attributes, target): TensorRT
    asks again for every plugin node of a graph, and a graph has many nodes of one op."""
    values = spec.bind_attrs(attrs)
    key = (spec.launch, len(spec.inputs), tuple(o.dtype for o in spec.outputs), dtype, tuple(values.items()), arch)
    if key not in _COMPILED:
        _COMPILED[key] = _compile_op(spec, dtype, values, arch)
    return _COMPILED[key]


def _compile_op(spec: OpSpec, dtype: str, values: dict[str, Any], arch: int) -> CompiledKernel:
    t = triton_dtype(dtype)
    types = [f"*{t}"] * len(spec.inputs) + ["i32"] * len(spec.launch.scalars)
    types += [f"*{triton_dtype(spec.output_dtype(i, dtype))}" for i in range(len(spec.outputs))]
    fn = spec.launch.load()
    constexprs = spec.launch.constexprs(values)
    names = [p for p in inspect.signature(getattr(fn, "fn", fn)).parameters if p not in constexprs]
    if len(names) != len(types):
        raise ExportError(
            f"aot: kernel {spec.launch.kernel} takes {names} besides its constexprs. Expected {len(types)} "
            f"parameters: {len(spec.inputs)} input pointers, scalars {list(spec.launch.scalars)}, "
            f"{len(spec.outputs)} output pointers."
        )
    kernel = compile_kernel(fn, dict(zip(names, types, strict=True)), constexprs, arch,
                            num_warps=spec.launch.num_warps)
    check_trt_launch(spec, kernel)
    return kernel


def compile_kernel(
    fn: Any,
    signature: dict[str, str],
    constexprs: dict[str, Any],
    arch: int = 90,
    num_warps: int = 4,
    num_stages: int = 2,
    resource_usage: bool = True,
) -> CompiledKernel:
    """Compile a ``@triton.jit`` kernel to PTX for ``sm_<arch>``.

    signature: parameter name -> Triton type ("*fp32", "i32"...), in kernel order, without the
    constexprs; constexprs: name -> value (the op attributes baked into the kernel).

    The PTX's ``.entry`` declares exactly the signature's parameters: Triton's hidden trailing scratch
    pointers are removed (:func:`drop_hidden_params`), so a launch that passes the signature's
    arguments and nothing else (TensorRT's AOT launch) matches it.
    """
    if arch not in SUPPORTED_ARCHS:
        raise ExportError(f"aot: sm_{arch} is not a supported target. Expected one of {SUPPORTED_ARCHS}.")
    if os.environ.get("TRITON_INTERPRET") == "1":
        # The interpreter patches triton.language process-wide, so compile in a clean process.
        return _compile_in_subprocess(fn, signature, constexprs, arch, num_warps, num_stages, resource_usage)
    import triton
    from triton.backends.compiler import GPUTarget

    sig = dict(signature)
    sig.update({k: "constexpr" for k in constexprs})
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=dict(constexprs))
    try:
        k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                           options={"num_warps": num_warps, "num_stages": num_stages})
    except Exception as e:  # triton raises many types; keep the cause
        raise ExportError(f"aot: compiling {getattr(fn, '__name__', fn)} for sm_{arch} failed: {e}.") from e
    md = k.metadata
    scratch = getattr(md, "global_scratch_size", 0) or 0
    profile = getattr(md, "profile_scratch_size", 0) or 0
    if scratch or profile:
        raise ExportError(
            f"aot: kernel {md.name} needs {scratch} B of global scratch and {profile} B of profile scratch. "
            "Expected a kernel without scratch memory (TensorRT's AOT launch cannot pass Triton's scratch pointers)."
        )
    ptx = drop_hidden_params(k.asm["ptx"], md.name, signature)
    regs = stores = loads = None
    if resource_usage:
        regs, stores, loads = ptxas_resource_usage(ptx, arch)
    return CompiledKernel(
        name=md.name, ptx=ptx, arch=arch, num_warps=md.num_warps, shared_mem=md.shared,
        registers=regs, spill_stores=stores, spill_loads=loads,
    )


_ENTRY = r"\.entry\s+{name}\s*\(([^)]*)\)"
_PTX_TYPES = {f"{k}{n}" for k in "usbf" for n in (8, 16, 32, 64)} | {"pred"}


def _entry(ptx: str, name: str) -> re.Match[str]:
    m = re.search(_ENTRY.format(name=re.escape(name)), ptx)
    if m is None:
        raise ExportError(f"aot: the PTX has no .entry {name}. Expected Triton's kernel entry point.")
    return m


def ptx_entry_params(ptx: str, name: str) -> list[PtxParam]:
    """The parameters of ``.entry <name>(...)`` in ``ptx``, in order."""
    params = []
    for decl in filter(str.strip, _entry(ptx, name).group(1).split(",")):
        tokens = decl.split()
        types = [t[1:] for t in tokens[1:-1] if t[1:] in _PTX_TYPES]
        if tokens[0] != ".param" or len(types) != 1:
            raise ExportError(f"aot: .entry {name} declares {decl.strip()!r}. Expected '.param .<type> ... <name>'.")
        params.append(PtxParam(name=tokens[-1], type=types[0], pointer=".ptr" in tokens))
    return params


_TRITON_KINDS = {"i32": "i32", "u32": "i32"}


def drop_hidden_params(ptx: str, name: str, signature: Mapping[str, str]) -> str:
    """``ptx`` with the parameters Triton appends after ``signature``'s (global and profile scratch
    pointers) removed from ``.entry <name>``, once checked to be pointers the body never reads.

    ExportError when the declared parameters do not start with the signature's (a pointer per
    ``*<type>``, a 32-bit int per ``i32``), or when a hidden parameter is used."""
    params = ptx_entry_params(ptx, name)
    wanted = ["ptr" if t.startswith("*") else _TRITON_KINDS.get(t, t) for t in signature.values()]
    got = [p.kind for p in params[:len(wanted)]]
    if got != wanted:
        raise ExportError(f"aot: .entry {name} declares {[p.kind for p in params]}. Expected the signature's "
                          f"{wanted} ({list(signature)}) followed only by Triton's scratch pointers.")
    hidden = params[len(wanted):]
    m = _entry(ptx, name)
    body = ptx[m.end():]
    for p in hidden:
        if p.kind != "ptr" or re.search(rf"\b{re.escape(p.name)}\b", body):
            raise ExportError(f"aot: .entry {name} uses its trailing parameter {p.name} ({p.type}). Expected "
                              "Triton's hidden scratch pointers to be unused (TensorRT cannot pass them).")
    if not hidden:
        return ptx
    kept = [d for d in m.group(1).split(",") if d.strip()][:len(wanted)]
    return ptx[:m.start(1)] + ",".join(kept).rstrip() + "\n" + ptx[m.end(1):]


def ptxas_resource_usage(ptx: str, arch: int) -> tuple[int | None, int | None, int | None]:
    """(registers, spill store bytes, spill load bytes) from ``ptxas -v``; Nones if ptxas is absent."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        ptxas = get_ptxas(arch).path
    except Exception:
        return None, None, None
    suffix = "a" if arch >= 90 else ""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run(
            [ptxas, "-v", f"--gpu-name=sm_{arch}{suffix}", src, "-o", os.path.join(tmp, "k.cubin")],
            capture_output=True, text=True, check=False,
        )
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise ExportError(f"aot: ptxas rejected the PTX for sm_{arch}: {text.strip()[-500:]}.")
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return (
        int(regs.group(1)) if regs else None,
        int(spill.group(1)) if spill else None,
        int(spill.group(2)) if spill else None,
    )


def _compile_in_subprocess(
    fn: Any, signature: dict[str, str], constexprs: dict[str, Any], arch: int, num_warps: int,
    num_stages: int, resource_usage: bool,
) -> CompiledKernel:
    inner = getattr(fn, "fn", fn)
    request = {
        "module": inner.__module__, "name": inner.__name__, "signature": signature, "constexprs": constexprs,
        "arch": arch, "num_warps": num_warps, "num_stages": num_stages, "resource_usage": resource_usage,
    }
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "vdeblur.plugins.aot"], input=json.dumps(request),
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise ExportError(f"aot: compiling {inner.__name__} for sm_{arch} failed: {proc.stderr.strip()[-800:]}.")
    return CompiledKernel(**json.loads(proc.stdout.strip().splitlines()[-1]))


def _main() -> None:
    import importlib

    req = json.loads(sys.stdin.read())
    fn = getattr(importlib.import_module(req["module"]), req["name"])
    ck = compile_kernel(fn, req["signature"], req["constexprs"], req["arch"], req["num_warps"],
                        req["num_stages"], req["resource_usage"])
    print(json.dumps(asdict(ck)))


if __name__ == "__main__":
    _main()
