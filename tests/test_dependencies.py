"""What we import we declare: every third-party package imported anywhere in the tree is a
dependency in pyproject.toml (runtime or an extra) and pinned ``==`` in constraints.txt, so a fresh
clone installs what the code needs, at the versions CI ran (DESIGN.md, Dependencies)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("router", "worker", "shared", "infra", "avmon", "bench", "tests")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (``PyYAML`` = ``pyyaml``, ``a_b`` = ``a-b``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _first_party() -> set[str]:
    return {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} | {
        p.stem for p in ROOT.glob("*.py")
    }


def imported_top_levels(source: str, filename: str = "<source>") -> set[str]:
    """Top-level names of the absolute imports in ``source``, wherever they are (module level,
    inside functions, under ``TYPE_CHECKING``); relative imports are first-party."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party_imports() -> dict[str, set[str]]:
    """Imported top-level name -> the files importing it, stdlib and first-party left out."""
    skip = set(sys.stdlib_module_names) | _first_party()
    found: dict[str, set[str]] = {}
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for name in imported_top_levels(path.read_text(encoding="utf-8"), rel) - skip:
                found.setdefault(name, set()).add(rel)
    return found


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return {_normalise(m.group(1)) for spec in specs if (m := _NAME.match(spec))}


def pinned() -> set[str]:
    out = set()
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            out.add(_normalise(line.split("==", 1)[0].split("[", 1)[0]))
    return out


def test_the_scan_sees_nested_and_deferred_imports_and_skips_relative_ones() -> None:
    source = (
        "import os.path, numpy as np\n"
        "from scipy.signal import lfilter\n"
        "from . import sibling\n"
        "def f():\n"
        "    import yaml\n"
        "    from .x import y\n"
    )
    assert imported_top_levels(source) == {"os", "numpy", "scipy", "yaml"}


def test_every_imported_third_party_package_is_declared_and_pinned() -> None:
    imports = third_party_imports()
    assert "numpy" in imports and "pytest" in imports  # the scan reads the tree
    distributions = importlib.metadata.packages_distributions()
    have, pins = declared(), pinned()
    problems = []
    for name, files in sorted(imports.items()):
        where = ", ".join(sorted(files)[:3])
        dists = {_normalise(d) for d in distributions.get(name, [])}
        if not dists:
            problems.append(f"{name} (imported by {where}) is not installed from any distribution")
        elif not dists & have:
            problems.append(f"{name} (imported by {where}): declare {sorted(dists)} in pyproject.toml")
        elif not dists & have & pins:
            problems.append(f"{name} (imported by {where}): pin {sorted(dists)} with == in constraints.txt")
    assert problems == []
