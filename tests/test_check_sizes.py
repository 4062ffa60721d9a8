"""The size gate (scripts/check_sizes.py): what it reports, what a stated reason lets through, its exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.check_sizes import MAX_FUNCTION_LINES, MAX_MODULE_LINES, check_source


def _function(name: str, body_lines: int, docstring: str = "One line.") -> str:
    body = "".join(f"    x{i} = {i}\n" for i in range(body_lines))
    return f'def {name}() -> None:\n    """{docstring}"""\n{body}'


def test_long_function_is_reported_with_its_line_and_length() -> None:
    source = "import os\n\n\n" + _function("too_long", MAX_FUNCTION_LINES)
    findings = list(check_source(Path("m.py"), source))
    assert [(f.line, "too_long" in f.message, f"{MAX_FUNCTION_LINES + 2} lines" in f.message) for f in findings] == [
        (4, True, True)
    ]


def test_function_at_the_limit_and_one_with_a_stated_reason_pass() -> None:
    at_limit = _function("at_limit", MAX_FUNCTION_LINES - 2)
    reasoned = _function("reasoned", 2 * MAX_FUNCTION_LINES, "Sum.\n\n    Long because: one table of cases.\n    ")
    assert list(check_source(Path("m.py"), at_limit + "\n\n" + reasoned)) == []


def test_nested_and_async_functions_are_checked() -> None:
    inner = _function("inner", MAX_FUNCTION_LINES).replace("\n", "\n    ")
    source = f"async def outer() -> None:\n    {inner}\n"
    names = sorted(f.message.split()[1] for f in check_source(Path("m.py"), source))
    assert names == ["inner", "outer"]


def test_long_module_is_reported() -> None:
    source = "x = 0\n" * (MAX_MODULE_LINES + 1)
    assert [f.line for f in check_source(Path("m.py"), source)] == [1]


def test_script_exits_1_on_a_finding_and_0_without(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_sizes.py"
    (tmp_path / "ok.py").write_text(_function("short", 3))
    clean = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60)
    (tmp_path / "bad.py").write_text(_function("long", MAX_FUNCTION_LINES))
    dirty = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert (clean.returncode, clean.stdout) == (0, "")
    assert dirty.returncode == 1 and dirty.stdout.startswith(f"{tmp_path / 'bad.py'}:1: function long has")
