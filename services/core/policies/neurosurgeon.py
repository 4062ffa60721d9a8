"""NeuroSurgeon (Kang et al., ASPLOS 2017) as a policy: split a network at a layer boundary between
the phone and the cloud, chosen per request from the current bandwidth. Pure.

What the paper does, and how it maps here:

* **Per-layer-type regressions, fitted offline on profiling data.** NeuroSurgeon profiles layers
  of each type on the mobile device and on the server, and fits a regression per type from a
  layer's configuration to its latency (and, on the mobile, its energy). Here the profiling data
  are single layers of each type (CONV, FC, RC) with MACs drawn log-uniformly, timed and
  metered by the device profile's per-layer cost (``costmodel``: MACs / throughput + the type's
  fixed cost, at the target's clock) with lognormal measurement noise, plus empty runs for the
  per-inference launch cost; a ``LinearRegression`` (scikit-learn) per type maps MACs to
  latency and to energy. A stretch of layers is predicted as the sum over its layers, i.e.
  ``a_T * n_T + b_T * MACs_T`` per type (the cut points carry the counts and MACs by type).
* **Split chosen per request from the current bandwidth.** The Wi-Fi RSSI the phone observes gives
  the uplink / downlink goodput and radio power from the profile's link curves (what NeuroSurgeon
  measures directly). Candidate splits: all on the phone, all in the cloud, and every cut point.
* **Two modes**, as in the paper: ``energy`` minimises the phone's predicted energy among the
  splits predicted to meet the QoS target (none does: the fastest), ``latency`` minimises the
  predicted latency.

The phone side runs on one processor at its top DVFS step (NeuroSurgeon treats the mobile device as
one processor; its prototype used the mobile GPU): the GPU in FP32 where the network is offered
there, else the CPU in FP32; the server side on the cloud GPU (else its CPU) in FP32. Nothing is
learned online: co-runner interference, which the regressions never saw, is invisible to it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from services.core import costmodel
from services.core.costmodel import Mesh
from services.core.policies.base import Candidate, Decision, DecisionContext, Outcome
from services.core.policies.errors import NoCandidate, OracleUnavailable
from services.core.profiles import DeviceProfile
from services.core.schemas import (
    CutPoint,
    LayerCounts,
    Location,
    ModelFeatures,
    Plan,
    Precision,
    Processor,
    RuntimeConditions,
    Target,
)

Mode = Literal["energy", "latency"]
TYPES = ("conv", "fc", "rc")


@dataclass(frozen=True, slots=True)
class NeuroSurgeonParams:
    mode: Mode = "energy"
    samples_per_type: int = 200  # profiled layers of each type, per processor
    noise_sigma: float = 0.1  # lognormal sigma of the profiling measurements
    seed: int = 0


@dataclass(frozen=True, slots=True)
class LayerModel:
    """One processor's fitted regressions: per type, latency (s) and energy (J) = a + b * MACs."""

    latency: dict[str, tuple[float, float]]
    energy: dict[str, tuple[float, float]]
    launch_s: float
    launch_j: float

    def predict(self, counts: LayerCounts) -> tuple[float, float]:
        """(seconds, joules) of a stretch of layers: the sum of its layers' predictions."""
        t, e = self.launch_s, self.launch_j
        for ty in TYPES:
            n, m = getattr(counts, ty), getattr(counts, f"{ty}_macs")
            if n or m:
                a, b = self.latency[ty]
                t += a * n + b * m
                a, b = self.energy[ty]
                e += a * n + b * m
        return max(t, 0.0), max(e, 0.0)


def _one_layer(ty: str, macs: int) -> ModelFeatures:
    return ModelFeatures(conv=ty == "conv", fc=ty == "fc", rc=ty == "rc", macs=macs)


