"""Learned corrections of the device profile, per target family. Pure: no I/O.

A *family* groups the actions whose profile errors move together: runner/processor/precision (every
DVFS step of the phone's CPU at INT8 is one family), so what one network teaches about a processor
serves every other network and state at once. Per family, and per (network, family) -- how far one
network departs from its family (the network's own kernels, memory behaviour) -- we keep
exponentially weighted statistics of the log ratio observed / predicted, for latency and energy::

    x = ln(measured latency / profile latency)     y = ln(measured energy / profile energy)

``correction_step`` is the one update rule; the Redis script in ``services.decider.qstore`` evaluates
exactly the same expressions in the same order (doubles), so a process's local copy and Redis agree
bit for bit. The learning rate is 1/n for the n-th observation (a plain mean) until it reaches
``lr_floor``, then constant (the estimate keeps tracking a drifting device); the variance is the
exponentially weighted one that pairs with that mean (West 1979).

``Corrections`` holds the statistics of every family and a *published* snapshot: a family is
republished only when its correction moved by more than ``refresh`` (log units) or while it has few
observations; ``epoch`` counts publications and ``pub_versions`` says when each key was last
published. A policy memoises what it derives from the published values per key, so a correction
that barely moves costs nothing on the decision path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

# The observation count saturates here: the learning rate only needs n up to 1 / lr_floor.
N_CAP = 1000.0
# While a family has fewer observations than this, every change is published (its spread shrinks
# quickly from the profile's prior spread).
EARLY = 12.0


def model_key(model: str, family: str) -> str:
    """The key of a (network, family) correction (a family key never contains ``#``)."""
    return f"{model}#{family}"


@dataclass(frozen=True, slots=True)
class CorrectionObs:
    """One observation of a family (and of ``model``'s departure from it, when given): log ratios
    measured / profile for latency and energy."""

    family: str
    x_lat: float
    x_energy: float
    lr_floor: float = 0.02
    model: str | None = None

    def stat_keys(self) -> tuple[str, ...]:
        """The statistics this observation updates."""
        return (self.family,) if self.model is None else (self.family, model_key(self.model, self.family))


class FamilyStats(NamedTuple):
    """Observations (saturating at ``N_CAP``), then mean and variance of the two log ratios. A
    named tuple: one is built per observation on the training path (a frozen dataclass costs 3x)."""

    n: float = 0.0
    m_lat: float = 0.0
    v_lat: float = 0.0
    m_energy: float = 0.0
    v_energy: float = 0.0


ZERO = FamilyStats()


def correction_step(s: FamilyStats, obs: CorrectionObs) -> FamilyStats:
    """The statistics after one more observation. Keep the expression order: the Lua script
    (``services.decider.qstore.keys``) mirrors it term for term."""
    n, m_lat, v_lat, m_energy, v_energy = s
    n = min(n + 1.0, N_CAP)
    lr = max(obs.lr_floor, 1.0 / n)
    d = obs.x_lat - m_lat
    m_lat = m_lat + lr * d
    v_lat = (1.0 - lr) * (v_lat + lr * d * d)
    e = obs.x_energy - m_energy
    m_energy = m_energy + lr * e
    v_energy = (1.0 - lr) * (v_energy + lr * e * e)
    return FamilyStats(n, m_lat, v_lat, m_energy, v_energy)


class Corrections:
    """Every family's statistics (``stats``), the published snapshot and its ``epoch``.

    Changed only through ``learn`` (a local observation) and ``set`` (a value confirmed elsewhere,
    e.g. by Redis); ``versions`` holds, per family, the version of the write last installed by ``set``.
    """

    __slots__ = ("_log", "_log_start", "epoch", "pub_versions", "published", "refresh", "stats", "versions")

    def __init__(self, refresh: float = 0.005) -> None:
        self.stats: dict[str, FamilyStats] = {}
        self.published: dict[str, FamilyStats] = {}
        self.pub_versions: dict[str, int] = {}  # key -> the epoch it was last published at
        self.versions: dict[str, int] = {}
        self.refresh = refresh
        self.epoch = 0
        self._log: list[str] = []  # the key of each publication after epoch _log_start
        self._log_start = 0

    def learn(self, obs: CorrectionObs) -> None:
        for key in obs.stat_keys():
            new = correction_step(self.stats.get(key, ZERO), obs)
            self.stats[key] = new
            self._maybe_publish(key, new)

    def set(self, family: str, stats: FamilyStats, version: int | None = None) -> bool:
        """Install a confirmed value; False if a newer write was already installed."""
        if version is not None:
            if self.versions.get(family, -1) >= version:
                return False
            self.versions[family] = version
        self.stats[family] = stats
        self._maybe_publish(family, stats)
        return True

    def replace_all(self, stats: dict[str, FamilyStats], versions: dict[str, int] | None = None) -> None:
        """Install a whole set (a reload): everything is republished."""
        self.stats = dict(stats)
        self.published = dict(stats)
        self.versions = dict(versions or {})
        self.epoch += 1
        self.pub_versions = dict.fromkeys(stats, self.epoch)
        self._log, self._log_start = [], self.epoch

    def _maybe_publish(self, family: str, new: FamilyStats) -> None:
        old = self.published.get(family)
        thr = self.refresh
        if old is not None:  # unpacked: this runs twice per observation on the training path
            on, oml, ovl, ome, _ = old
            _, nml, nvl, nme, _ = new
        if (
            old is None
            or on < EARLY
            or abs(nml - oml) > thr
            or abs(nme - ome) > thr
            or abs(math.sqrt(nvl) - math.sqrt(ovl)) > thr
        ):
            self.published[family] = new
            self.epoch += 1
            self.pub_versions[family] = self.epoch
            self._log.append(family)
            if len(self._log) > 4096:  # keep the recent ones
                self._log_start += 2048
                del self._log[:2048]

    def published_since(self, epoch: int) -> list[str] | None:
        """The keys published after ``epoch`` (None: too long ago, or a reload since)."""
        if epoch < self._log_start:
            return None
        return self._log[epoch - self._log_start :]

    def __len__(self) -> int:
        return len(self.stats)
