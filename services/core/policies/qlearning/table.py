"""Q rows in memory: the row cache every table keeps, and the in-memory ``QTable``. Pure.

``RowCache`` is the one implementation of "what a table holds and how it changes": the rows
{state: {action: Q}}, the visit counts, the ``EntryIndex`` of the entries held and a ``writes``
counter bumped on every change. ``QTable`` (simulator, tests) is a ``RowCache`` and nothing
more; the Redis-backed ``services.decider.qstore.QStore`` is a ``RowCache`` kept in step with
Redis. Both are ``RowSource``s, the table interface ``QLearningPolicy`` reads and learns through.

A row covers exactly what was stored: the table keeps values of actions that disappeared (a
runner that restarts must not lose what was learned); the policy decides which of them it looks
at.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from services.core.policies.qlearning.corrections import Corrections
from services.core.policies.qlearning.entries import EntryIndex
from services.core.policies.qlearning.export import EXPORT_FORMAT_VERSION, ValidatedTable
from services.core.policies.qlearning.maths import VISITS_MAX, QUpdate, apply_update, f32
from services.core.policies.qlearning.models import TableCounts

_EMPTY: Mapping[str, float] = {}
_LOG = 16  # changes per row a reader can catch up with one by one (``changes_since``)


class RowSource(Protocol):
    """Where a QLearningPolicy reads Q rows from and sends its updates to (``QTable``, ``QStore``).

    ``row`` and ``visits`` must be cheap and free of I/O (they are on the decision path); the
    mappings may lack actions never stored for that state, and callers must not mutate them.
    ``writes`` changes whenever any row may have changed (the policy memoises the last row it
    read on it), ``row_version(state)`` whenever that state's row may have (``changes_since``: the
    actions whose entries the changes after a version wrote, None when a change of the whole row is
    among them or they are too old to say); ``entries`` indexes
    the entries held (``q_init="nearest"``); ``corrections`` are the learned profile corrections
    (the prior learner's). ``learn`` must not block (the Redis store
    applies its update in the background).
    """

    @property
    def writes(self) -> int: ...

    @property
    def entries(self) -> EntryIndex: ...

    @property
    def corrections(self) -> Corrections: ...

    def row(self, state: int) -> Mapping[str, float]: ...

    def row_version(self, state: int) -> tuple[int, int]: ...

    def changes_since(self, state: int, version: tuple[int, int]) -> list[str] | None: ...

    def visits(self, state: int) -> Mapping[str, int]: ...

    def learn(self, update: QUpdate, next_max: float | None = None) -> None: ...


class RowCache:
    """Rows, visit counts, their ``EntryIndex`` and the ``writes`` counter, changed only through
    the methods below so that the index and the counter never drift from the rows.

    ``q`` and ``n`` are plain dicts, readable directly; code that edits them directly calls
    ``sync_entries`` afterwards. Values are what a packed row holds: float32 Q values (``f32``) and
    visit counts saturating at ``VISITS_MAX``. ``corrections``: the family corrections of the prior
    learner (``Corrections``), changed by updates that carry an observation.
    """

    def __init__(
        self, q: dict[int, dict[str, float]] | None = None, n: dict[int, dict[str, int]] | None = None
    ) -> None:
        self.q: dict[int, dict[str, float]] = q if q is not None else {}
        self.n: dict[int, dict[str, int]] = n if n is not None else {}
        self.entries = EntryIndex()
        self.corrections = Corrections()
        self.writes = 0  # bumped on every change (the policy's memo key)
        # Per-row change counters, and a generation bumped by changes of many rows at once.
        self._row_writes: dict[int, int] = {}
        self._log: dict[int, list[str | None]] = {}  # per state: the actions of its last changes
        self._generation = 0
        if self.q:
            self.entries.rebuild(self.q)

    # --- reads (decision path) -----------------------------------------------------------
    def row(self, state: int) -> Mapping[str, float]:
        return self.q.get(state, _EMPTY)

    def visits(self, state: int) -> Mapping[str, int]:
        return self.n.get(state, {})

    def row_version(self, state: int) -> tuple[int, int]:
        """Changes whenever ``state``'s row may have changed (a cheaper memo key than ``writes``)."""
        return self._generation, self._row_writes.get(state, 0)

    def changes_since(self, state: int, version: tuple[int, int]) -> list[str] | None:
        """The distinct actions whose entries changed in ``state``'s row after ``version`` (a
        ``row_version``); None if the whole row may have changed or the changes are too many to list."""
        gen, n = self.row_version(state)
        if version[0] != gen or not 0 <= n - version[1] <= _LOG:
            return None
        log = self._log.get(state, [])
        k = n - version[1]
        out: list[str] = []
        for a in log[len(log) - k :] if k else ():
            if a is None:
                return None
            out.append(a)
        return list(dict.fromkeys(out))

    def _touch(self, state: int, action: str | None = None) -> None:
        self._row_writes[state] = self._row_writes.get(state, 0) + 1
        log = self._log.get(state)
        if log is None:
            log = self._log[state] = []
        log.append(action)
        if len(log) > 2 * _LOG:
            del log[:_LOG]
        self.writes += 1

    def _touch_all(self) -> None:
        self._generation += 1
        self.writes += 1

    # --- changes -------------------------------------------------------------------------
    def learn(self, update: QUpdate, next_max: float | None = None) -> None:
        """Apply one update (Algorithm 1) and count the visit. ``next_max``: the caller's max
        over the S' row, if it has it (see ``apply_update``)."""
        new = apply_update(self.q.get(update.state, _EMPTY), self.q.get(update.next_state, _EMPTY), update, next_max)
        row = self.q.get(update.state)
        if row is None:
            row = self.q[update.state] = {}
        if update.action not in row:
            self.entries.add(update.state, update.action)
        row[update.action] = new
        nrow = self.n.setdefault(update.state, {})
        nrow[update.action] = min(nrow.get(update.action, 0) + 1, VISITS_MAX)
        if update.correction is not None:
            self.corrections.learn(update.correction)
        self._touch(update.state, update.action)

    def set_entry(self, state: int, action: str, q: float, n: int) -> bool:
        """Store Q(state, action) = q with n visits (a value confirmed elsewhere, e.g. by Redis).
        False if the cache already held exactly that (nothing changed)."""
        row = self.q.setdefault(state, {})
        nrow = self.n.setdefault(state, {})
        if action not in row:
            self.entries.add(state, action)
        elif row[action] == q and nrow.get(action) == n:
            return False
        row[action] = q
        nrow[action] = n
        self._touch(state, action)
        return True

    def set_row(self, state: int, row: dict[str, float], visits: dict[str, int]) -> None:
        """Replace a whole row (and its visit counts)."""
        self.q[state] = row
        self.n[state] = visits
        self.entries.set_row(state, row)
        self._touch(state)

    def forget_state(self, state: int) -> None:
        """Drop a state's row and visit counts (deleted elsewhere)."""
        self.q.pop(state, None)
        self.n.pop(state, None)
        self.entries.discard_state(state)
        self._touch(state)

    def forget_all(self) -> None:
        """Forget every row and every correction."""
        self.q.clear()
        self.n.clear()
        self.entries.clear()
        self.corrections.replace_all({})
        self._touch_all()

    def load(self, table: ValidatedTable, mode: str = "replace") -> None:
        """Install a validated table: ``replace`` the rows, or ``merge`` (overwrite the given entries)."""
        if mode not in ("replace", "merge"):
            raise ValueError("mode must be 'replace' or 'merge'")
        if mode == "replace":
            self.forget_all()
        for s, row in table.states.items():
            qrow = self.q.setdefault(s, {})
            nrow = self.n.setdefault(s, {})
            for a, (qv, nv) in row.items():
                qrow[a] = f32(qv)  # as a packed row stores it
                nrow[a] = min(nv, VISITS_MAX)
        self.entries.rebuild(self.q)
        self._touch_all()

    def sync_entries(self) -> None:
        """Re-derive the entry index after ``q`` was edited directly."""
        self.entries.rebuild(self.q)
        self._touch_all()

    # --- introspection -------------------------------------------------------------------
    def cache_bytes(self) -> int:
        """Approximate bytes of the rows: dicts, float/int objects, each distinct action id once."""
        size = sys.getsizeof(self.q) + sys.getsizeof(self.n)
        names: dict[int, int] = {}
        for row in self.q.values():
            size += sys.getsizeof(row) + 24 * len(row)  # a float object per entry
            for a in row:
                names[id(a)] = sys.getsizeof(a)
        for nrow in self.n.values():
            size += sys.getsizeof(nrow) + 28 * len(nrow)
            for a in nrow:
                names[id(a)] = sys.getsizeof(a)
        return size + sum(names.values())


class QTable(RowCache):
    """In-memory Q table (simulator, tests): a ``RowCache``, exported in the Redis store's format."""

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.q, self.n) == (other.q, other.n)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return f"QTable(q={self.q!r}, n={self.n!r})"

    def reset(self) -> None:
        """Forget everything learned."""
        self.forget_all()

    def export(self, device: str, actions: Iterable[str] | None = None) -> dict[str, Any]:
        """The table in the export format, as the JSON-able data ``validate_export`` reads."""
        acts = set(actions or ())
        for r in self.q.values():
            acts.update(r)
        states = {
            str(s): {a: {"q": v, "n": self.n.get(s, {}).get(a, 0)} for a, v in sorted(row.items())}
            for s, row in sorted(self.q.items())
            if row
        }
        return {"format_version": EXPORT_FORMAT_VERSION, "device": device, "actions": sorted(acts), "states": states}

    def stats(self) -> TableCounts:
        return TableCounts(
            states=sum(1 for r in self.q.values() if r),
            states_visited=sum(1 for r in self.n.values() if any(r.values())),
            entries=sum(len(r) for r in self.q.values()),
            visits_total=sum(sum(r.values()) for r in self.n.values()),
        )
