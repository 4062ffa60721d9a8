"""The decider's own energy per decision, as a share of the inference energy (paper Sec. VI-C:
1.0 % while training the Q-table, 0.2 % exploiting it).

Modelled, not measured on a phone: the decider's CPU time per decision is the median measured
on the build host by ``bench/bench_decision.py`` (``bench/decision.json``: binning + greedy decide
when exploiting; binning + decide + reward + learn per training step), charged at one phone CPU
core's busy power at its top DVFS step (the profile's ``busy_w`` over its ``cores``), and set
against AutoScale's mean phone energy per inference in the cold window on that phone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.common.config_files import load_profile
from services.core.schemas import Processor
from services.evaluation.config import EvalConfig

BENCH = Path(__file__).resolve().parents[2] / "bench" / "decision.json"
# The rows of the configured AutoScale learner (cfg.learner): the prior learner's, or the table's.
_ROWS = {
    "prior": ("prior_observe_decide", "prior_training_step_eps0.1"),
    "table": ("observe_decide", "training_step_default"),
}


def decider_overhead(cfg: EvalConfig, results: dict[tuple[str, Any], Any]) -> dict[str, Any]:
    """Per phone: the decider's energy per decision (exploiting / training) and its share of the
    inference energy; ``source`` says where the CPU times come from."""
    from services.evaluation.assemble import merge_variant

    if not BENCH.exists():
        return {"source": f"{BENCH.name} missing: run `make bench-decision`", "per_device": {}}
    bench = json.loads(BENCH.read_text())["in_process"]
    exploit, train = _ROWS.get(cfg.learner, _ROWS["table"])
    if exploit not in bench:  # a decision.json written before the prior learner's rows
        exploit, train = _ROWS["table"]
    t_exploit, t_train = bench[exploit]["median_us"] * 1e-6, bench[train]["median_us"] * 1e-6
    cold = merge_variant(results, "main")["per_case"].get("cold", {})
    per_device: dict[str, Any] = {}
    for device in cfg.devices:
        prof = load_profile(device, cfg.profiles_dir)
        cpu = prof.processors[Processor.cpu]
        p_core = cpu.busy_power(None) / cpu.cores
        energies = [
            pol["autoscale"]["energy_mj"] * 1e-3
            for by_m in cold.get(prof.name, {}).values()
            for pol in by_m.values()
            if "autoscale" in pol
        ]
        e_inf = sum(energies) / len(energies) if energies else float("nan")
        per_device[prof.name] = {
            "core_power_w": p_core,
            "inference_energy_mj": 1e3 * e_inf,
            "exploit_uj": 1e6 * t_exploit * p_core,
            "train_uj": 1e6 * t_train * p_core,
            "exploit_share_pct": 100.0 * t_exploit * p_core / e_inf,
            "train_share_pct": 100.0 * t_train * p_core / e_inf,
        }
    return {
        "source": f"host medians from bench/decision.json ({exploit} {1e6 * t_exploit:.1f} us, "
        f"{train} {1e6 * t_train:.1f} us; {json.loads(BENCH.read_text()).get('machine', '?')})",
        "per_device": per_device,
    }
