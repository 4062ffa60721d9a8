"""Typed results of the Q-table operations that need no Redis (the store's own are in
``services.decider.qstore.models``). Field order is the JSON order the admin API answers with."""

from __future__ import annotations

from services.core.schemas import StrictModel


class QEntry(StrictModel):
    """One stored entry: Q(S, A) and how many updates it has had."""

    q: float
    n: int


class TableParams(StrictModel):
    """The table's nominal learning parameters, recorded in exports."""

    learning_rate: float
    discount: float
    seed: int | None


class QTableExport(StrictModel):
    """A whole table in the export format (``export.validate_export`` reads it back)."""

    format_version: int
    device: str
    actions: list[str]
    states: dict[str, dict[str, QEntry]]  # state index -> action id -> entry
    exported_at: str
    params: TableParams


class TableCounts(StrictModel):
    """Size of an in-memory table."""

    states: int
    states_visited: int
    entries: int
    visits_total: int


class TransferReport(StrictModel):
    """What a transfer between devices did (``transfer.transfer_table``)."""

    from_device: str
    to_device: str
    mapping: dict[str, str]  # destination action -> source action it inherits from, by id
    entries_copied: int
    entries_dropped: int
    states: int


class StatePolicy(StrictModel):
    """The learned policy in one state: the best action among the tried ones, and every entry."""

    best: str
    best_q: float
    visits: int
    labels: dict[str, str]  # Table I bin labels of the state
    actions: dict[str, QEntry]  # by descending Q


class PolicyView(StrictModel):
    """Best action per stored state."""

    device: str
    format_version: int
    states: dict[str, StatePolicy]
