"""Request deadlines: how long a request may take, and how much of that each dispatch gets.

Pure (no I/O, the clock is passed in). A request's deadline is its ``deadline_ms``, or else its
QoS target times ``deadline_qos_factor`` within [``deadline_min_ms``, ``deadline_max_ms``]: the
QoS target is the *target's* latency (a phone's modelled inference), not the decider host's, so a
derived deadline needs a factor and a floor: queueing on the host, and a runner's cold start (the
first request for a model it has not loaded yet waits seconds for the session). The first dispatch, if
another runner could still take the request, gets ``hop_share`` of the time left and leaves the
rest for the fallback; a fallback gets all the time left but ``answer_share`` of the budget, kept
to answer before the deadline. So a hung runner costs a request at most ``hop_share`` of its
deadline, and the fallback still fits. (A fallback that is itself given only a share fails more
often than it saves: the runners that take over a hung one's load are the busiest ones then.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeadlinePolicy:
    qos_factor: float = 20.0
    min_s: float = 10.0
    max_s: float = 30.0
    hop_share: float = 0.5
    hop_max_s: float = 30.0  # no single dispatch takes longer, whatever the deadline
    answer_share: float = 0.05  # of the budget, kept after the last dispatch to answer in time

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ValueError(f"need 0 < min_s <= max_s, got {self.min_s}, {self.max_s}")
        if not 0 < self.hop_share <= 1:
            raise ValueError(f"hop_share must be in (0, 1], got {self.hop_share}")
        if not 0 <= self.answer_share < 0.5:
            raise ValueError(f"answer_share must be in [0, 0.5), got {self.answer_share}")

    def budget_s(self, deadline_ms: float | None, qos_ms: float) -> float:
        """The request's time budget: its own ``deadline_ms`` as given, else derived from its QoS."""
        if deadline_ms is not None:
            return deadline_ms / 1e3
        return min(self.max_s, max(self.min_s, qos_ms * self.qos_factor / 1e3))

    def blames(self, hop_timeout_s: float) -> bool:
        """Whether a runner that misses this hop timeout is at fault: only if the hop had at least
        half of what a request with the floor deadline gives its first hop (0.5 s by default). A
        client's own tight deadline must not count against (and so eject) a healthy runner."""
        return hop_timeout_s >= 0.5 * self.min_s * self.hop_share

    def start(self, now: float, deadline_ms: float | None, qos_ms: float) -> Deadline:
        return Deadline(start=now, budget_s=self.budget_s(deadline_ms, qos_ms), policy=self)


@dataclass(frozen=True, slots=True)
class Deadline:
    """One request's deadline, on the monotonic clock of the process that started it."""

    start: float
    budget_s: float
    policy: DeadlinePolicy

    @property
    def at(self) -> float:
        return self.start + self.budget_s

    @property
    def budget_ms(self) -> float:
        return self.budget_s * 1e3

    def remaining(self, now: float) -> float:
        return self.at - now

    def expired(self, now: float) -> bool:
        return now >= self.at

    def hop_timeout(self, now: float, *, first: bool, fallback_left: bool) -> float:
        """How long the next dispatch may take: ``hop_share`` of the time left for a first try
        that could fall back, else the time left less the answer margin; never more than
        ``hop_max_s``, never negative."""
        p = self.policy
        left = max(0.0, self.remaining(now))
        t = left * p.hop_share if first and fallback_left else left - p.answer_share * self.budget_s
        return max(0.0, min(t, p.hop_max_s))
