"""The Q-table export format and its strict validation, shared by every table. Pure.

    {"format_version": 1, "device": "mi8pro", "actions": ["cloud/gpu/fp32", ...],
     "states": {"<state index>": {"<action id>": {"q": float, "n": int}}},
     "exported_at": "...", "params": {...}}        # the last two optional

``validate_export`` checks a payload completely before anything is written, so an import that
is refused leaves the table unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from services.core.errors import AutoScaleError
from services.core.policies.qlearning.models import PolicyView, QEntry, StatePolicy
from services.core.schemas import Plan, Target
from services.core.state import N_STATES, StateBins

EXPORT_FORMAT_VERSION = 1
_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOP_KEYS_REQUIRED = ("format_version", "device", "actions", "states")
_TOP_KEYS_OPTIONAL = ("exported_at", "params", "stats")
MAX_ACTIONS = 1024


class QTableImportError(AutoScaleError, ValueError):
    """A Q-table payload was refused. ``field`` names the offending field (dotted path).

    ``kind`` is "malformed" (bad shape/values: 422 ``invalid_qtable``) or "mismatch" (well
    formed, but for another device or with actions this device does not have: 409
    ``qtable_mismatch``).
    """

    def __init__(self, field: str | None, message: str, kind: str = "malformed") -> None:
        super().__init__(message, field=field)
        self.kind = kind
        self.status = 409 if kind == "mismatch" else 422
        self.code = "qtable_mismatch" if kind == "mismatch" else "invalid_qtable"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


@dataclass(frozen=True, slots=True)
class ValidatedTable:
    device: str
    actions: tuple[str, ...]
    states: dict[int, dict[str, tuple[float, int]]]  # state -> action -> (q, n)

    @property
    def entries(self) -> int:
        return sum(len(r) for r in self.states.values())

    def to_export(self) -> dict[str, Any]:
        return {
            "format_version": EXPORT_FORMAT_VERSION,
            "device": self.device,
            "actions": list(self.actions),
            "states": {
                str(s): {a: {"q": q, "n": n} for a, (q, n) in sorted(row.items())}
                for s, row in sorted(self.states.items())
            },
        }


def valid_device(name: object) -> bool:
    return isinstance(name, str) and bool(_DEVICE_RE.match(name))


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_export(
    data: object,
    *,
    expect_device: str | None = None,
    allowed_actions: Collection[str] | None = None,
) -> ValidatedTable:
    """Check a Q-table payload completely; raise ``QTableImportError`` at the first problem.

    Nothing is written by this function, so a caller that validates first and writes after
    leaves the table unchanged on any error.
    """
    if not isinstance(data, dict):
        raise QTableImportError("body", "expected a JSON object in the export format")
    for k in data:
        if k not in _TOP_KEYS_REQUIRED and k not in _TOP_KEYS_OPTIONAL:
            raise QTableImportError(str(k), "unknown field")
    for k in _TOP_KEYS_REQUIRED:
        if k not in data:
            raise QTableImportError(k, "required field missing")
    fv = data["format_version"]
    if not isinstance(fv, int) or isinstance(fv, bool) or fv != EXPORT_FORMAT_VERSION:
        raise QTableImportError(
            "format_version", f"unsupported format version {fv!r}; expected {EXPORT_FORMAT_VERSION}"
        )
    device = data["device"]
    if not valid_device(device):
        raise QTableImportError("device", "must be a device profile name ([A-Za-z0-9_.-], up to 64 chars)")
    if expect_device is not None and device != expect_device:
        raise QTableImportError(
            "device", f"table is for device {device!r}, this store is {expect_device!r} (use transfer)", "mismatch"
        )
    actions = data["actions"]
    if not isinstance(actions, list):
        raise QTableImportError("actions", "expected a list of action ids")
    if len(actions) > MAX_ACTIONS:
        raise QTableImportError("actions", f"at most {MAX_ACTIONS} actions")
    seen: set[str] = set()
    for i, a in enumerate(actions):
        f = f"actions[{i}]"
        if not isinstance(a, str):
            raise QTableImportError(f, "action ids are strings")
        try:  # a target, or a partitioned plan (target|cut|target...)
            if (Plan.parse(a).id if "|" in a else Target.parse(a).id) != a:
                raise ValueError("not canonical")
        except Exception:
            raise QTableImportError(f, f"{a!r} is not an action id like 'edge/cpu/int8@3'") from None
        if a in seen:
            raise QTableImportError(f, f"duplicate action {a!r}")
        if allowed_actions is not None and a not in allowed_actions:
            raise QTableImportError(f, f"this device has no action {a!r}", "mismatch")
        seen.add(a)
    states = data["states"]
    if not isinstance(states, dict):
        raise QTableImportError("states", "expected an object {state index: {action: {q, n}}}")
    out: dict[int, dict[str, tuple[float, int]]] = {}
    for sk, row in states.items():
        f = f"states.{sk}"
        if not isinstance(sk, str) or not sk.isdigit() or (len(sk) > 1 and sk[0] == "0"):
            raise QTableImportError(f, "state keys are decimal indices")
        s = int(sk)
        if not 0 <= s < N_STATES:
            raise QTableImportError(f, f"state index must be in [0, {N_STATES})")
        if not isinstance(row, dict):
            raise QTableImportError(f, "expected an object {action: {q, n}}")
        vals: dict[str, tuple[float, int]] = {}
        for a, entry in row.items():
            fa = f"{f}.{a}"
            if a not in seen:
                raise QTableImportError(fa, "action not listed in `actions`")
            if not isinstance(entry, dict) or set(entry) != {"q", "n"}:
                raise QTableImportError(fa, 'expected exactly {"q": number, "n": integer}')
            q, n = entry["q"], entry["n"]
            if not _is_number(q) or not math.isfinite(float(q)):
                raise QTableImportError(f"{fa}.q", "must be a finite number")
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise QTableImportError(f"{fa}.n", "must be a non-negative integer")
            vals[a] = (float(q), int(n))
        if vals:
            out[s] = vals
    return ValidatedTable(device=device, actions=tuple(actions), states=out)


def policy_view(device: str, states: Mapping[int, Mapping[str, tuple[float, int]]]) -> PolicyView:
    """Best action per stored state (by Q among the learned entries; all of them in a state
    none was learned in), its visits, Table I labels and every entry by descending Q."""
    out: dict[str, StatePolicy] = {}
    for s, row in sorted(states.items()):
        visited = {a: v for a, v in row.items() if v[1] > 0} or row
        best = max(visited, key=lambda a: (visited[a][0], a))
        out[str(s)] = StatePolicy(
            best=best,
            best_q=row[best][0],
            visits=sum(n for _, n in row.values()),
            labels=StateBins.from_index(s).labels(),
            actions={a: QEntry(q=q, n=n) for a, (q, n) in sorted(row.items(), key=lambda kv: -kv[1][0])},
        )
    return PolicyView(device=device, format_version=EXPORT_FORMAT_VERSION, states=out)
