"""Tests of the generator package's shape: one-way imports between its modules."""

from __future__ import annotations

import ast
from pathlib import Path

import avmon.testsrc
from avmon import testsrc

PACKAGE = Path(avmon.testsrc.__file__).parent
# Lowest first: a module may import only those before it (no import circle).
LAYERS = ["script", "spec", "picture", "sound", "mpegts", "encoder", "hls", "live", "cli"]


def imported_modules(path: Path) -> set[str]:
    """The avmon.testsrc modules that ``path`` imports; "__init__" for the package itself."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("avmon.testsrc.")}
        elif isinstance(node, ast.ImportFrom):
            module = "avmon.testsrc." * bool(node.level) + (node.module or "")
            if module.rstrip(".") == "avmon.testsrc":
                found.add("__init__")
            elif module.startswith("avmon.testsrc."):
                found.add(module.split(".")[2])
    return found


def test_every_module_imports_only_the_modules_below_it() -> None:
    assert sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__") == sorted(LAYERS)
    for i, name in enumerate(LAYERS):
        assert imported_modules(PACKAGE / f"{name}.py") <= set(LAYERS[:i]), name


def test_generator_source_covers_every_module() -> None:
    source = testsrc.generator_source()
    assert all(p.read_bytes() in source for p in PACKAGE.glob("*.py"))
