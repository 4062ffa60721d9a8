"""The simulated world's hidden truth: how the real devices differ from their profiles.

A real phone differs from any profile by far more than run-to-run noise, so the simulator does not
score policies on the decider's own cost model. From a world seed the policies never see, a
``TrueWorld`` draws systematic deviations of every device in the mesh from its profile:

* per device x processor x precision: an inference-time multiplier and a power multiplier
  (lognormal, median 1, log-sd ``sigma``), shared by every DVFS step of that pair;
* per device x processor x network: an interaction multiplier of the inference time
  (log-sd ``sigma / 2``: a network that maps worse or better onto that processor than its MACs
  and layer counts say);
* per link (Wi-Fi, Wi-Fi Direct): a goodput multiplier and a radio-power multiplier (log-sd
  ``sigma``), and the phone's base power (log-sd ``sigma``);
* the phone's energy estimator: per phone processor x precision and per link a bias (log-sd
  ``estimator_sigma``). What a policy is told about an inference's energy is the estimator's
  figure (eqs. 1-4 applied to the observed latency with the phone's power table), i.e. the true
  energy x this bias x the run's noise; the paper reports its estimator's MAPE as 7.3 %.

Opt and every score use the true costs; policies receive only the profiles (``DeviceWorld.mesh``),
``DecisionContext``s and observed ``Outcome``s. "Opt (informed)" is Opt's rule applied to the most a
deployed decider could ever learn of this world before its first inference of a network: the true
deviations without that network's interaction terms, and energy as the estimator reports it (a
phone has no power meter). It is a reference, not a bound: a policy may match Opt more often by
luck. ``sigma = 0`` (and ``estimator_sigma = 0``) is the
profiles themselves: the world the evaluation used before this module.

Every draw is keyed by the names it concerns (CRC-32 of seed and names), so adding a network or a
device does not move any other draw.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

from services.core.costmodel import Deviations, Mesh
from services.core.schemas import Location, Target

# Lognormal log-sd whose mean absolute percentage error is the paper's 7.3 % for the energy
# estimator: E|exp(Z) - 1| ~ sigma * sqrt(2 / pi) for small sigma.
PAPER_ESTIMATOR_SIGMA = 0.073 / math.sqrt(2.0 / math.pi)

_LINK_OF = {Location.peer: "p2p", Location.cloud: "wifi"}


class TrueWorld:
    """One mesh's hidden deviations from its profiles, drawn from ``seed`` (see the module doc).

    Held by the simulator only: ``deviations`` feeds the cost table that Opt and the scores read,
    ``estimator_bias`` the energy that policies observe."""

    __slots__ = ("_cache", "_mesh", "_seed", "estimator_sigma", "sigma")

    def __init__(self, mesh: Mesh, seed: int, sigma: float, estimator_sigma: float) -> None:
        self._mesh = mesh
        self._seed = seed
        self.sigma = sigma
        self.estimator_sigma = estimator_sigma
        self._cache: dict[tuple[str, ...], float] = {}

    def _draw(self, sigma: float, *key: str) -> float:
        """exp(N(0, sigma^2)) for one named quantity; exactly 1 when sigma is 0."""
        if sigma <= 0.0:
            return 1.0
        k = (f"{sigma:.6g}", *key)
        v = self._cache.get(k)
        if v is None:
            rng = np.random.default_rng(zlib.crc32("|".join((str(self._seed), *k)).encode()))
            v = self._cache[k] = float(np.exp(rng.normal(0.0, sigma)))
        return v

    def _device(self, t: Target) -> str:
        return self._mesh.profile_for(t.runner).name

    def latency_multiplier(self, t: Target, network: str, interaction: bool = True) -> float:
        """``interaction=False``: without the network x processor term (what no inference of other
        networks can teach a decider about ``network``)."""
        dev = self._device(t)
        pair = self._draw(self.sigma, dev, str(t.processor), str(t.precision), "latency")
        if not interaction:
            return pair
        return pair * self._draw(self.sigma / 2.0, dev, str(t.processor), network, "interaction")

    def power_multiplier(self, t: Target) -> float:
        return self._draw(self.sigma, self._device(t), str(t.processor), str(t.precision), "power")

    def link(self, name: str) -> tuple[float, float]:
        """(goodput, radio power) multipliers of the phone's ``"wifi"`` or ``"p2p"`` link."""
        edge = self._mesh.edge.name
        return self._draw(self.sigma, edge, name, "goodput"), self._draw(self.sigma, edge, name, "radio")

    @property
    def base_power_multiplier(self) -> float:
        return self._draw(self.sigma, self._mesh.edge.name, "base")

    def deviations(self, network: str, targets: Sequence[Target], interaction: bool = True) -> Deviations:
        """The true world's multipliers for one network's target columns (``interaction``: see
        ``latency_multiplier``)."""
        links = {name: self.link(name) for name in ("wifi", "p2p")}
        return Deviations(
            latency=np.array([self.latency_multiplier(t, network, interaction) for t in targets]),
            power=np.array([self.power_multiplier(t) for t in targets]),
            goodput={k: v[0] for k, v in links.items()},
            radio_power={k: v[1] for k, v in links.items()},
            base_power=self.base_power_multiplier,
        )

    def estimator_bias(self, targets: Sequence[Target]) -> np.ndarray:
        """(T,) the phone's energy estimate / the true energy, per target column (before noise)."""
        edge = self._mesh.edge.name
        out = []
        for t in targets:
            loc = Location(t.runner)
            what = (str(t.processor), str(t.precision)) if loc is Location.edge else (_LINK_OF[loc],)
            out.append(self._draw(self.estimator_sigma, edge, *what, "estimator"))
        return np.array(out)

    def __repr__(self) -> str:  # never print the draws
        return f"TrueWorld(sigma={self.sigma}, estimator_sigma={self.estimator_sigma:.3f})"
