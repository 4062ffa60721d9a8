"""Device profiles: the measured-or-published numbers the cost model (eqs. 1-4) runs on.

One YAML file per device under ``services/common/profiles/`` is the single source of truth; every
number there carries a ``# source:`` comment. Files are validated by the pydantic models below and
a bad file is refused with a ``ProfileError`` naming the file, the dotted field path and the reason.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from services.core.errors import ConfigFileError
from services.core.schemas import Precision, Processor, StrictModel


class ProfileError(ConfigFileError):
    """A profile file that cannot be used; the message names the file, the field and the reason."""


_Strict = StrictModel


class DvfsTable(_Strict):
    """Voltage/frequency steps, lowest first. ``busy_w[k]`` is the busy power of the processor
    (all cores the inference uses) at ``freqs_ghz[k]``."""

    steps: int = Field(gt=0, description="number of V/F steps (Table II)")
    freqs_ghz: list[float] = Field(description="frequency of each step, ascending, GHz")
    busy_w: list[float] = Field(description="busy power at each step, W (eq. 1/2's P_busy^f)")

    @model_validator(mode="after")
    def _consistent(self) -> DvfsTable:
        for name in ("freqs_ghz", "busy_w"):
            values = getattr(self, name)
            if len(values) != self.steps:
                raise ValueError(f"{name} has {len(values)} entries but steps is {self.steps}")
            if any(v <= 0 for v in values):
                raise ValueError(f"{name} must be positive")
        if any(b <= a for a, b in pairwise(self.freqs_ghz)):
            raise ValueError("freqs_ghz must be strictly ascending (lowest step first)")
        return self

    @property
    def f_max(self) -> float:
        return self.freqs_ghz[-1]


class LayerCosts(_Strict):
    """Fixed per-layer cost (ms at the top frequency) on top of the MAC-proportional time.

    Why: Fig. 3 of the paper - FC layers are far slower on the co-processors than their MACs
    suggest (memory-bound, poorly mapped), while CONV layers favour them."""

    conv: float = Field(0.0, ge=0)
    fc: float = Field(0.0, ge=0)
    rc: float = Field(0.0, ge=0)


class Interference(_Strict):
    """Slowdown per unit of co-runner utilisation: latency x (1 + cpu*co_cpu + mem*co_mem).

    Why: Sec. III-B / Fig. 5 - a CPU co-runner hurts the CPU most, a memory co-runner hurts every
    on-device processor. Only applies on the phone itself (co-runners are the phone's)."""

    cpu: float = Field(0.0, ge=0)
    mem: float = Field(0.0, ge=0)


class ProcessorProfile(_Strict):
    name: str = Field(description="marketing name, e.g. Cortex-A75 2.8 GHz")
    cores: int = Field(1, gt=0, description="cores the inference runs on (eq. 1 sums over them)")
    utilisation: float = Field(1.0, gt=0, le=1, description="share of the latency the cores are busy")
    dvfs: DvfsTable | None = Field(None, description="V/F steps; absent = fixed frequency (DSP, eq. 3)")
    power_w: float | None = Field(None, gt=0, description="constant busy power when there is no DVFS table")
    idle_w: float = Field(0.0, ge=0, description="idle power of the processor (all cores), W")
    throughput_gmacs: dict[Precision, float] = Field(
        description="effective MAC throughput per supported precision at the top frequency, GMAC/s"
    )
    layer_ms: LayerCosts = Field(default_factory=LayerCosts)
    launch_ms: float = Field(0.0, ge=0, description="fixed per-inference overhead (dispatch, sync), ms")
    memory_bound: float = Field(0.0, ge=0, lt=1, description="share of time that does not scale with frequency")
    interference: Interference = Field(default_factory=Interference)
    supports_rc: bool = Field(True, description="middleware runs recurrent/attention layers here")

    @model_validator(mode="after")
    def _power_defined(self) -> ProcessorProfile:
        if self.dvfs is None and self.power_w is None:
            raise ValueError("either dvfs or power_w must be given")
        if not self.throughput_gmacs:
            raise ValueError("throughput_gmacs needs at least one precision")
        if any(v <= 0 for v in self.throughput_gmacs.values()):
            raise ValueError("throughput_gmacs values must be positive")
        return self

    @property
    def n_steps(self) -> int:
        return self.dvfs.steps if self.dvfs else 1

    def busy_power(self, step: int | None) -> float:
        """Busy power at a DVFS step (None = top step / fixed)."""
        if self.dvfs is None:
            assert self.power_w is not None
            return self.power_w
        return self.dvfs.busy_w[-1 if step is None else step]

    def freq_ratio(self, step: int | None) -> float:
        """f_step / f_max (1.0 without DVFS)."""
        if self.dvfs is None or step is None:
            return 1.0
        return self.dvfs.freqs_ghz[step] / self.dvfs.f_max


class LinkPoint(_Strict):
    """The link at one signal strength: goodput and the radio's power while sending/receiving."""

    rssi_dbm: float = Field(le=0)
    up_mbps: float = Field(gt=0)
    down_mbps: float = Field(gt=0)
    tx_w: float = Field(ge=0)
    rx_w: float = Field(ge=0)


class LinkProfile(_Strict):
    """A wireless link as a function of RSSI (signal-strength energy model, paper ref. [61]).

    Goodput is interpolated log-linearly between points (it falls exponentially as the signal
    weakens), power linearly; outside the table the nearest point holds."""

    rtt_ms: float = Field(ge=0, description="round-trip latency, charged half to TX and half to RX")
    idle_w: float = Field(ge=0, description="phone power while waiting for the remote result (eq. 4 P_idle)")
    points: list[LinkPoint] = Field(min_length=2)

    @model_validator(mode="after")
    def _sorted(self) -> LinkProfile:
        rssi = [p.rssi_dbm for p in self.points]
        if any(b <= a for a, b in pairwise(rssi)):
            raise ValueError("points must be sorted by strictly ascending rssi_dbm (weakest first)")
        return self


class RadioProfile(_Strict):
    wifi: LinkProfile = Field(description="Wi-Fi to the access point (cloud)")
    p2p: LinkProfile | None = Field(None, description="Wi-Fi Direct to the connected edge device (peer)")


class DeviceProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    kind: Literal["phone", "tablet", "server"]
    description: str = ""
    processors: dict[Processor, ProcessorProfile] = Field(min_length=1)
    radio: RadioProfile | None = None
    base_power_w: float | None = Field(
        None,
        ge=0,
        description="whole-device base power (SoC idle + display on), W, charged over every target's latency; "
        "required for a phone",
    )

    @model_validator(mode="after")
    def _radio_for_mobiles(self) -> DeviceProfile:
        if self.kind == "phone" and self.radio is None:
            raise ValueError("a phone profile needs a radio section (eq. 4 charges its radio)")
        # Why required: the paper's Monsoon meter measured the whole phone, so the SoC and display
        # idle power is in every figure it reports; without it local targets look far cheaper.
        if self.kind == "phone" and self.base_power_w is None:
            raise ValueError("a phone profile needs base_power_w (SoC + display idle power, W)")
        return self

    @property
    def base_w(self) -> float:
        """Base power charged over an inference's whole latency (0 where the profile has none)."""
        return self.base_power_w or 0.0


# ----------------------------------------------------------------------------- parsing


def _loc(loc: tuple[object, ...]) -> str:
    return ".".join(str(p) for p in loc)


def parse_profile(data: object, file: str) -> DeviceProfile:
    """Validate already-parsed YAML; errors name ``file`` and the dotted field path."""
    if not isinstance(data, dict):
        raise ProfileError(file, "", "the file must hold a mapping (name, kind, processors, ...)")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        reason = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "enum" and err["loc"] and err["loc"][-1] == "[key]":
            reason = f"unknown processor; expected one of {[p.value for p in Processor]}"
        field = _loc(tuple(p for p in err["loc"] if p != "[key]"))
        if err["type"] == "missing":
            reason = "field required"
        raise ProfileError(file, field, reason) from None


def profile_json_schema() -> dict[str, object]:
    """The published JSON schema of a profile file (docs/profile.schema.json)."""
    return DeviceProfile.model_json_schema()
