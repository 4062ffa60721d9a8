"""report.md: the protocol's honest figures first, then everything beside the paper's.

``headline`` writes the leading tables (cold leave-one-out first, then the learning curves, the
phones and groups, PPW, the comparators), ``prose`` what was run, simulated, hidden and tuned,
``tables`` the per-policy, selection, accuracy-target and convergence tables, ``studies`` the
sections of the studies behind ``--study``; ``paper`` holds the paper's numbers and the targets,
``fmt`` how a number is written. The numbers come from ``services.evaluation.summary``.
"""

from __future__ import annotations

from typing import Any

from services.evaluation.report import headline, prose, studies, tables
from services.evaluation.summary import VARIANTS

__all__ = ["render"]


def _figures(figures: dict[str, str]) -> list[str]:
    return [
        "\n## Figures\n",
        "Produced by the command above (`autoscale evaluate`), beside this report.\n",
        *(f"- {key}: ![{key}]({path})" for key, path in figures.items()),
    ]


def render(res: dict[str, Any], figures: dict[str, str]) -> str:
    """The whole report as markdown, from results.json's document and the figures' paths."""
    s = res["summary"]
    variants = [v for v in VARIANTS if v in s.get("all", {}).get("policies", {})]
    st = res.get("studies") or {}
    lines = [
        *prose.setup(res),
        *headline.headline_table(res),
        *headline.curve_table(res),
        *headline.groups_table(res),
        *headline.ppw_table(res),
        *headline.predictor_table(res),
        *prose.protocol(res),
        *prose.definitions(),
        *tables.per_policy(s, variants),
        *tables.selection_table(s),
        *tables.convergence_table(res),
        *tables.accuracy_targets_table(res),
        *studies.sweep_section(st),
        *studies.world_sections(st, s),
        *studies.swap_section(st),
        *studies.overhead_section(st),
        *_figures(figures),
    ]
    return "\n".join(lines) + "\n"
