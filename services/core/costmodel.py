"""The cost model: latency of a target and the energy of eqs. 1-4, from device profiles. Pure.

Latency of a network on a processor (why each term: see ``profiles.ProcessorProfile``)::

    t = (MACs / throughput[precision] + sum_layer_type n * layer_ms) * (mb + (1 - mb) * f_max / f)
        + launch_ms,  x (1 + cpu * co_cpu + mem * co_mem) on the phone itself

Energy: eq. 1 (CPU) / eq. 2 (GPU): busy power at the step x busy time + idle power x idle time,
summed over the cores used; eq. 3 (DSP): constant power x latency; eq. 4 (remote, the phone's
radio): P_tx(S) t_tx + P_rx(S) t_rx + P_idle (latency - t_tx - t_rx). On top of each, the phone's
base power (SoC + display idle, ``DeviceProfile.base_power_w``) over the whole latency: the paper
measured the whole phone, so every target pays it for as long as the phone waits for the result.

Scalar functions serve the runners and the decider (microseconds each); ``CostTable`` evaluates
every target of a mesh under many conditions at once for the simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from services.core.profiles import DeviceProfile, LinkProfile, ProcessorProfile
from services.core.schemas import Location, ModelFeatures, Precision, Processor, RuntimeConditions, Target

# The paper's action set (Sec. V-C): which (processor, precision) pairs are actions where, and
# whether the phone's DVFS steps augment them. Peer and cloud run at their own governor's choice.
_ACTIONS: dict[Location, tuple[tuple[Processor, Precision], ...]] = {
    Location.edge: (
        (Processor.cpu, Precision.fp32),
        (Processor.cpu, Precision.int8),
        (Processor.gpu, Precision.fp32),
        (Processor.gpu, Precision.fp16),
        (Processor.dsp, Precision.int8),
    ),
    Location.peer: ((Processor.cpu, Precision.fp32), (Processor.gpu, Precision.fp32), (Processor.dsp, Precision.int8)),
    Location.cloud: ((Processor.cpu, Precision.fp32), (Processor.gpu, Precision.fp32)),
}


@dataclass(frozen=True)
class Mesh:
    """The phone the decider serves, its Wi-Fi Direct peer and the cloud server."""

    edge: DeviceProfile
    peer: DeviceProfile
    cloud: DeviceProfile

    def profile_for(self, location: Location | str) -> DeviceProfile:
        return {Location.edge: self.edge, Location.peer: self.peer, Location.cloud: self.cloud}[Location(location)]

    def targets(self, features: ModelFeatures | None = None) -> list[Target]:
        """Every action of the mesh; with ``features``, only those that can run that network."""
        out: list[Target] = []
        for loc in Location:
            prof = self.profile_for(loc)
            out += [t for t in targets_for(prof, loc) if features is None or supports(prof, t, features)]
        return out


@dataclass(frozen=True, slots=True)
class Cost:
    inference_s: float
    tx_s: float
    rx_s: float
    latency_s: float
    energy_j: float  # the phone's energy (eqs. 1-4)
    device_energy_j: float  # the executing device's own energy (== energy_j on the phone)


# ----------------------------------------------------------------------------- actions


def targets_for(profile: DeviceProfile, location: Location | str) -> list[Target]:
    """The paper's actions on one device: on the phone every DVFS step is its own action."""
    location = Location(location)
    out: list[Target] = []
    for proc_name, precision in _ACTIONS[location]:
        proc = profile.processors.get(proc_name)
        if proc is None or precision not in proc.throughput_gmacs:
            continue
        if location is Location.edge and proc.dvfs is not None:
            out += [
                Target(runner=location, processor=proc_name, precision=precision, dvfs=k)
                for k in range(proc.dvfs.steps)
            ]
        else:
            out.append(Target(runner=location, processor=proc_name, precision=precision, dvfs=None))
    return out


def supports(profile: DeviceProfile, target: Target, features: ModelFeatures) -> bool:
    """Whether ``profile`` can run a network with ``features`` on ``target``.

    Why RC matters: the paper notes no middleware ran MobileBERT's attention layers on mobile
    co-processors, so those targets are not offered for such networks."""
    proc = profile.processors.get(target.processor)
    if proc is None or target.precision not in proc.throughput_gmacs:
        return False
    if target.dvfs is not None and target.dvfs >= proc.n_steps:
        return False
    return not (features.rc > 0 and not proc.supports_rc)


