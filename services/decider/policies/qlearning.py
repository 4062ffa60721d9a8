"""AutoScale's Q-learning core (paper Sec. IV, Algorithm 1). Pure: no I/O.

Pieces, from the inside out:

* ``initial_q``: the paper initialises Q(S, A) with random values. We draw them lazily, the
  first time an action is seen in a state, from a hash of (seed, state, action): every decider
  process and the Redis script then agree on the same "random" value without coordinating.
* ``eligible_indices`` / ``epsilon_greedy``: the action choice. Accuracy masking (our default,
  switchable) never picks a target below ``accuracy_min``; with it off we have the paper's
  penalty-only behaviour, where eq. 5's ``R_accuracy - 100`` teaches the table to avoid them.
* ``q_learning_target``: Q(S,A) <- Q + lr [R + discount * max_a' Q(S',a') - Q]. The Redis Lua
  script in ``services.decider.qstore`` evaluates exactly this expression in the same order,
  so an in-memory table and the Redis table produce bit-identical values.
* ``QTable``: the in-memory table (simulator, tests); ``QLearningPolicy``: the policy, which
  reads rows from any ``RowSource`` (``QTable`` or the Redis-backed ``QStore`` cache).
* Export format, strict validation and the cross-device transfer mapping, shared by both tables.

A row covers exactly the currently available actions: the stored table keeps values of
actions that disappeared (a runner that restarts must not lose what was learned), but argmax
and the max over S' only ever look at the actions offered now, and an action that appears is
given its random initial value on first sight.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from services.common.schemas import Target
from services.common.state import N_STATES
from services.decider.policies.base import Candidate, Decision, DecisionContext, Outcome

# ============================================================================ errors


class PolicyError(Exception):
    """A policy cannot decide for this request. ``status``/``code`` suggest the HTTP mapping."""

    status = 409
    code = "policy_error"


class NoCandidate(PolicyError):
    """None of the offered targets is one this policy may choose (e.g. no cloud runner up)."""

    status = 503
    code = "no_candidate"


# ============================================================================ parameters


@dataclass(frozen=True, slots=True)
class QParams:
    """Hyper-parameters (paper Sec. V-C: lr 0.9, discount 0.1, epsilon 0.1)."""

    learning_rate: float = 0.9
    discount: float = 0.1
    epsilon: float = 0.1
    accuracy_masking: bool = True
    # Random initial Q values are drawn from [init_low, init_high). Eq. 5 rewards are almost
    # always negative (-energy in mJ dominates), so small non-negative initial values are
    # optimistic: greedy selection tries every untried action of a state once before it
    # exploits, which is what lets the table settle within tens of runs.
    init_low: float = 0.0
    init_high: float = 1.0
    init_seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {self.discount}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if not (math.isfinite(self.init_low) and math.isfinite(self.init_high) and self.init_low <= self.init_high):
            raise ValueError("init_low <= init_high, both finite")

    @classmethod
    def from_settings(cls, settings: Any, seed: int | None = None) -> "QParams":
        """From ``services.common.settings.Settings`` (duck-typed to keep this module light)."""
        s = seed if seed is not None else getattr(settings, "seed", None)
        return cls(
            learning_rate=float(settings.learning_rate),
            discount=float(settings.discount),
            epsilon=float(settings.epsilon),
            accuracy_masking=bool(settings.accuracy_masking),
            init_seed=int(s) if s is not None else 0,
        )


# ============================================================================ pure core


@lru_cache(maxsize=1 << 18)
def initial_q(seed: int, state: int, action: str, low: float = 0.0, high: float = 1.0) -> float:
    """Deterministic pseudo-random initial Q(state, action) in [low, high).

    Hash-derived rather than drawn from an RNG so that every process (and every replay of the
    simulator) materialises the same value for an unseen entry with no shared state.
    """
    h = hashlib.blake2b(f"{seed}:{state}:{action}".encode(), digest_size=8).digest()
    u = int.from_bytes(h, "big") / 2.0**64
    return low + (high - low) * u


def q_learning_target(q_sa: float, reward: float, next_max: float, learning_rate: float, discount: float) -> float:
    """Algorithm 1's update. Keep the expression order: the Lua script mirrors it term for term."""
    return q_sa + learning_rate * (reward + discount * next_max - q_sa)


