"""The work behind ``POST /infer``: one request, one pass.

``InferenceService.infer`` validates the inputs against the model, observes the state (Table I,
from the in-memory telemetry snapshot), asks the policy, dispatches to the chosen runner (falling
back to another runner when one is down), works out the phone's energy and the reward (eq. 5),
records the metrics and builds the answer. The Q update is not part of the pass: ``infer``
returns it as a ``LearnStep`` that the route schedules after the response (``learn``).
Each responsibility is one short method; nothing here awaits anything but the runner.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import Depends, Request

from services.common.errors import ApiError
from services.common.tensors import MissingInput, UnknownInput, check_against
from services.core import costmodel
from services.core.errors import AutoScaleError
from services.core.policies import PolicyError
from services.core.policies.base import Decision, DecisionContext, Outcome, Policy
from services.core.reward import reward
from services.core.schemas import (
    STREAMING_QOS_MS,
    EnergySource,
    InferRequest,
    InferResponse,
    Location,
    ModelInfo,
    RunRequest,
    RunResult,
    StateView,
    TelemetrySnapshot,
    TensorPayload,
)
from services.core.state import StateBins, state_index
from services.decider.deps import Decider
from services.decider.metrics import decider_metrics
from services.decider.runners import RunnerUnavailable


class NoTarget(AutoScaleError):
    """No healthy runner offers a target for the model."""

    status = 503
    code = "no_target"


class AccuracyUnreachable(AutoScaleError):
    """``accuracy_min`` is above every offered target's expected accuracy."""

    status = 422
    code = "accuracy_unreachable"


class RunnersExhausted(AutoScaleError):
    """Every runner the decision fell back to was down."""

    status = 503
    code = "runner_unavailable"

    def __init__(self, failed: dict[Location, str]) -> None:
        detail = "; ".join(f"{role.value} runner: {why}" for role, why in failed.items())
        super().__init__(f"no runner could execute the request ({detail})", runners=[r.value for r in failed])


@dataclass(frozen=True, slots=True)
class LearnStep:
    """The Q update of one served request, applied after the response is sent."""

    policy: Policy
    ctx: DecisionContext
    decision: Decision
    outcome: Outcome
    reward: float


@dataclass(frozen=True, slots=True)
class InferOutcome:
    response: InferResponse
    learn: LearnStep


@dataclass(slots=True)
class _Assessment:
    """What the served placement cost the phone and what it is worth (eq. 5)."""

    energy_j: float
    energy_source: EnergySource
    latency_s: float  # the target's: inference + transfers
    accuracy: float
    reward: float
    qos_met: bool
    accuracy_met: bool


