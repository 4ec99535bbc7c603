"""Reading the package's source as Python's ``ast`` sees it (tests/test_layout.py,
tests/core/test_protocol.py)."""

from __future__ import annotations

import ast

__all__ = ["docstring_ids"]


def docstring_ids(tree: ast.AST) -> set[int]:
    """The ``id`` of each docstring's ``Constant`` node in ``tree`` (the module's, each
    class's and each function's): the strings that only document."""
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
