"""Outlier ejection of runners, modelled on Envoy's outlier detection (pure; the clock is passed in).

A runner whose dispatches fail ``consecutive`` times in a row (a timeout, a connection error or a
5xx; Envoy's ``consecutive_gateway_failure`` default is 5) is ejected: its targets leave the
candidate set for ``base_s`` (30 s), doubled for each repeat ejection and capped at ``max_s``
(300 s). One success resets the count. After the ejection time it is readmitted only once a
health probe succeeds (the registry's ``/targets`` refresh). As in Envoy, the multiplier decays:
it drops by one for every ``base_s`` the runner has stayed in since its readmission, and at most
``max_ejected_share`` of the hosts (10 %; but always at least one) are ejected at a time: when one
runner dies, the others take its load and slow down, and ejecting them too would cascade.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

H = TypeVar("H", bound=Hashable)


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    consecutive: int = 5
    base_s: float = 30.0
    max_s: float = 300.0
    max_ejected_share: float = 0.1

    def __post_init__(self) -> None:
        if self.consecutive < 1 or self.base_s <= 0 or self.max_s < self.base_s or not 0 <= self.max_ejected_share <= 1:
            raise ValueError(f"invalid ejection policy {self}")

    def max_ejected(self, hosts: int) -> int:
        """How many of ``hosts`` may be ejected at once: the share, but at least one (as Envoy)."""
        return max(1, int(self.max_ejected_share * hosts))

    def duration_s(self, level: int) -> float:
        """Ejection time of the ``level``-th repeat (0 = first): base x 2^level, capped."""
        return min(self.max_s, self.base_s * 2.0 ** min(level, 32))


@dataclass(slots=True)
class HostHealth:
    failures: int = 0  # consecutive
    level: int = 0  # ejections not yet decayed: the next one lasts base x 2^level
    ejected_until: float | None = None
    readmitted_at: float = 0.0
    ejections_total: int = 0


@dataclass
class OutlierDetector(Generic[H]):
    policy: EjectionPolicy = field(default_factory=EjectionPolicy)
    hosts: dict[H, HostHealth] = field(default_factory=dict)
    population: int = 0  # how many hosts there are (for the ejection cap); 0 = the ones seen so far

    def _host(self, host: H) -> HostHealth:
        h = self.hosts.get(host)
        if h is None:
            h = self.hosts[host] = HostHealth()
        return h

    def success(self, host: H) -> None:
        self._host(host).failures = 0

    def failure(self, host: H, now: float) -> float | None:
        """Count one failure; returns the ejection time if this failure ejects the host."""
        h = self._host(host)
        if h.ejected_until is not None:
            return None  # a request that was already in flight when it was ejected
        h.failures += 1
        if h.failures < self.policy.consecutive:
            return None
        if len(self.ejected()) >= self.policy.max_ejected(self.population or len(self.hosts)):
            return None  # the cap: it stays in, its failures keep counting
        if h.ejections_total:
            h.level = max(0, h.level - int((now - h.readmitted_at) // self.policy.base_s))
        duration = self.policy.duration_s(h.level)
        h.level += 1
        h.ejections_total += 1
        h.failures = 0
        h.ejected_until = now + duration
        return duration

    def is_ejected(self, host: H) -> bool:
        h = self.hosts.get(host)
        return h is not None and h.ejected_until is not None

    def due(self, host: H, now: float) -> bool:
        """Ejected, and its ejection time is over: readmit it after a successful probe."""
        h = self.hosts.get(host)
        return h is not None and h.ejected_until is not None and now >= h.ejected_until

    def readmit(self, host: H, now: float) -> None:
        h = self._host(host)
        h.ejected_until = None
        h.failures = 0
        h.readmitted_at = now

    def ejected(self) -> list[H]:
        return [k for k, h in self.hosts.items() if h.ejected_until is not None]
