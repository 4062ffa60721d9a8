"""The work behind ``POST /infer``: one request, one pass.

``InferenceService.infer`` validates the inputs and the requested outputs against the model,
observes the state (Table I, from the in-memory telemetry snapshot), asks the policy, dispatches
to the chosen runner (falling back to another runner when one is down), works out the phone's
energy and the reward (eq. 5) and builds the answer. Neither the metrics nor the Q update are part
of the pass: ``infer`` returns them in its ``InferOutcome`` and the caller runs ``finish`` once the
response is sent. Both front doors (native ``/infer`` and the Open Inference Protocol) call the
same ``infer``; only their encodings differ. Each responsibility is one short method; nothing
here awaits anything but the runner. With tracing on, decide, dispatch and learn are
spans; ``learn`` also writes the opt-in decision log.

Every request has a deadline (``deadlines``): each dispatch is bounded by the time it leaves, a
hung runner's requests fall back to another runner in time, and a request whose deadline passes
is answered 504 naming ``deadline_ms``. A failed dispatch teaches the Q-table nothing: a runner
being down says nothing about what its target costs the phone in this state (the reward of eq. 5),
and outlier ejection already keeps the request path off it; the request's fallback, if served,
is learned as usual. Nothing is learned from a stale telemetry snapshot either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Annotated

from fastapi import Depends, Request

from services.common.errors import ApiError
from services.common.logging import log_event
from services.common.tensors import MissingInput, UnknownInput, UnknownOutput, check_against
from services.common.tracing import current_request, new_request_id, span
from services.core import costmodel
from services.core.decision_log import record_of
from services.core.errors import AutoScaleError
from services.core.policies import PolicyError
from services.core.policies.base import Decision, DecisionContext, Outcome, Policy
from services.core.policies.splits import SplitActions
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
from services.core.state import state_bins_and_labels, state_index
from services.decider.deadlines import Deadline, DeadlinePolicy
from services.decider.deps import Decider
from services.decider.dispatch_errors import DeadlineExceeded, RunnersExhausted
from services.decider.metrics import decider_metrics
from services.decider.plans import PinnedPlanPolicy, PlanExecutor, PlanRun, pinned_plan, plan_accuracy
from services.decider.runners import RunnerRejected, RunnerUnavailable

log = logging.getLogger("autoscale.decider.inference")
PINNED = PinnedPlanPolicy()


class NoTarget(AutoScaleError):
    """No healthy runner offers a target for the model."""

    status = 503
    code = "no_target"


class AccuracyUnreachable(AutoScaleError):
    """``accuracy_min`` is above every offered target's expected accuracy."""

    status = 422
    code = "accuracy_unreachable"


@dataclass(frozen=True, slots=True)
class LearnStep:
    """The Q update of one served request, applied after the response is sent."""

    policy: Policy
    ctx: DecisionContext
    decision: Decision
    outcome: Outcome
    reward: float
    response: InferResponse | None = None  # what the client got: the decision log's record
    stale: bool = False  # the state came from a stale telemetry snapshot: not learned
    fell_back: bool = False  # a plan whose rest ran elsewhere (``plans``): not the chosen action, not learned


