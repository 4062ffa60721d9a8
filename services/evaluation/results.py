"""The contract of ``results.json``: what ``autoscale evaluate`` writes (docs/results.schema.json).

``write_outputs`` validates the evaluation's document against ``EvaluationResults`` and writes the
model's dump, so a results file always matches the published schema. Every object is closed
(``extra="forbid"``): a key the schema does not know fails the write instead of slipping through.
Means over nothing (no case of a group, a zero baseline) are ``null``. Nested mappings are keyed
by device, scenario, network and policy names, as the type aliases below say.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.evaluation.config import EvalConfig


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


# ----------------------------------------------------------------------------- per case


class AggSummary(_Closed):
    """One policy's test inferences in one case: means per inference and choice counts."""

    n: int
    """test inferences"""
    energy_mj: float
    """mean measured phone energy"""
    latency_ms: float
    qos_violation: float
    """share of inferences at or over the QoS target"""
    accuracy: float
    """mean expected top-1 of the chosen targets (%)"""
    reward: float
    prediction_accuracy: float
    """share of choices equal to Opt's"""
    category_accuracy: float
    """share of choices in Opt's target category (Fig. 13's categories)"""
    reward_oracle_accuracy: float
    """share of choices equal to the argmax of the expected reward"""
    reward_oracle_is_opt: float
    """share of inferences where that argmax is Opt's choice"""
    tie_accuracy: float
    """share of choices within 1 % of Opt's expected energy and QoS-feasible whenever Opt's is"""
    qos_expected_miss: float
    """share of choices missing QoS in expectation where Opt's meets it"""
    expected_energy_mj: float
    opt_expected_energy_mj: float
    choices: dict[str, int]
    """target category -> count"""
    opt_choices: dict[str, int]


class CaseResult(AggSummary):
    """A policy on one (device, scenario, held-out network) of the main experiment."""

    opt_energy_mj: float
    """Opt's mean measured energy on the same inferences"""


PerCase = dict[str, dict[str, dict[str, dict[str, CaseResult]]]]  # device -> scenario -> network -> policy


class Timing(_Closed):
    wall_s: float
    fold_cpu_s: float
    decisions: int
    decisions_per_s: float | None
    cpu_s: float | None = None
    """this process and its workers"""


class NoiseFloor(_Closed):
    """How close Opt's runner-up is, over the measured test inferences of a scenario."""

    n: int
    lt1: int
    """runner-up within 1 % of Opt's energy"""
    lt_sigma: int
    """within the outcome noise's sigma"""
    lt_half_sigma: int


# ----------------------------------------------------------------------------- summaries


class PolicyStats(_Closed):
    """A policy over a group of cases (services.evaluation.summary.group_stats)."""

    ppw_norm: float | None
    """mean performance per watt normalised to Edge (CPU FP32)"""
    qos_violation: float | None
    energy_mj: float | None
    prediction_accuracy: float | None
    category_accuracy: float | None
    reward_oracle_accuracy: float | None
    reward_oracle_is_opt: float | None
    tie_accuracy: float | None
    cases: int


class Gaps(_Closed):
    """A policy's gap to Opt, averaged over (device, scenario)."""

    energy_gap_pct: float | None
    qos_gap_pp: float | None
    cases: int


class GroupSummary(_Closed):
    policies: dict[str, PolicyStats]
    per_device: dict[str, dict[str, PolicyStats]]
    gaps: Gaps
    """the configured AutoScale's"""
    gaps_by_policy: dict[str, Gaps]
    improvement_by_policy: dict[str, dict[str, float | None]]
    """AutoScale variant -> baseline -> PPW ratio"""
    improvement: dict[str, float | None]
    """the configured AutoScale's PPW ratio over each baseline"""


