"""``POST /run`` with a ``partition``: the runner executes one sub-graph of a model.

A part is served as a model of its own: ``part_info`` gives the ``ModelInfo`` it runs as (the
start cut's boundary tensors as its inputs, the end cut's as its outputs, the part's own MACs and
layers as its features), so ``/run``'s checks (dtype, shape, finite values: 422 naming
``inputs.<tensor>``), its modelled latency and energy (eqs. 1-3 on the part's features) and its
link emulation (the real boundary bytes) apply unchanged. An unknown cut, a range that ends before
it starts, or a cut on a network without cut points is a 422 naming ``partition.start`` or
``partition.end``. A part that ends at a cut returns its boundary tensors in full, whatever
``output_format`` and ``outputs`` ask: the next part needs them. A runner keeps the sessions of the parts it ran last
(``PART_SESSIONS_MAX``; whole models are not counted): a network has up to 8 cuts, so its parts
could otherwise hold many copies of its weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from services.core.partition import partition_features
from services.core.schemas import ModelInfo, Partition, RunRequest, TensorSpec


def effective(partition: Partition | None) -> Partition | None:
    """The partition to run: None for the whole network (also when both ends are null)."""
    return None if partition is None or partition.whole else partition


def part_key(partition: Partition | None) -> str:
    """The partition's share of a session key ("" for the whole network)."""
    return "" if partition is None else f"{partition.start or ''}>{partition.end or ''}"


def part_info(info: ModelInfo, partition: Partition) -> ModelInfo:
    """The ``ModelInfo`` a part is served as (422 naming the field for a cut the model does not have)."""
    features = partition_features(info.features, info.cut_points, partition)
    by_name = {c.name: c for c in info.cut_points}

    def specs(cut: str) -> list[TensorSpec]:
        return [TensorSpec(name=t.name, dtype=t.dtype, shape=list(t.shape)) for t in by_name[cut].tensors]

    inputs = info.inputs if partition.start is None else specs(partition.start)
    outputs = info.outputs if partition.end is None else specs(partition.end)
    return info.model_copy(update={"inputs": inputs, "outputs": outputs, "features": features})


def as_run(req: RunRequest, partition: Partition | None) -> RunRequest:
    """The request as the part runs it: a part that ends at a cut returns every boundary tensor in full."""
    if partition is None or partition.end is None:
        return req
    return req.model_copy(update={"output_format": "tensor", "outputs": None})


PART_SESSIONS_MAX = 16


class PartSessions:
    """Which part sessions to keep: the ``limit`` used last (least recently used are dropped)."""

    def __init__(self, limit: int = PART_SESSIONS_MAX) -> None:
        self.limit = limit
        self._order: OrderedDict[Hashable, None] = OrderedDict()

    def used(self, key: Hashable) -> list[Hashable]:
        """Record a use of ``key``; returns the keys to drop."""
        self._order[key] = None
        self._order.move_to_end(key)
        out: list[Hashable] = []
        while len(self._order) > self.limit:
            out.append(self._order.popitem(last=False)[0])
        return out
