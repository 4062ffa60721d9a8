"""Table I of the paper: binning NN features and runtime variance into a discrete state.

Pure functions, no I/O. 4 x 2 x 2 x 3 x 4 x 4 x 2 x 2 = 3,072 states.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from services.core.schemas import ModelFeatures, RuntimeConditions

# (name, number of bins, labels) in index order; the index is mixed-radix over these.
DIMENSIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("conv", ("small", "medium", "large", "larger")),
    ("fc", ("small", "large")),
    ("rc", ("small", "large")),
    ("mac", ("small", "medium", "large")),
    ("co_cpu", ("none", "small", "medium", "large")),
    ("co_mem", ("none", "small", "medium", "large")),
    ("rssi_w", ("regular", "weak")),
    ("rssi_p", ("regular", "weak")),
)
N_STATES = 1
for _, _labels in DIMENSIONS:
    N_STATES *= len(_labels)

WEAK_RSSI_DBM = -80.0  # "Regular (> -80 dBm), weak (<= -80 dBm)"


@dataclass(frozen=True, slots=True)
class StateBins:
    conv: int
    fc: int
    rc: int
    mac: int
    co_cpu: int
    co_mem: int
    rssi_w: int
    rssi_p: int

    @property
    def index(self) -> int:
        idx = 0
        for name, labels in DIMENSIONS:
            idx = idx * len(labels) + getattr(self, name)
        return idx

    @classmethod
    def from_index(cls, index: int) -> StateBins:
        if not 0 <= index < N_STATES:
            raise ValueError(f"state index must be in [0, {N_STATES}), got {index}")
        values: dict[str, int] = {}
        for name, labels in reversed(DIMENSIONS):
            index, values[name] = divmod(index, len(labels))
        return cls(**values)

    def labels(self) -> dict[str, str]:
        return {name: labels[getattr(self, name)] for name, labels in DIMENSIONS}

    def as_dict(self) -> dict[str, int]:
        # Not dataclasses.asdict: it deep-copies each field (7 us a call, on every answer's state).
        return {name: getattr(self, name) for name, _ in DIMENSIONS}


@lru_cache(maxsize=N_STATES)
def state_bins_and_labels(index: int) -> tuple[dict[str, int], dict[str, str]]:
    """A state's bins and their labels, worked out once per state (every answer shows them). The
    dicts are shared: callers copy them (a pydantic model's field validation does)."""
    bins = StateBins.from_index(index)
    return bins.as_dict(), bins.labels()


def bin_conv(n: int) -> int:
    """Small (<30), medium (<50), large (<90), larger (>=90)."""
    return 0 if n < 30 else 1 if n < 50 else 2 if n < 90 else 3


def bin_fc(n: int) -> int:
    """Small (<10), large (>=10)."""
    return 0 if n < 10 else 1


def bin_rc(n: int) -> int:
    """Small (<10), large (>=10)."""
    return 0 if n < 10 else 1


def bin_mac(macs: int) -> int:
    """Small (<1,000 M), medium (<2,000 M), large (>=2,000 M)."""
    return 0 if macs < 1_000_000_000 else 1 if macs < 2_000_000_000 else 2


def bin_utilisation(ratio: float) -> int:
    """None (0 %), small (<25 %), medium (<75 %), large (<=100 %); ratio is 0..1."""
    if ratio <= 0.0:
        return 0
    return 1 if ratio < 0.25 else 2 if ratio < 0.75 else 3


def bin_rssi(dbm: float) -> int:
    """Regular (> -80 dBm) = 0, weak (<= -80 dBm) = 1."""
    return 0 if dbm > WEAK_RSSI_DBM else 1


def observe(features: ModelFeatures, cond: RuntimeConditions) -> StateBins:
    """Bin raw features and runtime conditions into the Table I state."""
    return StateBins(
        conv=bin_conv(features.conv),
        fc=bin_fc(features.fc),
        rc=bin_rc(features.rc),
        mac=bin_mac(features.macs),
        co_cpu=bin_utilisation(cond.co_cpu),
        co_mem=bin_utilisation(cond.co_mem),
        rssi_w=bin_rssi(cond.rssi_wifi_dbm),
        rssi_p=bin_rssi(cond.rssi_p2p_dbm),
    )


def state_index(features: ModelFeatures, cond: RuntimeConditions) -> int:
    """``observe(features, cond).index`` without building the bins: the decider's hot path.

    The mixed radix is spelled out (4 x 2 x 2 x 3 x 4 x 4 x 2 x 2, the order of ``DIMENSIONS``);
    a test checks it against ``observe`` on every bin boundary.
    """
    idx = bin_conv(features.conv)
    idx = idx * 2 + bin_fc(features.fc)
    idx = idx * 2 + bin_rc(features.rc)
    idx = idx * 3 + bin_mac(features.macs)
    idx = idx * 4 + bin_utilisation(cond.co_cpu)
    idx = idx * 4 + bin_utilisation(cond.co_mem)
    idx = idx * 2 + (0 if cond.rssi_wifi_dbm > WEAK_RSSI_DBM else 1)
    return idx * 2 + (0 if cond.rssi_p2p_dbm > WEAK_RSSI_DBM else 1)