def frequency_ghz(profile: DeviceProfile, target: Target) -> float | None:
    """Frequency a target runs at (top step when ``dvfs`` is None); None without a DVFS table."""
    proc = profile.processors.get(target.processor)
    if proc is None or proc.dvfs is None:
        return None
    return proc.dvfs.freqs_ghz[-1 if target.dvfs is None else target.dvfs]


def _proc(profile: DeviceProfile, target: Target) -> ProcessorProfile:
    proc = profile.processors.get(target.processor)
    if proc is None:
        raise ValueError(f"{profile.name} has no {target.processor}")
    if target.precision not in proc.throughput_gmacs:
        raise ValueError(f"{profile.name} {target.processor} does not run {target.precision}")
    if target.dvfs is not None and target.dvfs >= proc.n_steps:
        raise ValueError(f"{profile.name} {target.processor} has {proc.n_steps} DVFS steps, not step {target.dvfs}")
    return proc


# ----------------------------------------------------------------------------- latency & energy


def _slowdown(proc: ProcessorProfile, location: Location, cond: RuntimeConditions) -> float:
    # Co-runners live on the phone: remote devices do not see them.
    if location is not Location.edge:
        return 1.0
    return 1.0 + proc.interference.cpu * cond.co_cpu + proc.interference.mem * cond.co_mem


def _nominal_time(proc: ProcessorProfile, features: ModelFeatures, target: Target) -> float:
    """Inference time without interference, seconds."""
    t_work = features.macs / (proc.throughput_gmacs[target.precision] * 1e9)
    lay = proc.layer_ms
    t_work += (features.conv * lay.conv + features.fc * lay.fc + features.rc * lay.rc) / 1e3
    r = proc.freq_ratio(target.dvfs)
    # Only the compute-bound share stretches when the clock slows down.
    return t_work * (proc.memory_bound + (1.0 - proc.memory_bound) / r) + proc.launch_ms / 1e3


def inference_time(profile: DeviceProfile, features: ModelFeatures, target: Target, cond: RuntimeConditions) -> float:
    """Seconds the inference takes on ``target`` of ``profile`` (no transfer)."""
    proc = _proc(profile, target)
    return _nominal_time(proc, features, target) * _slowdown(proc, Location(target.runner), cond)


def _avg_power(proc: ProcessorProfile, step: int | None) -> float:
    """Eq. 1 summed over cores / eq. 2: busy power over the busy share plus idle power over the rest.

    busy_w is the power of all used cores, so splitting it per core and summing gives the same
    value; eq. 3 (DSP, utilisation 1, constant power) is the special case without DVFS."""
    return proc.busy_power(step) * proc.utilisation + proc.idle_w * (1.0 - proc.utilisation)


def device_energy(profile: DeviceProfile, target: Target, inference_s: float, cond: RuntimeConditions) -> float:
    """Joules the executing device spends on ``inference_s`` of inference (eqs. 1-3 plus its base power)."""
    del cond  # the co-runner's own power is not charged to the inference
    proc = _proc(profile, target)
    return (_avg_power(proc, target.dvfs) + profile.base_w) * inference_s


def _link(edge: DeviceProfile, location: Location) -> LinkProfile:
    if edge.radio is None:
        raise ValueError(f"{edge.name} has no radio section")
    if location is Location.cloud:
        return edge.radio.wifi
    if edge.radio.p2p is None:
        raise ValueError(f"{edge.name} has no Wi-Fi Direct (radio.p2p) section")
    return edge.radio.p2p


def _rssi(location: Location, cond: RuntimeConditions) -> float:
    return cond.rssi_wifi_dbm if location is Location.cloud else cond.rssi_p2p_dbm


@dataclass(frozen=True, slots=True)
class LinkState:
    """A link at one signal strength."""

    up_bps: float
    down_bps: float
    tx_w: float
    rx_w: float
    rtt_s: float
    idle_w: float


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            w = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
            return ys[i - 1] + w * (ys[i] - ys[i - 1])
    return ys[-1]  # unreachable


