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
    opt_qos_violation: float
    """Opt's share of QoS violations on the same inferences"""
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
    gaps_by_device: dict[str, Gaps]
    """the configured AutoScale's gaps on each phone"""


class Headline(_Closed):
    """AutoScale's default on the protocol's headline: cold leave-one-network-out (no inference of
    the held-out network before scoring), held-out seeds, every reported phone and scenario."""

    protocol: str
    """always "cold-loo\""""
    energy_gap_pct: float | None
    qos_gap_pp: float | None
    exact_action_accuracy: float | None
    """share of decisions equal to Opt's (DVFS step included)"""
    category_accuracy: float | None
    """share of decisions in Opt's Fig. 13 category"""
    informed_exact_action_accuracy: float | None
    """the same for Opt (informed): Opt's rule on the most a decider could learn of the hidden world
    before its first inference of a network (null when opt-informed did not run)"""
    informed_category_accuracy: float | None
    """Opt (informed)'s category accuracy: a reference for category_accuracy, not a bound"""
    runs_to_converge: float | None
    """from scratch, mean over phones (convergence study); null if not run or a phone did not converge"""


class Summary(_Closed):
    static_scenarios: list[str]
    dynamic_scenarios: list[str]
    held_out_scenarios: list[str]
    """scenarios outside Table IV (the held-out trace, users' files)"""
    static: GroupSummary | None = None
    dynamic: GroupSummary | None = None
    held_out: GroupSummary | None = None
    all: GroupSummary | None = None
    headline: Headline | None = None
    """the main window's summary only"""
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


# ----------------------------------------------------------------------------- protocol and studies


class SettingRow(_Closed):
    setting: str
    value: float | str | bool | int | None
    """the value, or per phone the values, the learner was evaluated with"""
    chosen_on: str


class WorldSpec(_Closed):
    sigma: float
    """log-sd of every device's hidden deviations from its profile"""
    estimator_sigma: float
    """log-sd of the phone energy estimator's hidden bias"""
    noise_sigma: float
    """log-sd of one run's noise around the true expected cost"""


class Protocol(_Closed):
    """What is reported on, what is hidden from the policies, what each setting was chosen on."""

    headline: str
    headline_policy: str
    """the learner ``summary.headline`` reports"""
    seeds: list[int]
    """the held-out seeds reported"""
    tuning_seeds: list[int]
    tuning_devices: list[str]
    held_out_devices: list[str]
    held_out_scenarios: list[str]
    windows: list[str]
    world: WorldSpec
    settings: list[SettingRow]
    headline_by_seed: dict[str, Gaps]
    """the headline's gaps on each seed alone"""


class CurvePoint(_Closed):
    online_runs: int
    energy_gap_pct: float | None
    qos_gap_pp: float | None
    exact_action_accuracy: float | None
    category_accuracy: float | None


class PredictorError(_Closed):
    mape_pct: float | None
    n: float


class WindowSummaries(_Closed):
    summary: Summary
    summary_online: dict[str, Summary] | None = None


class SweepRotation(_Closed):
    held_out_device: str
    tuned_on: list[str]
    chosen: float
    tuning_score: float | None
    held_out_score: float | None


class SweepSetting(_Closed):
    values: list[float]
    default: float
    scores: dict[str, dict[str, float | None]]
    """value -> tuning device -> energy gap (%) + QoS gap (pp)"""
    rotations: list[SweepRotation]


class Sweep(_Closed):
    seeds: list[int]
    devices: list[str]
    criterion: str
    settings: dict[str, SweepSetting]


class SwapRow(_Closed):
    energy_gap_pct: float | None
    qos_gap_pp: float | None


class OverheadDevice(_Closed):
    core_power_w: float
    inference_energy_mj: float | None
    exploit_uj: float
    train_uj: float
    exploit_share_pct: float | None
    train_share_pct: float | None


class Overhead(_Closed):
    source: str
    per_device: dict[str, OverheadDevice]


class Studies(_Closed):
    """The studies behind ``--study`` (each optional)."""

    sigma0: WindowSummaries | None = None
    """the same grid in the profiles' own world (no hidden deviations)"""
    streaming: WindowSummaries | None = None
    """vision QoS 1/30 s (30 FPS, Fig. 10)"""
    sweep: Sweep | None = None
    swap: dict[str, SwapRow] | None = None
    """learner variant -> cold gaps (the paper's learner with one part swapped, and the reverse)"""
    overhead: Overhead | None = None


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
    protocol: Protocol
    per_case: PerCase
    """the cold window (the headline), merged over the held-out seeds"""
    per_case_online: dict[str, PerCase]
    """online inferences of the held-out network before the window ("10", "30", "100") -> per case"""
    timing: Timing
    noise_floor: dict[str, NoiseFloor]
    """scenario -> sums over devices and networks"""
    state_sharing: dict[str, list[str]]
    """network -> the others with the same Table I NN bins"""
    summary: Summary
    """the cold window's"""
    summary_online: dict[str, Summary] | None = None
    learning_curve: dict[str, list[CurvePoint]]
    """learner -> its gaps and accuracies after 0, 10, 30, 100 online inferences"""
    predictor_errors: dict[str, dict[str, PredictorError]]
    """window -> LR/SVR/BO -> MAPE of their predictions"""
    convergence: Convergence | None = None
    accuracy_targets: dict[str, dict[str, dict[str, AggSummary]]] | None = None
    """device -> accuracy target ("none", "50", ...) -> policy"""
    accuracy_refused: dict[str, list[str]] | None = None
    """accuracy target -> networks no target can serve at it"""
    partition: PartitionStudy | None = None
    """the partitioning contenders, when evaluated"""
    studies: Studies | None = None
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