def fit_layer_model(profile: DeviceProfile, target: Target, params: NeuroSurgeonParams) -> LayerModel:
    """Profile single layers of each type on ``target`` (the profile's costs x lognormal noise) and fit
    a linear regression per type (scikit-learn): NeuroSurgeon's offline step."""
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(params.seed)
    idle = RuntimeConditions(co_cpu=0.0, co_mem=0.0)
    launch = costmodel.inference_time(profile, ModelFeatures(conv=0, fc=0, rc=0, macs=0), target, idle)
    noisy = rng.lognormal(-0.5 * params.noise_sigma**2, params.noise_sigma, 32) * launch
    launch_s = float(noisy.mean())
    launch_j = costmodel.device_energy(profile, target, launch_s, idle)
    lat: dict[str, tuple[float, float]] = {}
    en: dict[str, tuple[float, float]] = {}
    for ty in TYPES:
        macs = np.exp(rng.uniform(math.log(1e5), math.log(2e9), params.samples_per_type)).astype(np.int64)
        t = np.array([costmodel.inference_time(profile, _one_layer(ty, int(m)), target, idle) for m in macs]) - launch
        t = t * rng.lognormal(-0.5 * params.noise_sigma**2, params.noise_sigma, len(t))
        e = np.array([costmodel.device_energy(profile, target, float(x), idle) for x in t])
        x = macs.reshape(-1, 1).astype(float)
        fl, fe = LinearRegression().fit(x, t), LinearRegression().fit(x, e)
        lat[ty] = (float(fl.intercept_), float(fl.coef_[0]))
        en[ty] = (float(fe.intercept_), float(fe.coef_[0]))
    return LayerModel(lat, en, launch_s, launch_j)