def link_state(link: LinkProfile, rssi_dbm: float) -> LinkState:
    """Goodput (log-linear in RSSI: it falls exponentially as the signal weakens) and radio power."""
    xs = [p.rssi_dbm for p in link.points]
    up = math.exp(_interp(rssi_dbm, xs, [math.log(p.up_mbps) for p in link.points]))
    down = math.exp(_interp(rssi_dbm, xs, [math.log(p.down_mbps) for p in link.points]))
    return LinkState(
        up_bps=up * 1e6,
        down_bps=down * 1e6,
        tx_w=_interp(rssi_dbm, xs, [p.tx_w for p in link.points]),
        rx_w=_interp(rssi_dbm, xs, [p.rx_w for p in link.points]),
        rtt_s=link.rtt_ms / 1e3,
        idle_w=link.idle_w,
    )


def link_times(
    edge: DeviceProfile, location: Location | str, up_bytes: int, down_bytes: int, cond: RuntimeConditions
) -> tuple[float, float]:
    """(tx_s, rx_s) of the phone sending the input and receiving the output; (0, 0) on the phone."""
    location = Location(location)
    if location is Location.edge:
        return 0.0, 0.0
    ls = link_state(_link(edge, location), _rssi(location, cond))
    half_rtt = ls.rtt_s / 2.0
    return half_rtt + up_bytes * 8.0 / ls.up_bps, half_rtt + down_bytes * 8.0 / ls.down_bps


def phone_energy(
    edge: DeviceProfile, target: Target, inference_s: float, tx_s: float, rx_s: float, cond: RuntimeConditions
) -> float:
    """The phone's joules for one inference: eqs. 1-3 on the phone, eq. 4 (its radio) for remote,
    each with the phone's base power over the whole latency."""
    location = Location(target.runner)
    if location is Location.edge:
        return device_energy(edge, target, inference_s, cond)
    ls = link_state(_link(edge, location), _rssi(location, cond))
    # eq. 4: latency - t_tx - t_rx is the time the phone idles waiting for the remote result.
    radio = ls.tx_w * tx_s + ls.rx_w * rx_s + ls.idle_w * inference_s
    return radio + edge.base_w * (tx_s + inference_s + rx_s)


def estimate(mesh: Mesh, features: ModelFeatures, target: Target, cond: RuntimeConditions) -> Cost:
    """The modelled cost of running a network on ``target`` under ``cond`` (``opt``'s oracle)."""
    prof = mesh.profile_for(target.runner)
    t_inf = inference_time(prof, features, target, cond)
    tx, rx = link_times(mesh.edge, target.runner, features.input_bytes, features.output_bytes, cond)
    e_phone = phone_energy(mesh.edge, target, t_inf, tx, rx, cond)
    e_dev = e_phone if target.runner == Location.edge else device_energy(prof, target, t_inf, cond)
    return Cost(inference_s=t_inf, tx_s=tx, rx_s=rx, latency_s=tx + t_inf + rx, energy_j=e_phone, device_energy_j=e_dev)


# ----------------------------------------------------------------------------- vectorised path


def _link_arrays(link: LinkProfile) -> tuple[np.ndarray, ...]:
    pts = link.points
    return (
        np.array([p.rssi_dbm for p in pts]),
        np.log([p.up_mbps * 1e6 for p in pts]),
        np.log([p.down_mbps * 1e6 for p in pts]),
        np.array([p.tx_w for p in pts]),
        np.array([p.rx_w for p in pts]),
    )


@dataclass(frozen=True)
class Deviations:
    """How a real mesh differs from its profiles, as multipliers of a ``CostTable``'s terms.

    The simulator draws one per (device, seed) and keeps it hidden from the policies; all ones
    (``none``) is the profiles themselves. ``latency`` / ``power``: per target column, the
    inference time and the executing processor's power; ``goodput`` / ``radio_power``: per link
    (``"p2p"``, ``"wifi"``); ``base_power``: the phone's base power."""

    latency: np.ndarray
    power: np.ndarray
    goodput: dict[str, float]
    radio_power: dict[str, float]
    base_power: float = 1.0

    @staticmethod
    def none(n_targets: int) -> Deviations:
        return Deviations(np.ones(n_targets), np.ones(n_targets), {}, {}, 1.0)


_LINK_CODES = {1: "p2p", 2: "wifi"}


