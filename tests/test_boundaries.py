"""Layering: the runtime knows no domain, the domain knows no app.

edgespec must not import vineyard or fieldlog_app; vineyard must not import
fieldlog_app. Imports are read with ``ast`` from every module (including imports
inside functions and string imports through importlib / __import__), so a lazy
import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"edgespec": {"vineyard", "fieldlog_app"}, "vineyard": {"fieldlog_app"}}


def _dynamic_target(call: ast.Call) -> str | None:
    """``importlib.import_module("x.y")`` / ``import_module("x")`` / ``__import__("x")`` with a literal name."""
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name in ("import_module", "__import__") and call.args:
        arg = call.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
    return None


def imported_packages(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in ``source``, the source of the dotted ``module``.

    Relative imports are resolved against ``module``; one that climbs above the top
    package is reported as ``..`` (it can only reach a sibling package).
    """
    parts = module.split(".") if is_package else module.split(".")[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append((node.lineno, node.module.split(".")[0]))
            elif node.level - 1 >= len(parts):
                out.append((node.lineno, ".."))
            else:
                base = parts[: len(parts) - (node.level - 1)]
                out.append((node.lineno, base[0]))
        elif isinstance(node, ast.Call) and (target := _dynamic_target(node)):
            # a relative name (import_module(".x", package)) stays inside its package
            out.append((node.lineno, parts[0] if target.startswith(".") and parts else target.split(".")[0]))
    return out


def violations(root: Path) -> list[str]:
    """Every import under ``root`` that crosses a layer the wrong way, as ``path:line imports pkg``."""
    found = []
    for package, banned in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            is_package = path.name == "__init__.py"
            module = ".".join(rel.with_suffix("").parts[:-1] if is_package else rel.with_suffix("").parts)
            for line, top in imported_packages(path.read_text(encoding="utf-8"), module, is_package=is_package):
                if top in banned or top == "..":
                    found.append(f"{rel}:{line} imports {top}")
    return found


def test_the_tree_keeps_its_layers():
    for package in FORBIDDEN:
        assert len(list((ROOT / package).rglob("*.py"))) >= 5, f"{package}/ moved: the boundary test would check nothing"
    assert violations(ROOT) == []


@pytest.mark.parametrize("source,module,expected", [
    ("import vineyard.writer", "edgespec.cli", ["vineyard"]),
    ("from vineyard import fieldnote", "edgespec.api", ["vineyard"]),
    ("def f():\n    from fieldlog_app.app import FieldlogApp", "edgespec.engine", ["fieldlog_app"]),
    ("import importlib\nimportlib.import_module('vineyard.writer')", "edgespec.plugins", ["importlib", "vineyard"]),
    ("__import__('fieldlog_app')", "vineyard.writer", ["fieldlog_app"]),
    ("from .. import EdgespecError", "edgespec.drafters.history", ["edgespec"]),
    ("from ..spans import Span", "edgespec.drafters.base", ["edgespec"]),
    ("from . import FieldNoteError", "vineyard.fieldnote", ["vineyard"]),
    ("from ... import x", "edgespec.drafters.base", [".."]),
])
def test_imports_are_resolved(source, module, expected):
    assert sorted(top for _, top in imported_packages(source, module)) == expected


def test_a_planted_import_is_caught(tmp_path):
    for package in FORBIDDEN:
        (tmp_path / package / "sub").mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text('"""clean"""\n')
    (tmp_path / "edgespec" / "fine.py").write_text("from . import x\nimport numpy\n")
    (tmp_path / "vineyard" / "fine.py").write_text("from edgespec.api import open_generator\n")
    assert violations(tmp_path) == []
    (tmp_path / "edgespec" / "sub" / "lazy.py").write_text("def f():\n    import vineyard.pests\n")
    (tmp_path / "vineyard" / "app.py").write_text("x = 1\nfrom fieldlog_app.database import Store\n")
    (tmp_path / "vineyard" / "__init__.py").write_text("from .. import fieldlog_app\n")
    assert violations(tmp_path) == [
        "edgespec/sub/lazy.py:2 imports vineyard",
        "vineyard/__init__.py:1 imports ..",
        "vineyard/app.py:2 imports fieldlog_app",
    ]


def test_the_runtime_ships_no_domain_data():
    """Sample notes, template reports and catalogs live in the domain package, not in edgespec/."""
    root = Path(__file__).resolve().parents[1] / "edgespec"
    data = [p.relative_to(root) for p in root.rglob("*") if p.suffix in {".txt", ".jsonl"} or p.name.endswith("catalog.json")]
    assert data == []
