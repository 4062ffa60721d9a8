"""Partitioned execution, the pure part: a sub-graph's features and what a plan costs. No I/O.

A network's cut points (``ModelInfo.cut_points``, found in ``services.common.features.partition``)
carry the layer counts and MACs before and after each cut, so a part ``[start, end)`` has Table I
features of its own: the difference of the two cuts' ``before`` counts, with the boundary
tensors' bytes as its input and output. The cost model (``costmodel``, eqs. 1-4) then prices each
part as it prices a whole network on its target, and a plan is the sum of its parts:

* a part on the phone costs eqs. 1-3 on its own MACs and layers (its processor's launch cost
  included: each part is a dispatch of its own);
* a remote part costs the phone eq. 4: sending the boundary bytes it needs, receiving the ones it
  returns, and idling meanwhile (the phone relays every boundary tensor);
* consecutive parts on two processors of one device pay a copy of the boundary bytes
  (``DeviceProfile.interconnect``), charged to the phone when that device is the phone.

``partition_features`` / ``plan_cost`` are the scalar path (the decider, the policies);
``PlanCostTable`` evaluates plans under many conditions at once for the simulator, with the same
equations (tests check they agree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from services.core.costmodel import CostTable, Deviations, Mesh, estimate
from services.core.errors import AutoScaleError
from services.core.profiles import DeviceProfile
from services.core.schemas import (
    CutPoint,
    LayerCounts,
    Location,
    ModelFeatures,
    Partition,
    Plan,
    PlanPart,
    RuntimeConditions,
    Target,
)


class PartitionError(AutoScaleError, ValueError):
    """A partition that does not fit the model: an unknown cut, cuts out of order, a network
    without cut points; ``field`` names the request field at fault."""

    status = 422
    code = "invalid_partition"


def cut_index(cuts: Sequence[CutPoint], name: str, field: str) -> int:
    """Position of the cut ``name`` among ``cuts``; 422 naming ``field`` when there is none."""
    for i, c in enumerate(cuts):
        if c.name == name:
            return i
    if not cuts:
        raise PartitionError("this network has no cut points: it can only run whole", field=field)
    shown = ", ".join(c.name for c in cuts)
    raise PartitionError(f"{name!r} is not a cut point of this network; its cut points: {shown}", field=field)


def check_partition(cuts: Sequence[CutPoint], partition: Partition, prefix: str = "partition") -> tuple[int, int]:
    """(start, end) positions on the line ``input=0, cut 0=1, ..., outputs=len(cuts)+1``; 422 naming
    ``<prefix>.start`` / ``.end`` for an unknown cut or an empty or reversed range."""
    start = 0 if partition.start is None else cut_index(cuts, partition.start, f"{prefix}.start") + 1
    end = len(cuts) + 1 if partition.end is None else cut_index(cuts, partition.end, f"{prefix}.end") + 1
    if end <= start:
        raise PartitionError(
            f"partition ends at {partition.end!r}, which is not after its start {partition.start!r}",
            field=f"{prefix}.end",
        )
    return start, end


def _counts(features: ModelFeatures, cuts: Sequence[CutPoint], pos: int) -> LayerCounts:
    """Layer counts and MACs before position ``pos`` (0: nothing; len(cuts)+1: the whole network)."""
    if pos == 0:
        return LayerCounts()
    if pos > len(cuts):
        return LayerCounts(conv=features.conv, fc=features.fc, rc=features.rc, macs=features.macs)
    return cuts[pos - 1].before


def partition_features(features: ModelFeatures, cuts: Sequence[CutPoint], partition: Partition) -> ModelFeatures:
    """Table I features of the part ``partition`` of a network: its MACs and layers, and the
    bytes of what it receives and returns (the boundary tensors, or the network's input and output)."""
    start, end = check_partition(cuts, partition)
    a, b = _counts(features, cuts, start), _counts(features, cuts, end)
    return ModelFeatures(
        conv=b.conv - a.conv,
        fc=b.fc - a.fc,
        rc=b.rc - a.rc,
        macs=b.macs - a.macs,
        params=0,
        input_bytes=features.input_bytes if start == 0 else cuts[start - 1].bytes,
        output_bytes=features.output_bytes if end > len(cuts) else cuts[end - 1].bytes,
    )


def check_plan(cuts: Sequence[CutPoint], plan: Plan, prefix: str = "plan") -> None:
    """A plan covers the network once, in order: part k starts where part k-1 ended."""
    parts = plan.parts
    if parts[0].partition.start is not None:
        raise PartitionError("a plan's first part starts at the model's inputs", field=f"{prefix}.0.start")
    if parts[-1].partition.end is not None:
        raise PartitionError("a plan's last part ends at the model's outputs", field=f"{prefix}.{len(parts) - 1}.end")
    for k, p in enumerate(parts):
        check_partition(cuts, p.partition, f"{prefix}.{k}")
        if k and p.partition.start != parts[k - 1].partition.end:
            raise PartitionError(f"part {k} does not start where part {k - 1} ends", field=f"{prefix}.{k}")


# ----------------------------------------------------------------------------- costs


def copy_cost(profile: DeviceProfile, nbytes: int) -> tuple[float, float]:
    """(seconds, joules) of handing ``nbytes`` from one of the device's processors to another."""
    ic = profile.interconnect
    t = ic.latency_ms / 1e3 + nbytes / (ic.gbps * 1e9)
    return t, ic.power_w * t


def needs_copy(prev: PlanPart, part: PlanPart) -> bool:
    """Two consecutive parts on one device but different processors hand the tensors over in memory."""
    return prev.target.runner == part.target.runner and prev.target.processor != part.target.processor


@dataclass(frozen=True, slots=True)
class PartCost:
    part: PlanPart
    features: ModelFeatures
    inference_s: float
    tx_s: float
    rx_s: float
    copy_s: float  # handing its inputs over from the previous part's processor
    energy_j: float  # the phone's (eqs. 1-4, plus the copy when on the phone)

    @property
    def latency_s(self) -> float:
        return self.copy_s + self.tx_s + self.inference_s + self.rx_s


@dataclass(frozen=True, slots=True)
class PlanCost:
    parts: tuple[PartCost, ...]

    @property
    def latency_s(self) -> float:
        return sum(p.latency_s for p in self.parts)

    @property
    def energy_j(self) -> float:
        return sum(p.energy_j for p in self.parts)


def plan_cost(
    mesh: Mesh, features: ModelFeatures, cuts: Sequence[CutPoint], plan: Plan, cond: RuntimeConditions
) -> PlanCost:
    """The modelled cost of running ``plan`` under ``cond`` (what the policies predict with)."""
    out: list[PartCost] = []
    for k, part in enumerate(plan.parts):
        f = partition_features(features, cuts, part.partition)
        c = estimate(mesh, f, part.target, cond)
        copy_s = copy_j = 0.0
        if k and needs_copy(plan.parts[k - 1], part):
            copy_s, copy_j = copy_cost(mesh.profile_for(part.target.runner), f.input_bytes)
            if part.target.runner != Location.edge:
                copy_j = 0.0  # another device's memory traffic: not the phone's energy
            copy_j += mesh.edge.base_w * copy_s  # the phone stays on (base power) while any device copies
        out.append(PartCost(part, f, c.inference_s, c.tx_s, c.rx_s, copy_s, c.energy_j + copy_j))
    return PlanCost(tuple(out))


@dataclass
class PlanCostTable:
    """Plans of one network evaluated under N conditions at once (the simulator's plan columns):
    one ``CostTable`` per part, summed, plus the copies. Same equations as ``plan_cost``."""

    mesh: Mesh
    features: ModelFeatures
    cuts: Sequence[CutPoint]
    plans: list[Plan]
    _tables: list[list[CostTable]] = field(init=False, repr=False)
    _copy: np.ndarray = field(
        init=False, repr=False
    )  # (P, 2): seconds, phone joules (besides base power) of the copies

    def __post_init__(self) -> None:
        self._tables = []
        self._copy = np.zeros((len(self.plans), 2))
        for i, plan in enumerate(self.plans):
            check_plan(self.cuts, plan)
            tables = []
            for k, part in enumerate(plan.parts):
                f = partition_features(self.features, self.cuts, part.partition)
                tables.append(CostTable(self.mesh, f, [part.target]))
                if k and needs_copy(plan.parts[k - 1], part):
                    t, j = copy_cost(self.mesh.profile_for(part.target.runner), f.input_bytes)
                    self._copy[i] += (t, j if part.target.runner == Location.edge else 0.0)
            self._tables.append(tables)

    def evaluate(
        self,
        co_cpu: np.ndarray,
        co_mem: np.ndarray,
        rssi_wifi: np.ndarray,
        rssi_p2p: np.ndarray,
        *,
        dev: Callable[[Sequence[Target]], Deviations] | None = None,
    ) -> dict[str, np.ndarray]:
        """Arrays of shape (N, P), as ``CostTable.evaluate``: the sums over each plan's parts.

        ``dev``: a world that deviates from the profiles, as the ``Deviations`` of given target
        columns (None: the profiles); each part is evaluated under its own target's."""
        n = len(np.atleast_1d(co_cpu))
        keys = ("inference_s", "tx_s", "rx_s", "latency_s", "energy_j", "device_energy_j")
        out = {k: np.zeros((n, len(self.plans))) for k in keys}
        base_w = self.mesh.edge.base_w
        for i, tables in enumerate(self._tables):
            base_x = 1.0
            for t in tables:
                d = dev(t.targets) if dev is not None else None
                base_x = d.base_power if d is not None else 1.0
                part = t.evaluate(co_cpu, co_mem, rssi_wifi, rssi_p2p, dev=d)
                for k in keys:
                    out[k][:, i] += part[k][:, 0]
            out["latency_s"][:, i] += self._copy[i, 0]
            out["energy_j"][:, i] += self._copy[i, 1] + base_w * base_x * self._copy[i, 0]
        return out