def counts_between(features: ModelFeatures, cuts: Sequence[CutPoint], start: int, end: int) -> LayerCounts:
    """Counts of the stretch from position ``start`` to ``end`` (0 = input, k = after cut k-1,
    len(cuts)+1 = outputs). Without cuts, a network's MACs are split over its types by layer count."""

    def at(pos: int) -> LayerCounts:
        if pos == 0:
            return LayerCounts()
        if pos <= len(cuts):
            return cuts[pos - 1].before
        if cuts:
            last = cuts[-1]
            return LayerCounts(**{k: v + getattr(last.after, k) for k, v in last.before.model_dump().items()})
        n = max(features.conv + features.fc + features.rc, 1)
        share = {ty: features.macs * getattr(features, ty) // n for ty in TYPES}
        return LayerCounts(
            conv=features.conv,
            fc=features.fc,
            rc=features.rc,
            macs=features.macs,
            **{f"{t}_macs": share[t] for t in TYPES},
        )

    a, b = at(start), at(end)
    return LayerCounts(**{k: v - getattr(a, k) for k, v in b.model_dump().items()})


def _top(cands: Sequence[Candidate], runner: Location, proc: Processor) -> Candidate | None:
    pool = [
        c
        for c in cands
        if c.plan is None
        and c.target.runner == runner
        and c.target.processor == proc
        and c.target.precision == Precision.fp32
    ]
    return max(pool, key=lambda c: -1 if c.target.dvfs is None else c.target.dvfs, default=None)


def endpoints(cands: Sequence[Candidate]) -> tuple[Candidate | None, Candidate | None]:
    """NeuroSurgeon's phone target (GPU FP32 at the top step, else CPU FP32) and server target
    (cloud GPU FP32, else cloud CPU FP32) among the offered candidates."""
    phone = _top(cands, Location.edge, Processor.gpu) or _top(cands, Location.edge, Processor.cpu)
    server = _top(cands, Location.cloud, Processor.gpu) or _top(cands, Location.cloud, Processor.cpu)
    return phone, server


@dataclass(frozen=True, slots=True)
class Split:
    cut: int  # 0: all in the cloud; k: after cut k-1; len(cuts)+1: all on the phone
    latency_s: float
    energy_j: float


@dataclass
class NeuroSurgeonPolicy:
    """The split per request (module docstring); regressions fitted once per target, lazily."""

    mesh: Mesh | None
    # not ``params``: that name declares an ExploringPolicy (base.py), and this one never explores
    config: NeuroSurgeonParams = field(default_factory=NeuroSurgeonParams)
    name: str = "neurosurgeon"
    _models: dict[str, LayerModel] = field(default_factory=dict, repr=False)
    _plans: dict[tuple[str, str, str], Plan] = field(default_factory=dict, repr=False)
    _stretch_memo: dict[tuple[str, int, int, str, str], list[tuple[int, float, float, float, int]]] = field(
        default_factory=dict, repr=False
    )

    def _model(self, target: Target) -> LayerModel:
        m = self._models.get(target.id)
        if m is None:
            assert self.mesh is not None
            m = self._models[target.id] = fit_layer_model(self.mesh.profile_for(target.runner), target, self.config)
        return m

    def _stretches(
        self, ctx: DecisionContext, phone: Target | None, server: Target | None
    ) -> list[tuple[int, float, float, float, int]]:
        """Per split k: (k, phone seconds, phone joules, server seconds, bytes sent up). None of it
        depends on the conditions, so it is predicted once per network and pair of targets."""
        key = (ctx.model, len(ctx.cuts), ctx.features.macs, phone.id if phone else "", server.id if server else "")
        hit = self._stretch_memo.get(key)
        if hit is not None:
            return hit
        cuts, f = ctx.cuts, ctx.features
        n = len(cuts) + 1
        out = []
        for k in range(n + 1):
            if (k > 0 and phone is None) or (k < n and server is None):
                continue
            t = e = t_srv = 0.0
            if k > 0 and phone is not None:
                t, e = self._model(phone).predict(counts_between(f, cuts, 0, k))
            if k < n and server is not None:
                t_srv, _ = self._model(server).predict(counts_between(f, cuts, k, n))
            up = f.input_bytes if k == 0 else cuts[k - 1].bytes if k < n else 0
            out.append((k, t, e, t_srv, up))
        if len(self._stretch_memo) >= 1024:
            self._stretch_memo.clear()
        self._stretch_memo[key] = out
        return out

    def splits(self, ctx: DecisionContext, phone: Target | None, server: Target | None) -> list[Split]:
        """Every split's predicted (latency, phone energy) under the current bandwidth."""
        assert self.mesh is not None
        n = len(ctx.cuts) + 1
        ls = costmodel.link_at(self.mesh.edge, Location.cloud, ctx.conditions) if server is not None else None
        out: list[Split] = []
        for k, t, e, t_srv, up in self._stretches(ctx, phone, server):
            if k < n and ls is not None:
                tx = ls.rtt_s / 2 + up * 8 / ls.up_bps
                rx = ls.rtt_s / 2 + ctx.features.output_bytes * 8 / ls.down_bps
                t += tx + t_srv + rx
                e += ls.tx_w * tx + ls.rx_w * rx + ls.idle_w * t_srv
            out.append(Split(k, t, e))
        return out

    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        if self.mesh is None:
            raise OracleUnavailable(f"policy {self.name!r} needs the device profiles to fit its regressions")
        phone_c, server_c = endpoints(ctx.candidates)
        if phone_c is None and server_c is None:
            raise NoCandidate(f"policy {self.name!r} needs the phone's CPU or GPU in FP32, or the cloud")
        phone = phone_c.target if phone_c else None
        server = server_c.target if server_c else None
        options = self.splits(ctx, phone, server)
        if self.config.mode == "latency":
            best = min(options, key=lambda s: s.latency_s)
        else:
            ok = [s for s in options if s.latency_s < ctx.qos_s]
            best = min(ok, key=lambda s: s.energy_j) if ok else min(options, key=lambda s: s.latency_s)
        n = len(ctx.cuts) + 1
        if best.cut == 0 and server is not None:
            return Decision(server)
        if best.cut == n and phone is not None:
            return Decision(phone)
        assert phone is not None and server is not None
        key = (phone.id, server.id, ctx.cuts[best.cut - 1].name)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 4096:
                self._plans.clear()
            plan = self._plans[key] = Plan.split([phone, server], [key[2]])
        return Decision(phone, plan=plan)

    def plan_space(self, cuts: Sequence[CutPoint], cands: Sequence[Candidate]) -> list[Plan]:
        """Every plan it may return for a network (the simulator's columns): one per cut."""
        phone_c, server_c = endpoints(cands)
        if phone_c is None or server_c is None:
            return []
        return [Plan.split([phone_c.target, server_c.target], [c.name]) for c in cuts]

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None:
        return None  # fitted offline, never adapted
