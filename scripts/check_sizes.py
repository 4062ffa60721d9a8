"""Fail when a module is too long to hold in one's head, or a function is and its docstring does not say why.

Limits (the developers' guide): a module at most 600 lines; a function (or method, nested ones included) at most
80 lines, from its ``def`` to its last line, unless a line of its docstring starts with ``Long because`` and
gives the reason. Usage: ``python scripts/check_sizes.py [PATH ...]`` (default: the code folders); prints one
``path:line: message`` per finding and exits 1 when there is any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
REASON_MARKER = "Long because"
DEFAULT_PATHS = ("services", "bench", "scripts", "tests")


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def states_reason(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """True when a line of the function's docstring starts with the marker (after indentation)."""
    doc = ast.get_docstring(fn) or ""
    return any(line.strip().startswith(REASON_MARKER) for line in doc.splitlines())


def check_source(path: Path, source: str) -> Iterator[Finding]:
    """The findings in one module's source."""
    n_lines = len(source.splitlines())
    if n_lines > MAX_MODULE_LINES:
        yield Finding(path, 1, f"module has {n_lines} lines (limit {MAX_MODULE_LINES}): split it")
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        span = (node.end_lineno or node.lineno) - node.lineno + 1
        if span > MAX_FUNCTION_LINES and not states_reason(node):
            yield Finding(
                path,
                node.lineno,
                f"function {node.name} has {span} lines (limit {MAX_FUNCTION_LINES}): "
                f"split it, or start a docstring line with {REASON_MARKER!r} and the reason",
            )


def python_files(paths: list[Path]) -> Iterator[Path]:
    """Every .py file under the given files and folders, in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(path.rglob("*.py"))
        else:
            yield path


def main(argv: list[str]) -> int:
    findings = [
        finding
        for path in python_files([Path(arg) for arg in argv or DEFAULT_PATHS])
        for finding in check_source(path, path.read_text(encoding="utf-8"))
    ]
    for finding in findings:
        print(finding)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
