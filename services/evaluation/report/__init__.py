"""report.md: an evaluation's numbers set beside the paper's, section by section.

``prose`` writes the opening (what was run, the variants, the definitions), ``tables`` the
tables, ``explain`` why a target or a paper ratio is missed; ``paper`` holds the paper's numbers
and ``fmt`` how a number is written. The numbers themselves come from ``services.evaluation.summary``.
"""

from __future__ import annotations

from typing import Any

from services.evaluation.report import prose, tables
from services.evaluation.report.explain import explain, notes
from services.evaluation.report.partition import report_lines as partition_lines
from services.evaluation.summary import VARIANTS

__all__ = ["render"]


def _figures(figures: dict[str, str]) -> list[str]:
    return ["\n## Figures\n", *(f"- {key}: ![{key}]({path})" for key, path in figures.items())]


def render(res: dict[str, Any], figures: dict[str, str]) -> str:
    """The whole report as markdown, from results.json's document and the figures' paths."""
    s = res["summary"]
    variants = [v for v in VARIANTS if v in s.get("all", {}).get("policies", {})]
    lines = [
        *prose.setup(res),
        *prose.variants(res["config"]),
        *prose.definitions(res["config"]),
        *tables.headline_table(res, variants),
        *tables.improvement_tables(s),
        *partition_lines(res.get("partition")),
        "\n## Why the remaining targets are out of reach\n",
        *explain(res),
        *tables.per_policy(s, variants),
        *tables.selection_table(s),
        *tables.accuracy_targets_table(res),
        *tables.convergence_table(res),
        *_figures(figures),
        "\n## Notes on the paper's ratios\n",
        *notes(res),
    ]
    return "\n".join(lines) + "\n"
