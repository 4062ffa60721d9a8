"""POST /infer: observe, decide, dispatch, reward, answer; learn after the response is sent."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

from fastapi import APIRouter, BackgroundTasks

from services.common.errors import ApiError
from services.common.tensors import check_against
from services.core import costmodel
from services.core.policies import PolicyError
from services.core.policies.base import Decision, DecisionContext, Outcome, Policy
from services.core.reward import reward
from services.core.schemas import (
    STREAMING_QOS_MS,
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
from services.decider.deps import Decider, DeciderDep
from services.decider.metrics import decider_metrics
from services.decider.runners import RunnerRejected, RunnerUnavailable

router = APIRouter(tags=["inference"])


def _inputs(req: InferRequest, info: ModelInfo) -> dict[str, TensorPayload] | None:
    """Validate the client's tensors against the model's input spec (422 naming the expected spec)."""
    if req.synthetic:
        return None
    given = dict(req.inputs or {})
    if req.input is not None:
        if len(info.inputs) != 1 and not given:
            names = ", ".join(s.name for s in info.inputs)
            raise ApiError(
                422,
                "missing_input",
                f"{info.name} has {len(info.inputs)} inputs ({names}): send them in `inputs`",
                field="inputs",
            )
        given.setdefault(info.inputs[0].name, req.input)
    if not given:
        raise ApiError(422, "missing_input", "send `input` (or `inputs`), or set `synthetic: true`", field="input")
    for spec in info.inputs:
        if spec.name not in given:
            raise ApiError(
                422, "missing_input", f"inputs.{spec.name} is required by {info.name}", field=f"inputs.{spec.name}"
            )
        field = "input" if req.input is not None and len(info.inputs) == 1 else f"inputs.{spec.name}"
        check_against(given[spec.name], spec, field)
    unknown = set(given) - {s.name for s in info.inputs}
    if unknown:
        raise ApiError(
            422,
            "unknown_input",
            f"{info.name} has no input named {sorted(unknown)[0]!r}",
            field=f"inputs.{sorted(unknown)[0]}",
        )
    return given


def _state_view(bins: StateBins, snap: TelemetrySnapshot, info: ModelInfo) -> StateView:
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


def _phone_energy(d: Decider, result: RunResult, snap: TelemetrySnapshot) -> tuple[float, str]:
    """The phone's energy: the edge runner's own figure for local targets, eq. 4 for remote ones."""
    if result.target.runner == Location.edge:
        return result.device_energy_j, result.energy_source
    joules = costmodel.phone_energy(
        d.mesh.edge, result.target, result.inference_s, result.tx_s, result.rx_s, snap.conditions
    )
    return joules, "modelled"


def _decide(policy: Policy, ctx: DecisionContext, d: Decider, failed: dict[Location, str] | None = None) -> Decision:
    try:
        return policy.decide(ctx, d.rng)
    except PolicyError as exc:
        down = "; ".join(f"{role.value} runner: {why}" for role, why in (failed or {}).items())
        raise ApiError(exc.status, exc.code, str(exc) + (f" ({down})" if down else ""), field="policy") from exc


async def _dispatch(
    d: Decider, policy: Policy, ctx: DecisionContext, decision: Decision, run_req: RunRequest
) -> tuple[DecisionContext, Decision, RunResult]:
    """Run on the chosen target; if its runner is down, decide again among the others (bounded)."""
    failed: dict[Location, str] = {}
    while True:
        try:
            result = await d.runners.run(decision.target, run_req.model_copy(update={"target": decision.target}))
            return ctx, decision, result
        except RunnerUnavailable as exc:
            failed[decision.target.runner] = exc.reason
        except RunnerRejected as exc:
            err = exc.body.get("error") if isinstance(exc.body.get("error"), dict) else {}
            raise ApiError(
                exc.status,
                str(err.get("code", "runner_error")),
                str(err.get("message", exc.body)),  # type: ignore[union-attr]
                field=err.get("field"),
            ) from exc  # type: ignore[union-attr]
        rest = tuple(c for c in ctx.candidates if c.target.runner not in failed)
        if not rest:
            detail = "; ".join(f"{role.value} runner: {why}" for role, why in failed.items())
            raise ApiError(
                503,
                "runner_unavailable",
                f"no runner could execute the request ({detail})",
                runners=[r.value for r in failed],
            )
        ctx = replace(ctx, candidates=rest)
        decision = _decide(policy, ctx, d, failed)


@router.post("/infer", response_model=InferResponse)
async def infer(req: InferRequest, d: DeciderDep, background: BackgroundTasks) -> InferResponse:
    try:
        return await _infer(req, d, background)
    except ApiError as exc:
        # Label by registered model only: arbitrary client strings must not become series.
        model = req.model if req.model in d.models.names() else "unknown"
        decider_metrics.observe_error(model=model, policy=req.policy or d.settings.policy, code=exc.code)
        raise


async def _infer(req: InferRequest, d: DeciderDep, background: BackgroundTasks) -> InferResponse:
    t_start = time.perf_counter()
    info = d.models.get(req.model)
    inputs = _inputs(req, info)
    policy_name = req.policy or d.settings.policy
    try:
        policy = d.policies.get(policy_name)
    except PolicyError as exc:
        raise ApiError(exc.status, exc.code, str(exc), field="policy") from exc

    snap = d.telemetry.current()
    state = state_index(info.features, snap.conditions)
    qos_ms = req.qos_ms or (STREAMING_QOS_MS if req.streaming else d.settings.qos_ms_default)
    candidates = d.runners.candidates(info)
    if not candidates:
        down = [f"{r.role.value}: {r.last_error or 'no targets'}" for r in d.runners.runners.values() if not r.healthy]
        raise ApiError(
            503,
            "no_target",
            f"no healthy runner can execute {info.name}" + (f" (down: {'; '.join(down)})" if down else ""),
            field="model",
        )
    if d.settings.accuracy_masking and req.accuracy_min is not None:
        if not any(c.accuracy >= req.accuracy_min for c in candidates):
            best = max(c.accuracy for c in candidates)
            raise ApiError(
                422,
                "accuracy_unreachable",
                f"no target reaches accuracy_min={req.accuracy_min:g} % for {info.name} (best expected {best:g} %)",
                field="accuracy_min",
            )

    ctx = DecisionContext(
        model=info.name,
        features=info.features,
        conditions=snap.conditions,
        state=state,
        candidates=candidates,
        qos_s=qos_ms / 1000.0,
        accuracy_min=req.accuracy_min,
        oracle=d.oracle(info.features, snap.conditions, candidates),
    )
    t_dec = time.perf_counter()
    decision = _decide(policy, ctx, d)
    decider_metrics.observe_decision(time.perf_counter() - t_dec)

    run_req = RunRequest(
        model=info.name,
        target=decision.target,
        inputs=inputs,
        synthetic=req.synthetic,
        conditions=snap.conditions,
        top_k=req.top_k,
    )
    ctx, decision, result = await _dispatch(d, policy, ctx, decision, run_req)

    energy_j, energy_source = _phone_energy(d, result, snap)
    target_latency_s = result.inference_s + result.tx_s + result.rx_s
    # Policies return the candidate's own Target object: identity avoids building 66 id strings.
    accuracy = next((c.accuracy for c in ctx.candidates if c.target is decision.target), None)
    if accuracy is None:
        accuracy = next(c.accuracy for c in ctx.candidates if c.target.id == decision.target.id)
    acc_entry = info.precisions[decision.target.precision]
    r = reward(
        energy_mj=energy_j * 1e3,
        latency_ms=target_latency_s * 1e3,
        accuracy=accuracy,
        qos_ms=qos_ms,
        accuracy_min=req.accuracy_min,
        weights=d.reward_weights,
        mode=d.settings.reward_mode,
    )
    qos_met = target_latency_s * 1e3 < qos_ms
    accuracy_met = req.accuracy_min is None or accuracy >= req.accuracy_min
    outcome = Outcome(latency_s=target_latency_s, energy_j=energy_j, accuracy=accuracy)

    async def learn() -> None:  # after the response: the Q update never delays the client
        policy.learn(ctx, decision, outcome, r)

    background.add_task(learn)
    latency_s = time.perf_counter() - t_start
    decider_metrics.observe_request(
        model=info.name,
        target=decision.target.id,
        policy=policy_name,
        outcome="ok",
        latency_s=latency_s,
        inference_s=result.inference_s,
        transfer_s=result.tx_s + result.rx_s,
        energy_j=energy_j,
        reward=r,
        qos_met=qos_met,
        accuracy_met=accuracy_met,
        explored=decision.explored,
    )
    return InferResponse(
        request_id=uuid.uuid4().hex,
        model=info.name,
        policy=policy_name,
        target=decision.target,
        target_id=decision.target.id,
        latency_ms=latency_s * 1e3,
        target_latency_ms=target_latency_s * 1e3,
        latency_source=result.latency_source,
        inference_ms=result.inference_s * 1e3,
        transfer_ms=(result.tx_s + result.rx_s) * 1e3,
        host_exec_ms=result.host_exec_s * 1e3,
        energy_mj=energy_j * 1e3,
        energy_source=energy_source,  # type: ignore[arg-type]
        accuracy=accuracy,
        accuracy_source=acc_entry.source,
        qos_ms=qos_ms,
        qos_met=qos_met,
        accuracy_met=accuracy_met,
        reward=r,
        state=_state_view(StateBins.from_index(state), snap, info),
        explored=decision.explored,
        device=result.device,
        outputs=result.outputs,
    )