class Summary(_Closed):
    static_scenarios: list[str]
    dynamic_scenarios: list[str]
    static: GroupSummary | None = None
    dynamic: GroupSummary | None = None
    all: GroupSummary | None = None
    selection_static: dict[str, dict[str, dict[str, float]]]
    """Fig. 13: device -> policy -> target category -> share (%)"""
    selection_dynamic: dict[str, dict[str, dict[str, float]]]


# ----------------------------------------------------------------------------- extra studies


class ConvergenceCurve(_Closed):
    """Fig. 14: one device learnt run by run (services.evaluation.convergence.convergence_curve)."""

    reward: list[float]
    gap: list[float]
    energy_gap: list[float]
    qos_miss: list[float]
    runs_to_converge: int | None
    runs_to_converge_strict: int | None
    runs_to_converge_reward: int | None
    reward_stable_run: int | None


class TransferCurve(ConvergenceCurve):
    entries_copied: int
    """Q entries initialised from the source device's table"""


class VariantConvergence(_Closed):
    scratch: dict[str, ConvergenceCurve]
    transfer: dict[str, TransferCurve]


class Convergence(_Closed):
    scenarios: list[str]
    tolerance: float
    source: str
    """the device whose table is transferred"""
    variants: dict[str, VariantConvergence]
    scratch: dict[str, ConvergenceCurve]
    """the configured AutoScale's (also under variants)"""
    transfer: dict[str, TransferCurve]


# ----------------------------------------------------------------------------- the document


class PartitionRow(_Closed):
    """The partitioning contenders in one scenario or group (services.evaluation.partitioning)."""

    ppw_norm: dict[str, float | None]
    """policy -> mean PPW normalised to Edge (CPU FP32)"""
    qos_violation: dict[str, float | None]
    ratios: dict[str, float | None]
    """"a/b" -> a's mean normalised PPW over b's"""


class PartitionStudy(_Closed):
    """AutoScale vs NeuroSurgeon and MOSAIC, and AutoScale with split actions, per scenario."""

    paper: dict[str, float]
    """the paper's PPW ratio of AutoScale over each (Sec. VI-A)"""
    groups: dict[str, PartitionRow]
    """static / dynamic / all"""
    scenarios: dict[str, PartitionRow]
    networks: dict[str, PartitionRow]
    """each network over every device and scenario"""


class EvaluationResults(_Closed):
    """results.json: the evaluation's configuration, per-case results, summaries and extra studies."""

    config: EvalConfig
    models: list[str]
    per_case: PerCase
    """the adapted test window"""
    per_case_cold: PerCase
    """the cold-start test window"""
    timing: Timing
    noise_floor: dict[str, NoiseFloor]
    """scenario -> sums over devices and networks"""
    state_sharing: dict[str, list[str]]
    """network -> the others with the same Table I NN bins"""
    summary: Summary
    summary_cold: Summary
    convergence: Convergence | None = None
    accuracy_targets: dict[str, dict[str, dict[str, AggSummary]]] | None = None
    """device -> accuracy target ("none", "50", ...) -> policy"""
    accuracy_refused: dict[str, list[str]] | None = None
    """accuracy target -> networks no target can serve at it"""
    partition: PartitionStudy | None = None
    """the partitioning contenders, when evaluated"""
    figures: dict[str, str] = Field(default_factory=dict)
    """figure title -> file name beside results.json"""


def jsonable(x: Any) -> Any:
    """NaN and infinities become null (JSON has neither); mapping keys become strings."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def build_results(doc: dict[str, Any]) -> EvaluationResults:
    """Validate an evaluation's document (as ``evaluate`` returns it, plus ``figures``)."""
    return EvaluationResults.model_validate(jsonable(doc))


def dump_results(results: EvaluationResults) -> dict[str, Any]:
    """The JSON object to write: only the keys the evaluation produced (an optional study that did
    not run stays absent, not null)."""
    return results.model_dump(mode="json", exclude_unset=True)


def results_json_schema() -> dict[str, object]:
    """The published JSON schema of results.json (docs/results.schema.json)."""
    return EvaluationResults.model_json_schema()