@dataclass(frozen=True, slots=True)
class InferOutcome:
    response: InferResponse
    learn: LearnStep
    record: Callable[[], None]  # the request's metrics
    runner_s: float  # round trip of the runner call that served it (for Server-Timing)


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
        s = decider.settings
        self.deadlines = DeadlinePolicy(
            qos_factor=s.deadline_qos_factor,
            min_s=s.deadline_min_ms / 1e3,
            max_s=s.deadline_max_ms / 1e3,
            hop_share=s.hop_timeout_share,
            hop_max_s=s.run_timeout_s,
        )
        self.plans = PlanExecutor(decider.runners, decider.mesh, self.deadlines)
        # AutoScale's partitioned actions (services.core.policies.splits), when the setting asks for them
        self.splits = SplitActions(decider.mesh, s.partition_actions) if s.partition_actions > 0 else None

    async def infer(self, req: InferRequest) -> InferOutcome:
        """One pass: inputs, policy, state, decision, dispatch, assessment, metrics, answer.
        Any deliberate error is counted (by registered model only) and re-raised for the handler."""
        t_start = time.perf_counter()
        t_deadline = time.monotonic()
        try:
            info = self.d.models.get(req.model)
            inputs = self.inputs(req, info)
            self.check_outputs(req, info)
            policy_name: str = req.policy or self.d.settings.policy
            policy = self.d.policies.get(policy_name)  # UnknownPolicy names the field
            snap = self.d.telemetry.current()
            qos_ms = req.qos_ms or (STREAMING_QOS_MS if req.streaming else self.d.settings.qos_ms_default)
            deadline = self.deadlines.start(t_deadline, req.deadline_ms, qos_ms)
            ctx = self.observe(req, info, snap, qos_ms, policy_name)
            policy, policy_name, decision = self.choose(req, info, policy, policy_name, ctx)
            run_req = RunRequest(
                model=info.name,
                target=decision.target,
                inputs=inputs,
                synthetic=req.synthetic,
                conditions=snap.conditions,
                top_k=req.top_k,
                outputs=req.outputs,
                output_format=req.output_format,
            )
            t_run = time.perf_counter()
            plan_run = None
            if decision.plan is None:
                ctx, decision, result = await self.dispatch(policy, ctx, decision, run_req, deadline)
            else:
                plan_run = await self.plans.run(decision.plan, ctx.candidates, run_req, snap, deadline)
                result = plan_run.result
            runner_s = time.perf_counter() - t_run
        except RunnerRejected as exc:
            self.count_error(req, exc)
            raise as_sent(exc, req, info) from None
        except AutoScaleError as exc:
            self.count_error(req, exc)
            raise
        a = self.assess(req, ctx, decision, result, snap, qos_ms, plan_run)
        outcome = Outcome(latency_s=a.latency_s, energy_j=a.energy_j, accuracy=a.accuracy)
        latency_s = time.perf_counter() - t_start
        response = self.respond(info, policy_name, ctx, decision, result, a, snap, qos_ms, latency_s)
        response.state = self.with_freshness(response.state, snap)
        response.deadline_ms = deadline.budget_ms
        fell_back = plan_run is not None and plan_run.fell_back
        if plan_run is not None:
            response.plan = plan_run.report
            response.target_id = decision.action_id
        step = LearnStep(policy, ctx, decision, outcome, a.reward, response, response.state.stale, fell_back)
        record = partial(self.record, info, policy_name, decision, result, a, latency_s)
        return InferOutcome(response, step, record, runner_s)

    def count_error(self, req: InferRequest, exc: AutoScaleError) -> None:
        # Label by registered model only: arbitrary client strings must not become series.
        model = req.model if req.model in self.d.models.names() else "unknown"
        decider_metrics.observe_error(model=model, policy=req.policy or self.d.settings.policy, code=exc.code)

    async def finish(self, outcome: InferOutcome) -> None:
        """Once the response is sent: the request's metrics, then the Q update."""
        outcome.record()
        await self.learn(outcome.learn)

    async def learn(self, step: LearnStep) -> None:
        """The Q update (async: a background task on the loop, never a threadpool hop), none from a
        stale state, whose Table I bins may no longer be the device's; then the decision log's line
        when one is kept (queued for its writer thread)."""
        if step.stale:
            decider_metrics.learning_skipped("stale_telemetry")
        elif step.fell_back:
            decider_metrics.learning_skipped("plan_fallback")
        else:
            with span("learn"):
                step.policy.learn(step.ctx, step.decision, step.outcome, step.reward)
        r = step.response
        if r is None:
            return
        if self.d.decision_log is not None and not step.stale:
            self.d.decision_log.write(record_of(step.ctx, step.outcome, r, self.d.settings.edge_device, time.time()))
        if log.isEnabledFor(logging.DEBUG):  # one line per request, with its request id and trace
            log_event(log, "infer", logging.DEBUG, model=r.model, target=r.target_id, reward=r.reward, stale=step.stale)

    def with_freshness(self, view: StateView, snap: TelemetrySnapshot) -> StateView:
        """The state's staleness and the age of each reading, as of this decision."""
        tel = self.d.telemetry
        if tel.snapshot is None:
            view.stale = True
            return view
        age = tel.age_s
        view.stale = tel.is_stale(age)
        view.age_s = age
        view.ages_s = {k: r.age_s + age for k, r in snap.readings.items()}
        return view

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

    @staticmethod
    def check_outputs(req: InferRequest, info: ModelInfo) -> None:
        """Every requested output must exist (422 naming ``outputs``). A model whose catalog entry
        lists no outputs is left to the runner, which knows its session's."""
        known = [o.name for o in info.outputs]
        for name in req.outputs or ():
            if known and name not in known:
                raise UnknownOutput(
                    f"{info.name} has no output named {name!r}; its outputs: {', '.join(known)}", field="outputs"
                )

    def observe(
        self, req: InferRequest, info: ModelInfo, snap: TelemetrySnapshot, qos_ms: float, policy: str = ""
    ) -> DecisionContext:
        """The decision context: Table I state, QoS target and the targets that may serve the model
        (for AutoScale with ``partition_actions``, its split actions too)."""
        candidates = self.d.runners.candidates(info)
        if not candidates:
            down = self.d.runners.down()
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
        if self.splits is not None and policy == "autoscale" and info.cut_points and req.plan is None:
            candidates = self.splits.extend(info.name, info.features, info.cut_points, candidates, qos_ms / 1e3)
        return DecisionContext(
            model=info.name,
            features=info.features,
            conditions=snap.conditions,
            state=state_index(info.features, snap.conditions),
            candidates=candidates,
            qos_s=qos_ms / 1000.0,
            accuracy_min=req.accuracy_min,
            oracle=self.d.oracle(info.features, snap.conditions, candidates),
            cuts=info.cut_points,
        )

    def choose(
        self, req: InferRequest, info: ModelInfo, policy: Policy, name: str, ctx: DecisionContext
    ) -> tuple[Policy, str, Decision]:
        """The policy's decision, or the plan the client pinned (policy "plan": decides and learns nothing)."""
        if req.plan is not None:
            plan = pinned_plan(req.plan, info, ctx.candidates)
            return PINNED, PINNED.name, Decision(plan.parts[0].target, plan=plan)
        with span("decide", state=ctx.state):
            return policy, name, self.decide(policy, ctx)

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
        self, policy: Policy, ctx: DecisionContext, decision: Decision, run_req: RunRequest, deadline: Deadline
    ) -> tuple[DecisionContext, Decision, RunResult]:
        """Run on the chosen target; if its runner fails (down, hung, 5xx), decide again among the
        others. Each retry drops a runner, so there is at most one try per runner, and each try is
        bounded by the time the deadline leaves it (a share of it on a first try that could fall
        back; see ``deadlines``); when that time is gone the answer is 504. A runner's refusal of
        the input (``RunnerRejected``) is the client's error and goes back to it as it came."""
        failed: dict[Location, str] = {}
        for _ in range(len(Location)):
            now = time.monotonic()
            runner = decision.target.runner
            # From the end: candidates come by runner, edge's many targets first (an edge target's
            # check stops at the first cloud one instead of walking every edge target).
            fallback = any(
                c.target.runner is not runner and c.target.runner not in failed for c in reversed(ctx.candidates)
            )
            timeout = deadline.hop_timeout(now, first=not failed, fallback_left=fallback)
            if timeout <= 0:
                raise DeadlineExceeded(deadline, failed)
            try:
                with span("dispatch", target=decision.target.id):
                    result = await self.d.runners.run(
                        decision.target,
                        run_req.model_copy(update={"target": decision.target, "deadline_ms": timeout * 1e3}),
                        timeout,
                        blame_timeout=self.deadlines.blames(timeout),
                    )
                return ctx, decision, result
            except RunnerUnavailable as exc:
                failed[runner] = exc.reason
            # A whole-network fallback: split actions (AUTOSCALE_PARTITION_ACTIONS) are not re-offered.
            rest = tuple(c for c in ctx.candidates if c.target.runner not in failed and c.plan is None)
            if not rest:
                break
            ctx = replace(ctx, candidates=rest)
            decision = self.decide(policy, ctx, failed)
        if deadline.hop_timeout(time.monotonic(), first=False, fallback_left=False) <= 0:
            raise DeadlineExceeded(deadline, failed)  # the last runner ran out of time
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
        plan_run: PlanRun | None = None,
    ) -> _Assessment:
        """The phone's energy, the target's latency and accuracy, the reward and the QoS verdicts."""
        if plan_run is not None:  # the parts that ran, summed (services.decider.plans)
            energy_j, energy_source = plan_run.energy_j, plan_run.energy_source
            accuracy = plan_accuracy(plan_run.report, ctx.candidates)
        else:
            energy_j, energy_source = self.phone_energy(result, snap)
            # Policies return the candidate's own Target object: identity avoids building 66 id strings.
            found = next((c.accuracy for c in ctx.candidates if c.target is decision.target and c.plan is None), None)
            accuracy = (
                found
                if found is not None
                else next(c.accuracy for c in ctx.candidates if c.target.id == decision.target.id and c.plan is None)
            )
        latency_s = result.inference_s + result.tx_s + result.rx_s
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
            target=decision.target.id if decision.plan is None else f"plan:{decision.plan.route}",
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
        rc = current_request()  # bound by the request-context middleware (X-Request-ID, traceparent)
        return InferResponse(
            request_id=rc.request_id if rc is not None else new_request_id(),
            trace_id=rc.trace_id if rc is not None else None,
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
            state=state_view(ctx.state, snap, info),
            explored=decision.explored,
            device=result.device,
            outputs=result.outputs,
        )


def as_sent(exc: RunnerRejected, req: InferRequest, info: ModelInfo) -> RunnerRejected:
    """A runner's refusal of an input, with the field named as the client sent it.

    The runner names every tensor ``inputs.<name>``; a client that sent a one-input model's tensor
    as ``input`` reads ``input`` (the runner decodes the bytes, so it is the one that finds data
    that is not base64, or NaN and infinities)."""
    prefix = f"inputs.{info.inputs[0].name}" if info.inputs else ""
    if req.input is None or len(info.inputs) != 1 or not exc.field or not exc.field.startswith(prefix):
        return exc
    exc.field = "input" + exc.field[len(prefix) :]
    exc.message = exc.message.replace(prefix, "input")
    return exc


def state_view(index: int, snap: TelemetrySnapshot, info: ModelInfo) -> StateView:
    c = snap.conditions
    f = info.features
    bins, labels = state_bins_and_labels(index)
    return StateView(
        index=index,
        bins=bins,
        labels=labels,
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