def eligible_indices(
    accuracies: Sequence[float], accuracy_min: float | None, masking: bool
) -> list[int]:
    """Indices of the candidates the learner may pick.

    With masking on, candidates below ``accuracy_min`` are never picked. If none reaches it
    (the decider answers 422 before deciding, so only a direct caller hits this), we fall back
    to the most accurate candidates: the closest we can get, and eq. 5 still penalises them.
    """
    n = len(accuracies)
    if not masking or accuracy_min is None:
        return list(range(n))
    ok = [i for i in range(n) if accuracies[i] >= accuracy_min]
    if ok or n == 0:
        return ok
    best = max(accuracies)
    return [i for i in range(n) if accuracies[i] == best]


def epsilon_greedy(
    values: Sequence[float], eligible: Sequence[int], epsilon: float, rng: random.Random
) -> tuple[int, bool]:
    """Pick an index among ``eligible``: uniformly with probability epsilon, else the argmax.

    Returns (index, explored). With epsilon == 0 the rng is not even consulted, so a greedy
    policy never explores and does not perturb a shared random stream. Ties go to the first
    candidate (stable, deterministic).
    """
    if not eligible:
        raise NoCandidate("no eligible candidate")
    if epsilon > 0.0 and rng.random() < epsilon:
        return eligible[rng.randrange(len(eligible))], True
    best_i = eligible[0]
    best_v = values[best_i]
    for i in eligible:
        v = values[i]
        if v > best_v:
            best_i, best_v = i, v
    return best_i, False


@dataclass(frozen=True, slots=True)
class QUpdate:
    """One Q(S,A) update, self-describing so that any table (memory or Redis) applies it alike.

    ``init`` is Q(S,A)'s initial value if the entry does not exist yet; ``next_inits`` are the
    initial values of S' row entries, aligned with ``next_actions`` (the actions available now).
    """

    state: int
    action: str
    reward: float
    next_state: int
    next_actions: tuple[str, ...]
    init: float
    next_inits: tuple[float, ...]
    learning_rate: float
    discount: float

    def __post_init__(self) -> None:
        if not 0 <= self.state < N_STATES or not 0 <= self.next_state < N_STATES:
            raise ValueError(f"state out of range: {self.state} -> {self.next_state}")
        if not math.isfinite(self.reward):
            raise ValueError(f"reward must be finite, got {self.reward}")
        if len(self.next_actions) != len(self.next_inits):
            raise ValueError("next_actions and next_inits must align")


def apply_update(
    row: Mapping[str, float], next_row: Mapping[str, float], u: QUpdate
) -> float:
    """New Q(S,A) given the current S row and S' row (both read *before* the write)."""
    q_sa = row.get(u.action)
    if q_sa is None:
        q_sa = u.init
    if u.next_actions:
        vals = list(map(next_row.get, u.next_actions))
        if None in vals:
            vals = [u.next_inits[i] if v is None else v for i, v in enumerate(vals)]
        next_max = max(vals)
    else:
        next_max = 0.0  # no action available after S: treat as terminal
    return q_learning_target(q_sa, u.reward, next_max, u.learning_rate, u.discount)


# ============================================================================ tables


class RowSource(Protocol):
    """Where a QLearningPolicy reads Q rows from and sends its updates to.

    ``row`` must be cheap and free of I/O (it is on the decision path); the mapping may lack
    actions never stored for that state, and callers must not mutate it. ``learn`` must not
    block (the Redis store applies its update in the background).
    """

    def row(self, state: int) -> Mapping[str, float]: ...

    def learn(self, update: QUpdate) -> None: ...


_EMPTY: Mapping[str, float] = {}


