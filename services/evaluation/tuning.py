"""The learner settings each phone is evaluated with, from the recorded sweep (``tuning.json``,
written by ``autoscale evaluate --study sweep`` on the tuning seeds and the paper's phones).

A paper phone gets, per swept setting, the value chosen leave-one-device-out on the other two
phones; any other phone (the held-out one, a user's) the value chosen on all the tuning phones.
Without a record (or with ``EvalConfig.use_tuning`` off) the configured values stand.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from services.evaluation.config import EvalConfig

TUNING = Path(__file__).with_name("tuning.json")


@lru_cache(maxsize=1)
def record() -> dict[str, Any] | None:
    """The committed sweep record, or None."""
    return json.loads(TUNING.read_text()) if TUNING.exists() else None


def tuned_values(device: str) -> dict[str, float]:
    """Per swept setting, the value ``device`` is evaluated with (empty without a record)."""
    rec = record()
    if rec is None:
        return {}
    out: dict[str, float] = {}
    for key, s in rec["settings"].items():
        own = [r["chosen"] for r in s["rotations"] if r["held_out_device"] == device]
        if own:
            out[key] = float(own[0])
            continue
        means = {float(v): sum(by_d.values()) / len(by_d) for v, by_d in s["scores"].items() if by_d}
        if means:
            out[key] = min(means, key=lambda v: (means[v], v))
    return out


def tuned_config(cfg: EvalConfig, device: str) -> EvalConfig:
    """``cfg`` with ``device``'s recorded settings (``cfg`` itself when tuning is off or unrecorded)."""
    values = tuned_values(device) if cfg.use_tuning else {}
    if not values:
        return cfg
    return replace(cfg, **{k: type(getattr(cfg, k))(v) for k, v in values.items()})


def describe(key: str, configured: float, devices: list[str]) -> tuple[str, str]:
    """(the values the devices are evaluated with, what they were chosen on) for the settings table."""
    rec = record()
    if rec is None:
        return f"{configured:g}", "no sweep recorded: the configured value"
    per = {d: tuned_values(d).get(key, configured) for d in devices}
    rows = rec["settings"].get(key, {}).get("rotations", [])
    picks = "; ".join(f"{r['held_out_device']} <- {'+'.join(r['tuned_on'])}: {r['chosen']:g}" for r in rows)
    values = ", ".join(f"{d} {v:g}" for d, v in per.items())
    same = all(math.isclose(v, next(iter(per.values()))) for v in per.values())
    note = (
        f"seeds {rec['seeds']}, Table IV scenarios, `{rec['command']}`: leave-one-device-out {picks}; other phones: "
        f"the value best on all of {', '.join(rec['devices'])}" + ("" if same else " (the phones differ)")
    )
    return values, note
