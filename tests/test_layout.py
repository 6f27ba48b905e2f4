"""The rules of the house, read off the source: which package may import which, and no module
reaching into another's private names (a test or a script that needs one is asking for a seam)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IMPORTS = [  # package, what it must never import
    ("hermes", ("tiny", "app", "analysis", "gradio")),
    ("app", ("analysis", "tiny")),
    ("analysis", ("app", "tiny")),
]
# transformers' own config field, the documented way to switch a model's attention; torch's
# weight-only int8 matmul, which has no public name (torchao calls it the same way): hermes.quant
FOREIGN_PRIVATE = {"_attn_implementation", "_weight_int8pack_mm"}


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
    return names


@pytest.mark.parametrize("package, banned", FORBIDDEN_IMPORTS)
def test_imports_flow_one_way(package, banned):
    for path in sources(package):
        for name in imported(ast.parse(path.read_text())):
            assert name.split(".")[0] not in banned, f"{path.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize("package", ["tests", "analysis", "app", "tiny", "hermes"])
def test_no_module_reaches_into_another_objects_private_names(package):
    """`x._name` is fine only on self / cls (a class's own state); anything else needs a public seam."""
    for path in sources(package):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            assert owner in ("self", "cls") or node.attr in FOREIGN_PRIVATE, (
                f"{path.relative_to(ROOT)}:{node.lineno} uses {ast.unparse(node)}")