@dataclass
class QTable:
    """In-memory Q table: {state: {action: Q}} and visit counts. For the simulator and tests."""

    q: dict[int, dict[str, float]] = field(default_factory=dict)
    n: dict[int, dict[str, int]] = field(default_factory=dict)

    def row(self, state: int) -> Mapping[str, float]:
        return self.q.get(state, _EMPTY)

    def visits(self, state: int) -> Mapping[str, int]:
        return self.n.get(state, {})  # type: ignore[return-value]

    def learn(self, update: QUpdate) -> None:
        new = apply_update(self.q.get(update.state, _EMPTY), self.q.get(update.next_state, _EMPTY), update)
        self.q.setdefault(update.state, {})[update.action] = new
        nrow = self.n.setdefault(update.state, {})
        nrow[update.action] = nrow.get(update.action, 0) + 1

    def reset(self) -> None:
        self.q.clear()
        self.n.clear()

    # --- export / import in the same format as the Redis store ---------------------------
    def export(self, device: str, actions: Iterable[str] | None = None) -> dict[str, Any]:
        acts = set(actions or ())
        for r in self.q.values():
            acts.update(r)
        states = {
            str(s): {a: {"q": v, "n": self.n.get(s, {}).get(a, 0)} for a, v in sorted(row.items())}
            for s, row in sorted(self.q.items())
            if row
        }
        return {"format_version": EXPORT_FORMAT_VERSION, "device": device, "actions": sorted(acts), "states": states}

    def load(self, table: "ValidatedTable", mode: str = "replace") -> None:
        if mode not in ("replace", "merge"):
            raise ValueError("mode must be 'replace' or 'merge'")
        if mode == "replace":
            self.reset()
        for s, row in table.states.items():
            qrow = self.q.setdefault(s, {})
            nrow = self.n.setdefault(s, {})
            for a, (qv, nv) in row.items():
                qrow[a] = qv
                nrow[a] = nv

    def stats(self) -> dict[str, int]:
        return {
            "states": sum(1 for r in self.q.values() if r),
            "states_visited": sum(1 for r in self.n.values() if any(r.values())),
            "entries": sum(len(r) for r in self.q.values()),
            "visits_total": sum(sum(r.values()) for r in self.n.values()),
        }


# ============================================================================ the policy


@dataclass(frozen=True, slots=True)
class _CandInfo:
    candidates: tuple[Candidate, ...]
    ids: tuple[str, ...]
    accuracies: tuple[float, ...]
    all_idx: tuple[int, ...]


