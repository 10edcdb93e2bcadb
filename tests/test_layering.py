"""The layering of DESIGN.md, enforced on every import (top-level and lazy, inside functions).

contract <- plugins <- models <- export; contract <- build; contract <- runtime <- serve; apps (cli,
demo, bench, __main__) on top. vdeblur.errors, vdeblur.metrics and vdeblur.data are torch-free
leaves every layer may use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vdeblur"
LEAVES = {"errors", "metrics", "data", "__init__"}  # vdeblur/__init__ holds only __version__
ALLOWED: dict[str, set[str]] = {
    "contract": {"contract"},
    "plugins": {"contract", "plugins"},
    "models": {"contract", "plugins", "models"},
    "export": {"contract", "plugins", "models", "export"},
    "build": {"contract", "build"},
    "runtime": {"contract", "runtime"},
    "serve": {"contract", "runtime", "serve"},
}
# The documented exceptions, each one edge (path prefix, package).
EXCEPTIONS = {
    ("runtime/backends/torch.py", "models"),  # the torch backend runs the reference model code
    # TensorRT needs the plugins registered before it parses a graph or deserialises an engine; the
    # registration entry point of vdeblur.plugins is torch-free.
    ("build/tensorrt.py", "plugins"),
    ("runtime/backends/tensorrt", "plugins"),
    # TensorRT-RTX likewise (its IPluginV3 creators, and the library loader that makes its parser work).
    ("build/tensorrt_rtx.py", "plugins"),
    ("runtime/backends/tensorrt_rtx", "plugins"),
    # `vdeblur triton-repo --backend tensorrt` builds the plan with the build layer's TensorRT code (lazily).
    ("serve/triton_repo.py", "build"),
}
APPS = {"cli", "demo", "bench", "__main__"}


def layer_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def vdeblur_imports(path: Path) -> set[tuple[str, int]]:
    """(first package under vdeblur, line) of every import of vdeblur code in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "vdeblur" else [
                f"vdeblur.{a.name}" if (ROOT / a.name).is_dir() or (ROOT / f"{a.name}.py").is_file()
                else "vdeblur.__init__" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "vdeblur" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


MODULES = sorted(p for p in ROOT.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    unknown = {layer_of(p) for p in MODULES} - set(ALLOWED) - LEAVES - APPS
    assert not unknown, f"modules outside the documented layers: {unknown}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layering(path: Path) -> None:
    layer = layer_of(path)
    if layer in APPS:
        return
    rel = str(path.relative_to(ROOT))
    allowed = ALLOWED.get(layer, set()) | LEAVES
    if layer in LEAVES:
        allowed = {"errors", layer, "__init__"}
    bad = [f"line {line}: vdeblur.{pkg}" for pkg, line in sorted(vdeblur_imports(path), key=lambda x: x[1])
           if pkg not in allowed and not any(rel.startswith(pre) and pkg == p for pre, p in EXCEPTIONS)]
    assert not bad, f"{rel} ({layer}) imports a higher layer: {bad}"


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from vdeblur.export.onnx import stream_onnx\n    import vdeblur.runtime.video\n")
    assert vdeblur_imports(bad) == {("export", 2), ("runtime", 3)}
    bad.write_text("from vdeblur import __version__, errors\n")
    assert vdeblur_imports(bad) == {("__init__", 1), ("errors", 1)}