@dataclass
class CostTable:
    """Every target of one network on a mesh, evaluated under N conditions at once.

    Same equations as the scalar path (tests check they agree); used by the simulator, which also
    evaluates it under hidden ``Deviations`` (its true world)."""

    mesh: Mesh
    features: ModelFeatures
    targets: list[Target]
    _base: np.ndarray = field(init=False, repr=False)
    _sens_cpu: np.ndarray = field(init=False, repr=False)
    _sens_mem: np.ndarray = field(init=False, repr=False)
    _p_device: np.ndarray = field(init=False, repr=False)
    _loc: np.ndarray = field(init=False, repr=False)  # 0 edge, 1 peer, 2 cloud

    def __post_init__(self) -> None:
        n = len(self.targets)
        self._base, self._sens_cpu, self._sens_mem = np.zeros(n), np.zeros(n), np.zeros(n)
        self._p_device, self._loc = np.zeros(n), np.zeros(n, dtype=np.int8)
        self._base_w_device = np.zeros(n)
        codes = {Location.edge: 0, Location.peer: 1, Location.cloud: 2}
        for i, t in enumerate(self.targets):
            loc = Location(t.runner)
            prof = self.mesh.profile_for(loc)
            proc = _proc(prof, t)
            self._base[i] = _nominal_time(proc, self.features, t)
            if loc is Location.edge:
                self._sens_cpu[i], self._sens_mem[i] = proc.interference.cpu, proc.interference.mem
            self._p_device[i] = _avg_power(proc, t.dvfs)
            self._base_w_device[i] = prof.base_w
            self._loc[i] = codes[loc]
        self._links: dict[int, tuple[LinkProfile, tuple[np.ndarray, ...]]] = {}
        for code, loc in ((1, Location.peer), (2, Location.cloud)):
            if np.any(self._loc == code):
                lp = _link(self.mesh.edge, loc)
                self._links[code] = (lp, _link_arrays(lp))

    def evaluate(
        self,
        co_cpu: np.ndarray,
        co_mem: np.ndarray,
        rssi_wifi: np.ndarray,
        rssi_p2p: np.ndarray,
        *,
        dev: Deviations | None = None,
    ) -> dict[str, np.ndarray]:
        """Arrays of shape (N, T): inference_s, tx_s, rx_s, latency_s, energy_j, device_energy_j.

        ``dev``: evaluate a world that deviates from the profiles (None: the profiles)."""
        d = dev if dev is not None else Deviations.none(len(self.targets))
        co_cpu, co_mem = np.atleast_1d(co_cpu)[:, None], np.atleast_1d(co_mem)[:, None]
        t_inf = self._base * d.latency * (1.0 + self._sens_cpu * co_cpu + self._sens_mem * co_mem)
        n = t_inf.shape[0]
        tx, rx = np.zeros_like(t_inf), np.zeros_like(t_inf)
        p_device = self._p_device * d.power
        energy = np.where(self._loc == 0, p_device, 0.0) * t_inf
        for code, (lp, (xs, log_up, log_down, txw, rxw)) in self._links.items():
            g, pr = d.goodput.get(_LINK_CODES[code], 1.0), d.radio_power.get(_LINK_CODES[code], 1.0)
            rssi = np.broadcast_to(np.atleast_1d(rssi_p2p if code == 1 else rssi_wifi), (n,))
            up, down = g * np.exp(np.interp(rssi, xs, log_up)), g * np.exp(np.interp(rssi, xs, log_down))
            half = lp.rtt_ms / 2e3
            cols = self._loc == code
            t_tx = (half + self.features.input_bytes * 8.0 / up)[:, None]
            t_rx = (half + self.features.output_bytes * 8.0 / down)[:, None]
            tx[:, cols], rx[:, cols] = t_tx, t_rx
            energy[:, cols] = pr * (
                np.interp(rssi, xs, txw)[:, None] * t_tx
                + np.interp(rssi, xs, rxw)[:, None] * t_rx
                + lp.idle_w * t_inf[:, cols]
            )
        latency = tx + t_inf + rx
        energy += self.mesh.edge.base_w * d.base_power * latency
        dev_e = (p_device + self._base_w_device) * t_inf
        dev_e = np.where(self._loc == 0, energy, dev_e)
        return {
            "inference_s": t_inf,
            "tx_s": tx,
            "rx_s": rx,
            "latency_s": latency,
            "energy_j": energy,
            "device_energy_j": dev_e,
        }
