"""Executing a partitioned plan: part by part over the runners, the boundary tensors relayed by the
decider (which stands for the phone). Also: a plan a client pins in ``/infer``.

Each part is one ``POST /run`` with its ``partition``; its answer's boundary tensors (full tensors,
base64) are the next part's ``inputs``, passed on as they came (no decoding here: the next runner
checks them). Each dispatch is bounded by the time the request's deadline leaves it (``deadlines``):
until a part fails, each part gets ``hop_share`` of the time left, since a fallback could follow;
the fallback gets the rest.

What the phone pays (``PlanRun``): for a part on the phone, the edge runner's own figure (eqs. 1-3
on that part's MACs and layers); for a remote part, eq. 4 on the real boundary bytes it was sent and
sent back (``tx_s`` / ``rx_s`` as the runner emulated its link) plus idle power while it ran; for a
hand-off between two of one device's processors, the profile's copy cost (the phone's energy when
the device is the phone). The latency is the sum over the parts, transfers and copies included.

**Fallback.** When a part's runner fails (down, hung, 5xx), the rest of the network, from that
part's start to the outputs, runs as one part on a fallback target: the previous part's target
when there is one and its runner has not failed (the boundary tensors are on the phone already),
else the first offered whole-network target on a runner that has not failed, in the order edge,
cloud, peer, FP32 first, top DVFS step first. Each failure rules a runner out, so there are at
most three tries; none left is a 503 ``runner_unavailable``, a deadline passed a 504. A plan that
fell back is answered (``plan.fallback`` says what ran) but not learned from: what ran is not an
action of the policy's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.tracing import span
from services.core import costmodel
from services.core.partition import PartitionError, check_plan, copy_cost, needs_copy
from services.core.policies.base import Candidate, Decision, DecisionContext, Outcome
from services.core.policies.errors import PolicyError
from services.core.schemas import (
    EnergySource,
    Location,
    ModelInfo,
    OutputTensor,
    Partition,
    PartReport,
    Plan,
    PlanPart,
    PlanReport,
    PlanStep,
    Precision,
    RunRequest,
    RunResult,
    TelemetrySnapshot,
    TensorPayload,
)
from services.decider.deadlines import Deadline, DeadlinePolicy
from services.decider.dispatch_errors import DeadlineExceeded, RunnersExhausted
from services.decider.runners import RunnerRegistry, RunnerUnavailable

_FALLBACK_ORDER = {Location.edge: 0, Location.cloud: 1, Location.peer: 2}


@dataclass(frozen=True, slots=True)
class PlanRun:
    """An executed plan: the last part's outputs in a summed ``RunResult``, the report, the phone's cost."""

    result: RunResult
    report: PlanReport
    energy_j: float
    energy_source: EnergySource
    latency_s: float

    @property
    def fell_back(self) -> bool:
        return self.report.fallback is not None


def plan_accuracy(plan: Plan | PlanReport, candidates: Sequence[Candidate]) -> float:
    """A plan's expected accuracy: its least accurate part's (a part in INT8 costs the network INT8's)."""
    acc = {c.target.id: c.accuracy for c in candidates if c.plan is None}
    return min(acc.get(p.target.id, 0.0) for p in plan.parts)


def fallback_target(
    candidates: Sequence[Candidate], previous: PlanPart | None, failed: set[Location]
) -> Candidate | None:
    """Where the rest of a plan runs when a part's runner fails (module docstring)."""
    whole = [c for c in candidates if c.plan is None and c.target.runner not in failed]
    if previous is not None:
        same = [c for c in whole if c.target.id == previous.target.id]
        if same:
            return same[0]

    def rank(c: Candidate) -> tuple[int, int, int]:
        t = c.target
        return (
            _FALLBACK_ORDER[Location(t.runner)],
            t.precision != Precision.fp32,
            -(t.dvfs if t.dvfs is not None else 99),
        )

    return min(whole, key=rank, default=None)


def pinned_plan(steps: Sequence[PlanStep], info: ModelInfo, candidates: Sequence[Candidate]) -> Plan:
    """The plan a client pinned in ``/infer`` (``plan``): 422 naming ``plan.<k>.target`` for a target
    no healthy runner offers for the model, ``plan.<k>.end`` for a cut the model does not have."""
    offered = {c.target.id: c.target for c in candidates if c.plan is None}
    targets = []
    for k, step in enumerate(steps):
        t = offered.get(step.target)
        if t is None:
            raise PartitionError(
                f"target {step.target!r} is not offered for {info.name} by a healthy runner; see GET /targets",
                field=f"plan.{k}.target",
            )
        targets.append(t)
    for k, step in enumerate(steps[:-1]):
        if step.end is None:
            raise PartitionError(
                "only the last part runs to the outputs: name the cut this one ends at", field=f"plan.{k}.end"
            )
    if steps[-1].end is not None:
        raise PartitionError(
            "the last part runs to the outputs: its end must be null", field=f"plan.{len(steps) - 1}.end"
        )
    plan = Plan.split(targets, [s.end for s in steps[:-1] if s.end is not None])
    check_plan(info.cut_points, plan)
    return plan


class PinnedPlanPolicy:
    """The "policy" of a request that pins its plan: it decides nothing and learns nothing."""

    name = "plan"

    def decide(self, ctx: DecisionContext, rng: object) -> Decision:
        # Never asked: a pinned plan runs through PlanExecutor, whose fallback is its own; if a
        # caller ever asks, the client gets the policy error the decider maps, not a 500.
        raise PolicyError("policy 'plan' runs the pinned plan as given and decides nothing", field="plan")

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None:
        return None


def _boundary(outputs: Sequence[object]) -> dict[str, TensorPayload]:
    """A part's returned boundary tensors as the next part's inputs, unchanged (base64 as it came)."""
    out: dict[str, TensorPayload] = {}
    for o in outputs:
        if isinstance(o, OutputTensor):
            # model_construct: the runner made these; the next runner validates them as it parses its body
            out[o.name] = TensorPayload.model_construct(dtype=o.dtype, shape=o.shape, data_b64=o.data_b64)  # type: ignore[arg-type]
    return out


@dataclass
class PlanExecutor:
    runners: RunnerRegistry
    mesh: costmodel.Mesh
    deadlines: DeadlinePolicy

    async def run(
        self,
        plan: Plan,
        candidates: Sequence[Candidate],
        run_req: RunRequest,
        snap: TelemetrySnapshot,
        deadline: Deadline,
    ) -> PlanRun:
        """Run ``plan``'s parts in order, falling back as the module docstring says.

        Long because the part loop, its fallback and the bookkeeping of what ran share their state."""
        parts = list(plan.parts)
        results: list[tuple[PlanPart, RunResult]] = []
        failed: dict[Location, str] = {}
        note: str | None = None
        inputs = run_req.inputs
        k = 0
        while k < len(parts):
            part = parts[k]
            last = k == len(parts) - 1
            # Until a part fails, each gets a share of the time left (a fallback could follow); the fallback the rest.
            timeout = deadline.hop_timeout(time.monotonic(), first=not failed, fallback_left=True)
            if timeout <= 0:
                raise DeadlineExceeded(deadline, failed)
            req = run_req.model_copy(
                update={
                    "target": part.target,
                    "partition": None if part.partition.whole else part.partition,
                    "inputs": inputs,
                    "synthetic": run_req.synthetic and k == 0,
                    "deadline_ms": timeout * 1e3,
                    "outputs": run_req.outputs if last else None,
                    "output_format": run_req.output_format if last else "tensor",
                }
            )
            try:
                with span("dispatch", target=part.target.id, part=k):
                    res = await self.runners.run(
                        part.target, req, timeout, blame_timeout=self.deadlines.blames(timeout)
                    )
            except RunnerUnavailable as exc:
                failed[Location(part.target.runner)] = exc.reason
                fb = fallback_target(candidates, parts[k - 1] if k else None, set(failed))
                if fb is None:
                    if deadline.hop_timeout(time.monotonic(), first=False, fallback_left=False) <= 0:
                        raise DeadlineExceeded(deadline, failed) from None
                    raise RunnersExhausted(failed) from None
                start = part.partition.start
                parts[k:] = [PlanPart(target=fb.target, partition=Partition(start=start, end=None))]
                note = (
                    f"the {part.target.runner} runner failed ({exc.reason}); "
                    f"ran from {start or 'the input'} to the outputs on {fb.target.id}"
                )
                continue
            results.append((part, res))
            inputs = _boundary(res.outputs)
            k += 1
        return self._summed(plan, results, snap, note)

    def _summed(
        self, plan: Plan, results: list[tuple[PlanPart, RunResult]], snap: TelemetrySnapshot, note: str | None
    ) -> PlanRun:
        """Sum what the parts cost the phone and took (module docstring) into one result and a report."""
        cond = snap.conditions
        reports: list[PartReport] = []
        energy = latency = inference = tx = rx = host = 0.0
        sources: set[str] = set()
        for k, (part, res) in enumerate(results):
            copy_s = copy_j = 0.0
            if k and needs_copy(results[k - 1][0], part):
                copy_s, copy_j = copy_cost(self.mesh.profile_for(part.target.runner), res.input_bytes)
                copy_j = copy_j if part.target.runner == Location.edge else 0.0
                copy_j += self.mesh.edge.base_w * copy_s  # the phone stays on while any device copies
            if part.target.runner == Location.edge:
                e = res.device_energy_j
                sources.add(res.energy_source)
            else:
                e = costmodel.phone_energy(self.mesh.edge, res.target, res.inference_s, res.tx_s, res.rx_s, cond)
                sources.add("modelled")
            energy += e + copy_j
            inference += res.inference_s + copy_s
            tx, rx, host = tx + res.tx_s, rx + res.rx_s, host + res.host_exec_s
            latency += copy_s + res.tx_s + res.inference_s + res.rx_s
            reports.append(
                PartReport(
                    target=res.target,
                    target_id=res.target.id,
                    start=part.partition.start,
                    end=part.partition.end,
                    device=res.device,
                    inference_ms=res.inference_s * 1e3,
                    tx_ms=res.tx_s * 1e3,
                    rx_ms=res.rx_s * 1e3,
                    copy_ms=copy_s * 1e3,
                    input_bytes=res.input_bytes,
                    output_bytes=res.output_bytes,
                    energy_mj=(e + copy_j) * 1e3,
                    host_exec_ms=res.host_exec_s * 1e3,
                )
            )
        first, final = results[0][1], results[-1][1]
        measured = all(r.latency_source == "measured" for _, r in results)
        result = RunResult.model_construct(
            model=final.model,
            target=first.target,
            device=">".join(dict.fromkeys(r.device for _, r in results)),
            outputs=final.outputs,
            inference_s=inference,
            tx_s=tx,
            rx_s=rx,
            host_exec_s=host,
            device_energy_j=energy,
            energy_source="measured" if sources == {"measured"} else "modelled",
            latency_source="measured" if measured else "modelled",
            input_bytes=first.input_bytes,
            output_bytes=final.output_bytes,
        )
        report = PlanReport(id=plan.id, parts=reports, fallback=note)
        source: EnergySource = "measured" if sources == {"measured"} else "modelled"
        return PlanRun(result, report, energy, source, latency)
