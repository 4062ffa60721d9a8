"""Measure the AutoScale learners on the current simulator, optionally in a world that differs from
the profiles: the learner study behind issue #12 (part b), until part a's protocol lands.

    .venv/bin/python scripts/measure_learner.py [--deviation 0.2] [--seeds 0,1] [--devices mi8pro,...]

For each deviation seed it runs the evaluation's leave-one-network-out folds (``run_fold``) for
``autoscale`` with the prior learner, ``autoscale`` with the table learner (``QParams.improved()``)
and ``autoscale-paper``, and prints cold / adapted energy gap, QoS gap, exact-action and category
accuracy (same aggregation as ``summary_cold`` / ``summary``).

The deviation knob exists only here (a test-only world; part a builds the real one in the shared
simulator): with ``--deviation s`` the *true* profiles differ from the ones the policies are given by
lognormal multipliers drawn from a seed no policy sees -- per processor x precision throughput, per
processor power and per-layer costs (log-sd s), per network x processor throughput (``--interaction``,
default s / 2), per link goodput, radio power and RTT (s) -- and the energy the learners observe is
biased per runner (``--energy-bias``, log-sd, default 0.07: the paper's 7.3 % estimation error).
Opt and the reported energies are on the truth. Policies see the nominal profiles only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: the imports below need the repository root

from services.core.costmodel import Mesh  # noqa: E402
from services.core.policies.base import Decision, DecisionContext, Outcome  # noqa: E402
from services.core.profiles import DeviceProfile  # noqa: E402
from services.evaluation import evaluate as ev  # noqa: E402
from services.evaluation.config import EvalConfig  # noqa: E402
from services.evaluation.simulator import ModelCase, model_case  # noqa: E402


@dataclass(frozen=True)
class Deviation:
    sigma: float
    interaction: float
    energy_bias: float
    seed: int


def _lognormal(rng: np.random.Generator, sigma: float) -> float:
    return float(np.exp(rng.normal(0.0, sigma))) if sigma > 0 else 1.0


def _perturb(p: DeviceProfile, rng: np.random.Generator, sigma: float, per_proc: dict[str, float]) -> DeviceProfile:
    """``p`` with its processors' speed and power and its links scaled by hidden factors.
    ``per_proc``: an extra speed factor per processor (the network x processor interaction)."""
    d = p.model_dump(mode="json")
    for name, proc in d["processors"].items():
        extra = per_proc.get(name, 1.0)
        proc["throughput_gmacs"] = {k: v * _lognormal(rng, sigma) * extra for k, v in proc["throughput_gmacs"].items()}
        slow = _lognormal(rng, sigma) / extra
        proc["layer_ms"] = {k: v * slow for k, v in proc["layer_ms"].items()}
        proc["launch_ms"] *= slow
        power = _lognormal(rng, sigma)
        if proc.get("dvfs"):
            proc["dvfs"]["busy_w"] = [w * power for w in proc["dvfs"]["busy_w"]]
        if proc.get("power_w"):
            proc["power_w"] *= power
        proc["idle_w"] *= power
    for link in (d.get("radio") or {}).values():
        if not link:
            continue
        good, radio = _lognormal(rng, sigma), _lognormal(rng, sigma)
        link["rtt_ms"] *= _lognormal(rng, sigma)
        for pt in link["points"]:
            pt["up_mbps"] *= good
            pt["down_mbps"] *= good
            pt["tx_w"] *= radio
            pt["rx_w"] *= radio
    return DeviceProfile.model_validate(d)


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


class DeviatedWorld(ev.DeviceWorld):
    """A device world whose true costs come from hidden perturbations of the profiles; ``mesh``
    (what policies are given) stays nominal."""

    dev: Deviation

    def truth(self, model: str) -> Mesh:
        net = np.random.default_rng(_seed("net", self.dev.seed, self.device, model))
        meshes = []
        for role, prof in (("edge", self.mesh.edge), ("peer", self.mesh.peer), ("cloud", self.mesh.cloud)):
            r = np.random.default_rng(_seed("dev", self.dev.seed, self.device, role))
            inter = {str(k): _lognormal(net, self.dev.interaction) for k in sorted(prof.processors)}
            meshes.append(_perturb(prof, r, self.dev.sigma, inter))

        return Mesh(edge=meshes[0], peer=meshes[1], cloud=meshes[2])

    def case(self, model: str, accuracy_min: float | None = None) -> ModelCase:
        key = (model, accuracy_min)
        if key not in self.cases:
            f = self.features[model]
            self.cases[key] = model_case(self.truth(model), model, f, ev.accuracy_of, ev.qos_s(f), accuracy_min)
        return self.cases[key]


class BiasedObserver:
    """What a learner observes when the decider's energy estimate is off by a factor per runner: it
    learns from the biased energy (and the reward recomputed from it); Opt is judged on the truth."""

    def __init__(self, inner: Any, bias: dict[str, float], mode: str) -> None:
        self.inner, self.bias, self.mode = inner, bias, mode
        self.name = inner.name

    @property
    def params(self) -> Any:
        return self.inner.params

    @params.setter
    def params(self, p: Any) -> None:
        self.inner.params = p

    @property
    def source(self) -> Any:
        return self.inner.source

    def decide(self, ctx: DecisionContext, rng: Any) -> Decision:
        return self.inner.decide(ctx, rng)

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None:
        b = self.bias[str(decision.target.runner)]
        e_mj = outcome.energy_j * 1e3
        met_acc = ctx.accuracy_min is None or outcome.accuracy >= ctx.accuracy_min
        if met_acc:
            reward = reward * b if self.mode == "qos" else reward - (b - 1.0) * e_mj
        self.inner.learn(ctx, decision, replace(outcome, energy_j=outcome.energy_j * b), reward)


_DEV: Deviation | None = None


def _install(dev: Deviation | None) -> None:
    """Make the evaluation build deviated worlds and biased observers (in this process)."""
    global _DEV
    _DEV = dev
    if dev is None or dev.sigma <= 0:
        return
    orig_load, orig_build = ev.load_device, ev.build_policy

    def load_device(cfg: EvalConfig, device: str) -> ev.DeviceWorld:
        w = orig_load(cfg, device)
        dw = DeviatedWorld(w.cfg, w.device, w.mesh, w.scenarios, w.features)
        dw.dev = dev
        return dw

    def build_policy(name: str, cfg: EvalConfig, seed: int, mesh: Mesh | None = None) -> Any:
        pol = orig_build(name, cfg, seed, mesh)
        if name not in ev.AUTOSCALE or dev.energy_bias <= 0:
            return pol
        r = np.random.default_rng(_seed("bias", dev.seed))
        bias = {k: _lognormal(r, dev.energy_bias) for k in ("edge", "peer", "cloud")}
        return BiasedObserver(pol, bias, cfg.reward_of(name)[0])

    ev.load_device = load_device
    ev.build_policy = build_policy


def _fold(cfg: EvalConfig, device: str, model: str) -> dict[str, Any]:
    return ev.run_fold(cfg, device, model)


def run(cfg: EvalConfig, dev: Deviation | None, workers: int) -> dict[str, Any]:
    """Every fold of ``cfg`` in ``workers`` processes; the assembled results."""
    models = list(ev.zoo_models(cfg.models))
    tasks = [(d, m) for d in cfg.devices for m in models]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_install, initargs=(dev,)
    ) as ex:
        futs = [ex.submit(_fold, cfg, d, m) for d, m in tasks]
        results = {("fold", (d, m)): f.result() for (d, m), f in zip(tasks, futs, strict=True)}
    return ev.assemble(cfg, models, results, time.perf_counter() - t0)


def headline(res: dict[str, Any], policy: str, device: str | None = None) -> dict[str, dict[str, float]]:
    """Cold and adapted energy gap, QoS gap, exact and category accuracy (all devices, or one)."""
    from services.evaluation.report import summarise

    out = {}
    for window, key in (("cold", "per_case_cold"), ("adapted", "per_case")):
        cases = res[key] if device is None else {device: res[key][device]}
        s = summarise({"per_case": cases})["all"]
        g, p = s["gaps_by_policy"][policy], s["policies"][policy]
        out[window] = {
            "energy_gap_pct": g["energy_gap_pct"],
            "qos_gap_pp": g["qos_gap_pp"],
            "exact_pct": 100 * p["prediction_accuracy"],
            "category_pct": 100 * p["category_accuracy"],
        }
    return out


def _config(args: argparse.Namespace, learner: str, policies: list[str]) -> EvalConfig:
    cfg = EvalConfig(devices=args.devices.split(","), policies=[*policies, "opt", "edge-cpu-fp32"], extras=False)
    cfg.learner = learner
    cfg.adapt_runs = args.adapt_runs
    if args.scenarios:
        cfg.scenarios = args.scenarios.split(",")
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--deviation", type=float, default=0.0, help="log-sd of the hidden profile deviations")
    ap.add_argument("--interaction", type=float, default=None, help="network x processor log-sd (default s / 2)")
    ap.add_argument("--energy-bias", type=float, default=0.07, help="per-runner energy-estimation bias log-sd")
    ap.add_argument("--seeds", default="0", help="comma-separated deviation seeds")
    ap.add_argument("--devices", default="mi8pro,galaxy_s10e,moto_x_force")
    ap.add_argument("--scenarios", default=None, help="comma-separated scenarios (default: s1..s5, d1..d4)")
    ap.add_argument("--learners", default="prior,table,paper", help="which of prior, table, paper")
    ap.add_argument("--adapt-runs", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write each run's results here (JSON)")
    args = ap.parse_args()
    learners = args.learners.split(",")
    # (learner setting, policies evaluated under it): the paper's variant rides along with the first run
    runs = [(lr, ["autoscale"]) for lr in ("prior", "table") if lr in learners]
    if "paper" in learners:
        if runs:
            runs[0][1].append("autoscale-paper")
        else:
            runs = [("table", ["autoscale-paper"])]
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        dev = None
        if args.deviation > 0:
            inter = args.interaction if args.interaction is not None else args.deviation / 2
            dev = Deviation(args.deviation, inter, args.energy_bias, seed)
        for learner, pols in runs:
            res = run(_config(args, learner, pols), dev, args.workers)
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / f"results_{seed}_{learner}.json").write_text(json.dumps(res, default=str))
            for p in pols:
                label = "paper" if p == "autoscale-paper" else learner
                for d in [None, *res["per_case_cold"]]:
                    rows.append((seed, label, d or "all", headline(res, p, d)))
    print(f"deviation {args.deviation} (interaction {args.interaction}, energy bias {args.energy_bias})")
    print("| seed | learner | device | window | energy gap % | QoS gap pp | exact % | category % |")
    print("|---:|---|---|---|---:|---:|---:|---:|")
    for seed, label, d, h in rows:
        for w, v in h.items():
            print(
                f"| {seed} | {label} | {d} | {w} | {v['energy_gap_pct']:.2f} | {v['qos_gap_pp']:.2f} | "
                f"{v['exact_pct']:.1f} | {v['category_pct']:.1f} |"
            )


if __name__ == "__main__":
    main()