class _CandidateIds:
    """Memo of candidate ids per candidates tuple.

    ``Target.id`` builds a string on every access; on a 66-action row that alone would cost more
    than the whole lookup. The decider reuses candidate tuples between requests, so a small
    identity-keyed memo (holding the tuple, so its id cannot be recycled) removes that cost.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._memo: dict[int, _CandInfo] = {}

    def get(self, cands: tuple[Candidate, ...]) -> _CandInfo:
        hit = self._memo.get(id(cands))
        if hit is not None and hit.candidates is cands:
            return hit
        info = _CandInfo(cands, tuple(c.target.id for c in cands), tuple(float(c.accuracy) for c in cands),
                         tuple(range(len(cands))))
        if len(self._memo) >= self._size:
            self._memo.pop(next(iter(self._memo)))
        self._memo[id(cands)] = info
        return info


candidate_ids = _CandidateIds()


class QLearningPolicy:
    """AutoScale: epsilon-greedy over the cached Q row of the observed state (Algorithm 1).

    ``next_state`` gives S' for the update. By default S' is the state of the request itself:
    the decider re-observes the same model under a telemetry snapshot that refreshes every
    ~0.5 s, so the state observed when the inference ends is almost always the one it began in
    (and with the paper's discount 0.1 the S' term is a small correction anyway). The simulator
    can pass a hook that returns the true next state.
    """

    name = "autoscale"

    def __init__(
        self,
        source: RowSource | None = None,
        params: QParams = QParams(),
        *,
        next_state: Callable[[DecisionContext], int] | None = None,
        name: str = "autoscale",
    ) -> None:
        self.source: RowSource = source if source is not None else QTable()
        self.params = params
        self._next_state = next_state
        self.name = name
        self._init_memo: dict[tuple[int, tuple[str, ...]], tuple[float, ...]] = {}

    def _value(self, row: Mapping[str, float], state: int, action: str) -> float:
        v = row.get(action)
        if v is None:
            p = self.params
            v = initial_q(p.init_seed, state, action, p.init_low, p.init_high)
        return v

    def row_view(self, state: int, actions: Iterable[str]) -> dict[str, float]:
        """The row as the policy sees it: exactly ``actions``, unseen ones at their initial value."""
        row = self.source.row(state)
        return {a: self._value(row, state, a) for a in actions}

    def _inits(self, state: int, ids: tuple[str, ...]) -> tuple[float, ...]:
        """Initial values of a row's actions, memoised per (state, action set): the hash per
        action would otherwise dominate the cost of an update."""
        key = (state, ids)
        hit = self._init_memo.get(key)
        if hit is None:
            p = self.params
            hit = tuple(initial_q(p.init_seed, state, a, p.init_low, p.init_high) for a in ids)
            if len(self._init_memo) >= 65_536:
                self._init_memo.clear()
            self._init_memo[key] = hit
        return hit

    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        info = candidate_ids.get(ctx.candidates)
        if not info.ids:
            raise NoCandidate("no candidate target offered")
        p = self.params
        if ctx.accuracy_min is None or not p.accuracy_masking:
            elig: Sequence[int] = info.all_idx
        else:
            elig = eligible_indices(info.accuracies, ctx.accuracy_min, True)
        if p.epsilon > 0.0 and rng.random() < p.epsilon:
            i = elig[rng.randrange(len(elig))]
            return Decision(ctx.candidates[i].target, explored=True)
        vals = list(map(self.source.row(ctx.state).get, info.ids))  # one C-level pass
        if None in vals:  # unseen actions: their (lazy) random initial values
            inits = self._inits(ctx.state, info.ids)
            vals = [inits[i] if v is None else v for i, v in enumerate(vals)]
        # max() keeps the first of equal values: ties go to the earlier candidate.
        best_i = max(elig, key=vals.__getitem__)
        return Decision(ctx.candidates[best_i].target, explored=False)

    def make_update(self, ctx: DecisionContext, decision: Decision, reward: float) -> QUpdate:
        p = self.params
        info = candidate_ids.get(ctx.candidates)
        s = ctx.state
        s2 = self._next_state(ctx) if self._next_state is not None else s
        action = decision.target.id
        return QUpdate(
            state=s,
            action=action,
            reward=float(reward),
            next_state=s2,
            next_actions=info.ids,
            init=initial_q(p.init_seed, s, action, p.init_low, p.init_high),
            next_inits=self._inits(s2, info.ids),
            learning_rate=p.learning_rate,
            discount=p.discount,
        )

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None:
        self.source.learn(self.make_update(ctx, decision, reward))


# ============================================================================ export format

EXPORT_FORMAT_VERSION = 1
_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOP_KEYS_REQUIRED = ("format_version", "device", "actions", "states")
_TOP_KEYS_OPTIONAL = ("exported_at", "params", "stats")
MAX_ACTIONS = 1024


class QTableImportError(ValueError):
    """A Q-table payload was refused. ``field`` names the offending field (dotted path).

    ``kind`` is "malformed" (bad shape/values) or "mismatch" (well formed, but for another
    device or with actions this device does not have).
    """

    def __init__(self, field: str | None, message: str, kind: str = "malformed") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.kind = kind


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
        raise QTableImportError("format_version", f"unsupported format version {fv!r}; expected {EXPORT_FORMAT_VERSION}")
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
        try:
            if Target.parse(a).id != a:
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
                raise QTableImportError(fa, "expected exactly {\"q\": number, \"n\": integer}")
            q, n = entry["q"], entry["n"]
            if not _is_number(q) or not math.isfinite(float(q)):
                raise QTableImportError(f"{fa}.q", "must be a finite number")
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise QTableImportError(f"{fa}.n", "must be a non-negative integer")
            vals[a] = (float(q), int(n))
        if vals:
            out[s] = vals
    return ValidatedTable(device=device, actions=tuple(actions), states=out)


# ============================================================================ transfer learning


def _dvfs_steps(actions: Iterable[str]) -> dict[str, int]:
    """base id (runner/processor/precision) -> number of DVFS steps (max index + 1)."""
    steps: dict[str, int] = {}
    for a in actions:
        base, _, d = a.partition("@")
        if d:
            steps[base] = max(steps.get(base, 0), int(d) + 1)
    return steps


def transfer_mapping(src_actions: Iterable[str], dest_actions: Iterable[str]) -> dict[str, str]:
    """For each destination action, the source action whose Q values it inherits.

    The paper transfers a table trained on one phone to another (Sec. VI-C) to speed up
    convergence; the phones differ in DVFS steps and processors. Rules, by destination action:

    1. the same action id exists on the source (cloud and peer targets, DSP, fixed targets,
       DVFS steps when both devices have the same number of steps): take it;
    2. same runner/processor/precision with DVFS steps on both sides: take the source step at
       the same *relative* position, round(i_dest / (N_dest - 1) * (N_src - 1)) -- endpoints
       map to endpoints (lowest to lowest, top to top), e.g. Mi8Pro CPU 23 steps -> Galaxy
       S10e 21 steps (its step 20 takes Mi8Pro's 22, step 10 takes 11), GPU 7 -> 9;
    3. a fixed-frequency destination action (no ``@step``) takes the source's top step, and a
       fixed-frequency source action feeds only the destination's top step (a fixed target
       runs at the governor's top frequency);
    4. otherwise (a processor or precision the source does not have) nothing: the entry keeps
       its lazy random initial value. Source actions no destination action maps to (e.g. the
       DSP when the destination has none) are dropped.
    """
    src = list(src_actions)
    src_set = set(src)
    src_steps = _dvfs_steps(src)
    dest = list(dest_actions)
    dest_steps = _dvfs_steps(dest)
    mapping: dict[str, str] = {}
    for d in dest:
        base, _, step = d.partition("@")
        ns = src_steps.get(base)
        if d in src_set and not (step and ns != dest_steps[base]):
            mapping[d] = d  # same action; DVFS steps only when both sides have as many steps
            continue
        if ns:
            if step:
                nd = dest_steps[base]
                rel = int(step) / (nd - 1) if nd > 1 else 1.0
            else:
                rel = 1.0
            si = int(round(rel * (ns - 1)))
            cand = f"{base}@{si}"
            if cand in src_set:
                mapping[d] = cand
            else:  # sparse source step list: nearest existing step
                present = [int(a.partition("@")[2]) for a in src if a.partition("@")[0] == base and "@" in a]
                if present:
                    mapping[d] = f"{base}@{min(present, key=lambda x: (abs(x - si), -x))}"
        elif base in src_set and step and int(step) == dest_steps[base] - 1:
            mapping[d] = base
    return mapping


@dataclass(frozen=True, slots=True)
class TransferReport:
    from_device: str
    to_device: str
    mapping: dict[str, str]
    entries_copied: int
    entries_dropped: int
    states: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "from_device": self.from_device,
            "to_device": self.to_device,
            "mapping": dict(sorted(self.mapping.items())),
            "entries_copied": self.entries_copied,
            "entries_dropped": self.entries_dropped,
            "states": self.states,
        }


def transfer_table(
    src: ValidatedTable, to_device: str, dest_actions: Sequence[str]
) -> tuple[ValidatedTable, TransferReport]:
    """Initialise ``to_device``'s table from ``src`` keeping only the destination's actions.

    Visit counts start at 0: they count this device's own experience, and the Q values are
    only a starting point (the paper's "learning transfer").
    """
    mapping = transfer_mapping(src.actions, dest_actions)
    used_src = set(mapping.values())
    out: dict[int, dict[str, tuple[float, int]]] = {}
    copied = dropped = 0
    for s, row in src.states.items():
        new: dict[str, tuple[float, int]] = {}
        for d, a in mapping.items():
            if a in row:
                new[d] = (row[a][0], 0)
        if new:
            out[s] = new
        copied += len(new)
        dropped += sum(1 for a in row if a not in used_src)
    table = ValidatedTable(device=to_device, actions=tuple(sorted(dest_actions)), states=out)
    return table, TransferReport(src.device, to_device, mapping, copied, dropped, len(out))
