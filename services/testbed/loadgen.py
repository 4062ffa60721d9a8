"""The testbed's load generator: the timeline, the co-runners and the ``/infer`` requests, one at a time.

Every pass walks the phases; a phase sets the telemetry service's emulated scenario (``PUT /scenario``:
the RSSI timeline) and starts or stops the co-runners that really run on the edge's CPUs
(``services.common.corunners``). Each request goes to every policy in turn, in a rotating order, so
that every policy meets the same conditions at the same moment (a shared, noisy host drifts; pairing
is what makes them comparable) and the learning ones (AutoScale, the static-best baselines, the
predictors) all learn from the same passes. AutoScale explores in the training passes and exploits
in the last one (``PUT /policy/exploration``), which is the comparison.

Requests carry a real input tensor (base64 in JSON), so its bytes really cross HTTP to the runner
that executes it; bodies are encoded once per (workload, policy), so the generator itself costs the
host little (telemetry counts it as co-runner load: it is not a mesh process).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from services.common.corunners import CoRunners, CoRunnerSpec
from services.common.tensors import encode, synthetic
from services.common.zoo import input_specs
from services.core.schemas import InferResponse
from services.testbed.models import CoRunner, Phase, Record, Stage, TestbedPlan, Workload

REQUEST_TIMEOUT_S = 120.0  # generous: a weak link's emulated transfer of an image takes about half a second


def corunner_specs(kind: CoRunner, cpus: list[int]) -> list[CoRunnerSpec]:
    """A CPU co-runner burns each edge CPU; a memory co-runner streams on them."""
    if kind == "cpu":
        return [CoRunnerSpec("cpu", cpus=(c,)) for c in cpus]
    if kind == "mem":
        return [CoRunnerSpec("mem", cpus=tuple(cpus))]
    return []


def request_body(w: Workload, policy: str) -> bytes:
    body: dict[str, object] = {"model": w.model, "qos_ms": w.qos_ms, "policy": policy, "top_k": 1}
    if w.accuracy_min is not None:
        body["accuracy_min"] = w.accuracy_min
    specs = input_specs(w.model)
    tensors = {s.name: encode(synthetic(s, seed=1)).model_dump() for s in specs}
    if len(specs) == 1:
        body["input"] = next(iter(tensors.values()))
    else:
        body["inputs"] = tensors
    return json.dumps(body).encode()


@dataclass
class LoadGen:
    plan: TestbedPlan
    decider_url: str
    telemetry_url: str
    admin_token: str = ""  # for PUT /scenario and PUT /policy/exploration when the mesh guards its admin routes
    on_record: Callable[[Record], None] = lambda _r: None
    records: list[Record] = field(default_factory=list)
    corunner_pids: list[int] = field(default_factory=list)
    truncated: bool = False
    _bodies: dict[tuple[int, str], bytes] = field(default_factory=dict)
    _t0: float = 0.0

    def run(self) -> list[Record]:
        """Walk the whole plan (or until its time limit), then stop every co-runner it started."""
        p = self.plan
        self._bodies = {(i, pol): request_body(w, pol) for i, w in enumerate(p.workloads) for pol in p.policies}
        deadline = time.monotonic() + p.time_limit_s
        self._t0 = time.monotonic()
        running: CoRunners | None = None
        kind: CoRunner = "none"
        headers = {"authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False, headers=headers) as client:
            try:
                for pass_index in range(p.train_passes + 1):
                    stage: Stage = "train" if pass_index < p.train_passes else "eval"
                    if stage == "eval":
                        self._exploit(client)
                    for phase_index, phase in enumerate(p.phases):
                        self._scenario(client, phase.scenario)
                        if phase.corunner != kind:
                            if running is not None:
                                running.stop()
                            running, kind = self._start(phase.corunner), phase.corunner
                        if not self._phase(client, stage, pass_index, phase_index, phase, p.policies, deadline):
                            self.truncated = True
                            return self.records
            finally:
                if running is not None:
                    running.stop()
        return self.records

    def _start(self, kind: CoRunner) -> CoRunners | None:
        specs = corunner_specs(kind, self.plan.edge_cpus)
        if not specs:
            return None
        group = CoRunners(specs, max_s=self.plan.time_limit_s + 120).start()
        self.corunner_pids += group.pids()
        return group

    def _exploit(self, client: httpx.Client) -> None:
        """After the training passes AutoScale exploits what it learned (and keeps learning), as the
        simulator's test windows do: the comparison is of the trained policy, not of its exploration."""
        resp = client.put(f"{self.decider_url}/policy/exploration", json={"policy": "autoscale", "epsilon": 0.0})
        resp.raise_for_status()

    def _scenario(self, client: httpx.Client, name: str) -> None:
        resp = client.put(f"{self.telemetry_url}/scenario", json={"name": name})
        resp.raise_for_status()

    def _phase(
        self,
        client: httpx.Client,
        stage: Stage,
        pass_index: int,
        phase_index: int,
        phase: Phase,
        policies: list[str],
        deadline: float,
    ) -> bool:
        """Every request of one phase; False when the time limit stopped it."""
        for _ in range(phase.rounds):
            for wi, w in enumerate(self.plan.workloads):
                shift = len(self.records) % len(policies)
                for policy in policies[shift:] + policies[:shift]:
                    if time.monotonic() > deadline:
                        return False
                    rec = self._send(client, wi, w, policy)
                    rec = rec.model_copy(
                        update={
                            "stage": stage,
                            "pass_index": pass_index,
                            "phase": phase.name,
                            "phase_index": phase_index,
                            "scenario": phase.scenario,
                            "corunner": phase.corunner,
                        }
                    )
                    self.records.append(rec)
                    self.on_record(rec)
                    if self.plan.gap_s:
                        time.sleep(self.plan.gap_s)
        return True

    def _send(self, client: httpx.Client, wi: int, w: Workload, policy: str) -> Record:
        base = Record(
            seq=len(self.records),
            t_s=time.monotonic() - self._t0,
            stage="eval",
            pass_index=0,
            phase="",
            phase_index=0,
            scenario="",
            corunner="none",
            policy=policy,
            model=w.model,
            ok=False,
        )
        try:
            resp = client.post(
                f"{self.decider_url}/infer",
                content=self._bodies[(wi, policy)],
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            return base.model_copy(update={"error": f"{type(exc).__name__}: {exc}"})
        if resp.status_code != 200:
            return base.model_copy(update={"error": f"HTTP {resp.status_code}: {resp.text[:300]}"})
        r = InferResponse.model_validate_json(resp.content)
        raw = r.state.raw
        return base.model_copy(
            update={
                "ok": True,
                "target_id": r.target_id,
                "runner": r.target.runner.value,
                "latency_ms": r.latency_ms,
                "target_latency_ms": r.target_latency_ms,
                "inference_ms": r.inference_ms,
                "transfer_ms": r.transfer_ms,
                "host_exec_ms": r.host_exec_ms,
                "energy_mj": r.energy_mj,
                "latency_source": r.latency_source,
                "energy_source": r.energy_source,
                "qos_ms": r.qos_ms,
                "qos_met": r.qos_met,
                "accuracy_met": r.accuracy_met,
                "reward": r.reward,
                "explored": r.explored,
                "state_index": r.state.index,
                "co_cpu": raw.get("co_cpu", 0.0),
                "co_mem": raw.get("co_mem", 0.0),
                "rssi_wifi_dbm": raw.get("rssi_wifi_dbm", 0.0),
                "rssi_p2p_dbm": raw.get("rssi_p2p_dbm", 0.0),
            }
        )
