"""Typed results of the Redis store's bulk operations (the admin API's response models).
Field order is the JSON order; the table formats themselves are in
``services.core.policies.qlearning.models``."""

from __future__ import annotations

from typing import Literal

from services.core.policies.qlearning import TransferReport
from services.core.schemas import StrictModel


class ImportResult(StrictModel):
    device: str
    mode: Literal["replace", "merge"]
    states: int
    entries: int
    version: int  # the table's version after the import


class ResetResult(StrictModel):
    device: str
    states_cleared: int
    version: int


class TransferResult(TransferReport):
    version: int  # the destination table's version after the transfer


class QTableStats(StrictModel):
    """Table size in Redis and in this process, against the paper's 0.4 MB, and the counters
    of the write-behind writer and of the cache sync."""

    device: str
    states: int
    states_visited: int
    state_space: int
    entries: int
    visits_total: int  # each entry's count saturates at VISITS_MAX (the packed rows' 4 bits)
    # the global write counter in Redis: one per update applied, one per bulk write (import, reset,
    # transfer); what counts updates exactly
    version: int
    actions: int
    redis_memory_bytes: int
    redis_table_bytes: int
    redis_keys: int
    cache_states: int
    cache_entries: int
    cache_bytes: int
    paper_memory_bytes: int
    redis_vs_paper: float
    cache_vs_paper: float
    queue_depth: int
    submitted_total: int
    applied_total: int
    dropped_total: int
    duplicates_total: int
    reconciles_total: int
    version_seen: int
    replayed_total: int = 0  # re-applied after Redis restarted without them (counted in applied_total too)
    lost_total: int = 0  # acknowledged, lost by Redis, no longer in the replay window