class InferenceService:
    """Serves ``/infer`` for one decider (its catalog, runners, telemetry, policies)."""

    def __init__(self, decider: Decider) -> None:
        self.d = decider

    async def infer(self, req: InferRequest) -> InferOutcome:
        """One pass: inputs, policy, state, decision, dispatch, assessment, metrics, answer.
        Any deliberate error is counted (by registered model only) and re-raised for the handler."""
        t_start = time.perf_counter()
        try:
            info = self.d.models.get(req.model)
            inputs = self.inputs(req, info)
            policy_name = req.policy or self.d.settings.policy
            policy = self.d.policies.get(policy_name)  # UnknownPolicy names the field
            snap = self.d.telemetry.current()
            qos_ms = req.qos_ms or (STREAMING_QOS_MS if req.streaming else self.d.settings.qos_ms_default)
            ctx = self.observe(req, info, snap, qos_ms)
            decision = self.decide(policy, ctx)
            run_req = RunRequest(
                model=info.name,
                target=decision.target,
                inputs=inputs,
                synthetic=req.synthetic,
                conditions=snap.conditions,
                top_k=req.top_k,
            )
            ctx, decision, result = await self.dispatch(policy, ctx, decision, run_req)
        except AutoScaleError as exc:
            # Label by registered model only: arbitrary client strings must not become series.
            model = req.model if req.model in self.d.models.names() else "unknown"
            decider_metrics.observe_error(model=model, policy=req.policy or self.d.settings.policy, code=exc.code)
            raise
        a = self.assess(req, ctx, decision, result, snap, qos_ms)
        outcome = Outcome(latency_s=a.latency_s, energy_j=a.energy_j, accuracy=a.accuracy)
        latency_s = time.perf_counter() - t_start
        self.record(info, policy_name, decision, result, a, latency_s)
        response = self.respond(info, policy_name, ctx, decision, result, a, snap, qos_ms, latency_s)
        return InferOutcome(response, LearnStep(policy, ctx, decision, outcome, a.reward))

    async def learn(self, step: LearnStep) -> None:
        """The Q update (async: a background task on the loop, never a threadpool hop)."""
        step.policy.learn(step.ctx, step.decision, step.outcome, step.reward)

    # ------------------------------------------------------------------ before the decision

    @staticmethod
    def inputs(req: InferRequest, info: ModelInfo) -> dict[str, TensorPayload] | None:
        """Validate the client's tensors against the model's input spec (422 naming the expected spec)."""
        if req.synthetic:
            return None
        given = dict(req.inputs or {})
        if req.input is not None:
            if len(info.inputs) != 1 and not given:
                names = ", ".join(s.name for s in info.inputs)
                raise MissingInput(
                    f"{info.name} has {len(info.inputs)} inputs ({names}): send them in `inputs`", field="inputs"
                )
            given.setdefault(info.inputs[0].name, req.input)
        if not given:
            raise MissingInput("send `input` (or `inputs`), or set `synthetic: true`", field="input")
        for spec in info.inputs:
            if spec.name not in given:
                raise MissingInput(f"inputs.{spec.name} is required by {info.name}", field=f"inputs.{spec.name}")
            field = "input" if req.input is not None and len(info.inputs) == 1 else f"inputs.{spec.name}"
            check_against(given[spec.name], spec, field)
        unknown = sorted(set(given) - {s.name for s in info.inputs})
        if unknown:
            raise UnknownInput(f"{info.name} has no input named {unknown[0]!r}", field=f"inputs.{unknown[0]}")
        return given

    def observe(self, req: InferRequest, info: ModelInfo, snap: TelemetrySnapshot, qos_ms: float) -> DecisionContext:
        """The decision context: Table I state, QoS target and the targets that may serve the model."""
        candidates = self.d.runners.candidates(info)
        if not candidates:
            runners = self.d.runners.runners.values()
            down = [f"{r.role.value}: {r.last_error or 'no targets'}" for r in runners if not r.healthy]
            raise NoTarget(
                f"no healthy runner can execute {info.name}" + (f" (down: {'; '.join(down)})" if down else ""),
                field="model",
            )
        floor = req.accuracy_min
        if self.d.settings.accuracy_masking and floor is not None and not any(c.accuracy >= floor for c in candidates):
            best = max(c.accuracy for c in candidates)
            raise AccuracyUnreachable(
                f"no target reaches accuracy_min={floor:g} % for {info.name} (best expected {best:g} %)",
                field="accuracy_min",
            )
        return DecisionContext(
            model=info.name,
            features=info.features,
            conditions=snap.conditions,
            state=state_index(info.features, snap.conditions),
            candidates=candidates,
            qos_s=qos_ms / 1000.0,
            accuracy_min=req.accuracy_min,
            oracle=self.d.oracle(info.features, snap.conditions, candidates),
        )

    # ------------------------------------------------------------------ decision and dispatch

    def decide(self, policy: Policy, ctx: DecisionContext, failed: dict[Location, str] | None = None) -> Decision:
        """The policy's choice (timed); its refusal is answered naming the policy and the runners down."""
        t0 = time.perf_counter()
        try:
            decision = policy.decide(ctx, self.d.rng)
        except PolicyError as exc:
            down = "; ".join(f"{role.value} runner: {why}" for role, why in (failed or {}).items())
            raise ApiError(exc.status, exc.code, str(exc) + (f" ({down})" if down else ""), field="policy") from exc
        if failed is None:
            decider_metrics.observe_decision(time.perf_counter() - t0)
        return decision

    async def dispatch(
        self, policy: Policy, ctx: DecisionContext, decision: Decision, run_req: RunRequest
    ) -> tuple[DecisionContext, Decision, RunResult]:
        """Run on the chosen target; if its runner is down, decide again among the others. Each retry
        drops a runner, so there is at most one try per runner. A runner's refusal of the input
        (``RunnerRejected``) is the client's error and goes back to it as it came."""
        failed: dict[Location, str] = {}
        for _ in range(len(Location)):
            try:
                result = await self.d.runners.run(
                    decision.target, run_req.model_copy(update={"target": decision.target})
                )
                return ctx, decision, result
            except RunnerUnavailable as exc:
                failed[decision.target.runner] = exc.reason
            rest = tuple(c for c in ctx.candidates if c.target.runner not in failed)
            if not rest:
                break
            ctx = replace(ctx, candidates=rest)
            decision = self.decide(policy, ctx, failed)
        raise RunnersExhausted(failed)

    # ------------------------------------------------------------------ after the run

    def assess(
        self,
        req: InferRequest,
        ctx: DecisionContext,
        decision: Decision,
        result: RunResult,
        snap: TelemetrySnapshot,
        qos_ms: float,
    ) -> _Assessment:
        """The phone's energy, the target's latency and accuracy, the reward and the QoS verdicts."""
        energy_j, energy_source = self.phone_energy(result, snap)
        latency_s = result.inference_s + result.tx_s + result.rx_s
        # Policies return the candidate's own Target object: identity avoids building 66 id strings.
        accuracy = next((c.accuracy for c in ctx.candidates if c.target is decision.target), None)
        if accuracy is None:
            accuracy = next(c.accuracy for c in ctx.candidates if c.target.id == decision.target.id)
        r = reward(
            energy_mj=energy_j * 1e3,
            latency_ms=latency_s * 1e3,
            accuracy=accuracy,
            qos_ms=qos_ms,
            accuracy_min=req.accuracy_min,
            weights=self.d.reward_weights,
            mode=self.d.settings.reward_mode,
        )
        accuracy_met = req.accuracy_min is None or accuracy >= req.accuracy_min
        return _Assessment(energy_j, energy_source, latency_s, accuracy, r, latency_s * 1e3 < qos_ms, accuracy_met)

    def phone_energy(self, result: RunResult, snap: TelemetrySnapshot) -> tuple[float, EnergySource]:
        """The phone's energy: the edge runner's own figure for local targets, eq. 4 for remote ones."""
        if result.target.runner == Location.edge:
            return result.device_energy_j, result.energy_source
        joules = costmodel.phone_energy(
            self.d.mesh.edge, result.target, result.inference_s, result.tx_s, result.rx_s, snap.conditions
        )
        return joules, "modelled"

    @staticmethod
    def record(
        info: ModelInfo, policy: str, decision: Decision, result: RunResult, a: _Assessment, latency_s: float
    ) -> None:
        decider_metrics.observe_request(
            model=info.name,
            target=decision.target.id,
            policy=policy,
            outcome="ok",
            latency_s=latency_s,
            inference_s=result.inference_s,
            transfer_s=result.tx_s + result.rx_s,
            energy_j=a.energy_j,
            reward=a.reward,
            qos_met=a.qos_met,
            accuracy_met=a.accuracy_met,
            explored=decision.explored,
        )

    @staticmethod
    def respond(
        info: ModelInfo,
        policy: str,
        ctx: DecisionContext,
        decision: Decision,
        result: RunResult,
        a: _Assessment,
        snap: TelemetrySnapshot,
        qos_ms: float,
        latency_s: float,
    ) -> InferResponse:
        return InferResponse(
            request_id=uuid.uuid4().hex,
            model=info.name,
            policy=policy,
            target=decision.target,
            target_id=decision.target.id,
            latency_ms=latency_s * 1e3,
            target_latency_ms=a.latency_s * 1e3,
            latency_source=result.latency_source,
            inference_ms=result.inference_s * 1e3,
            transfer_ms=(result.tx_s + result.rx_s) * 1e3,
            host_exec_ms=result.host_exec_s * 1e3,
            energy_mj=a.energy_j * 1e3,
            energy_source=a.energy_source,
            accuracy=a.accuracy,
            accuracy_source=info.precisions[decision.target.precision].source,
            qos_ms=qos_ms,
            qos_met=a.qos_met,
            accuracy_met=a.accuracy_met,
            reward=a.reward,
            state=state_view(StateBins.from_index(ctx.state), snap, info),
            explored=decision.explored,
            device=result.device,
            outputs=result.outputs,
        )


def state_view(bins: StateBins, snap: TelemetrySnapshot, info: ModelInfo) -> StateView:
    c = snap.conditions
    f = info.features
    return StateView(
        index=bins.index,
        bins=bins.as_dict(),
        labels=bins.labels(),
        raw={
            "conv": f.conv,
            "fc": f.fc,
            "rc": f.rc,
            "macs": f.macs,
            "co_cpu": c.co_cpu,
            "co_mem": c.co_mem,
            "rssi_wifi_dbm": c.rssi_wifi_dbm,
            "rssi_p2p_dbm": c.rssi_p2p_dbm,
        },
        sources={k: r.source for k, r in snap.readings.items()},
    )


async def get_inference(request: Request) -> InferenceService:  # async: a sync dependency costs a threadpool hop
    return request.app.state.inference


InferenceDep = Annotated[InferenceService, Depends(get_inference)]
