"""How the report writes a number: "n/a" for a missing one (None or NaN), never a crash."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None or math.isnan(x) else fmt.format(x)


def pct(x: float | None, fmt: str = "{:.1f}") -> str:
    """A share (0..1) as a percentage, without the sign."""
    return "n/a" if x is None or math.isnan(x) else fmt.format(100.0 * x)


def diff(ours: float | None, paper: float, fmt: str = "{:+.2f}") -> str:
    return "n/a" if ours is None or math.isnan(ours) else fmt.format(ours - paper)


def verdict(x: float | None, pred: Callable[[float], bool]) -> str:
    """Whether ``x`` meets a target: "met", "NOT met", or "n/a" when it is missing."""
    return "n/a" if x is None or math.isnan(x) else ("met" if pred(x) else "NOT met")


def runs(v: dict[str, Any], key: str = "runs_to_converge") -> str:
    """A convergence run count, or how many runs it did not converge within."""
    r = v.get(key)
    return str(r) if r is not None else f"not within {len(v.get('gap', []))}"
