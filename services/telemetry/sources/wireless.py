"""Signal strength (Table I's S_RSSI_W and S_RSSI_P) of the Wi-Fi and Wi-Fi Direct links.

Tried in this order, per interface: ``/proc/net/wireless``, ``iw dev <if> link``, and on a
phone under Termux ``termux-wifi-connectioninfo`` (termux-api; Wi-Fi only). An interface
whose name starts with ``p2p`` (``p2p-wlan0-0``, ``p2p0``) is the Wi-Fi Direct link; any
other wireless interface is the Wi-Fi link. A link that is down yields no reading, so its
last value ages and is flagged stale rather than being replaced by an invented number.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from services.core.schemas import Reading
from services.telemetry.sources.base import RSSI_P2P, RSSI_WIFI, DetectContext, Detection, Source, read_text
from services.telemetry.sources.termux import TermuxWifiSource


def link_of(iface: str) -> str:
    return RSSI_P2P if iface.startswith("p2p") else RSSI_WIFI


def parse_proc_wireless(text: str) -> dict[str, float]:
    """/proc/net/wireless -> {iface: signal level dBm} for interfaces with a level."""
    out: dict[str, float] = {}
    for line in text.splitlines()[2:]:  # two header lines
        if ":" not in line:
            continue
        iface, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) < 3:
            continue
        try:
            level = float(fields[2].rstrip("."))
        except ValueError:
            continue
        if level > 0:  # some drivers report the level as an unsigned byte (e.g. 200 = -56 dBm)
            level -= 256
        if level != 0:  # 0 = not associated
            out[iface.strip()] = level
    return out


def parse_iw_link(text: str) -> float | None:
    """``iw dev X link`` -> signal dBm, None when not connected."""
    m = re.search(r"signal:\s*(-?\d+(?:\.\d+)?)\s*dBm", text)
    return float(m.group(1)) if m else None


class ProcWirelessSource(Source):
    name = "proc-wireless"
    kind = "measured"

    def __init__(self, path: Path, ifaces: dict[str, str]) -> None:
        self.path = path
        self.ifaces = ifaces  # iface -> reading name (first iface per link wins)

    def provides(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.ifaces.values())))

    def describe(self) -> str:
        return f"{self.path} ({', '.join(self.ifaces)})"

    def read(self) -> list[Reading]:
        text = read_text(self.path)
        if text is None:
            raise OSError(f"cannot read {self.path}")
        levels = parse_proc_wireless(text)
        return [
            self.reading(name, levels[iface], "dBm", f"{iface} via {self.path}")
            for iface, name in self.ifaces.items()
            if iface in levels
        ]


class IwSource(Source):
    name = "iw"
    kind = "measured"

    def __init__(self, iw: str, ifaces: dict[str, str]) -> None:
        self.iw = iw
        self.ifaces = ifaces

    def provides(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.ifaces.values())))

    def describe(self) -> str:
        return f"{self.iw} dev <if> link ({', '.join(self.ifaces)})"

    def read(self) -> list[Reading]:
        out: list[Reading] = []
        for iface, name in self.ifaces.items():
            res = subprocess.run(
                [self.iw, "dev", iface, "link"], capture_output=True, text=True, timeout=2.0, check=False
            )
            dbm = parse_iw_link(res.stdout)
            if dbm is not None:
                out.append(self.reading(name, dbm, "dBm", f"{iface} via iw"))
        return out


def _wireless_ifaces(ctx: DetectContext) -> list[str]:
    net = ctx.sys_root / "class" / "net"
    return sorted(p.name for p in net.glob("*") if (p / "wireless").exists() or (p / "phy80211").exists())


def detect(ctx: DetectContext) -> tuple[list[Source], Detection]:
    det = Detection("wireless")
    sources: list[Source] = []
    covered: set[str] = set()

    proc_path = ctx.proc_root / "net" / "wireless"
    text = read_text(proc_path)
    if text is not None:
        ifaces: dict[str, str] = {}
        for line in text.splitlines()[2:]:
            iface = line.partition(":")[0].strip()
            if iface and link_of(iface) not in ifaces.values():
                ifaces[iface] = link_of(iface)
        if ifaces:
            sources.append(ProcWirelessSource(proc_path, ifaces))
            covered |= set(ifaces.values())
            det.found.append(f"{proc_path}: {', '.join(f'{i}->{n}' for i, n in ifaces.items())}")

    iw = ctx.which("iw")
    if iw:
        rest = {i: link_of(i) for i in _wireless_ifaces(ctx) if link_of(i) not in covered}
        # One interface per link.
        chosen: dict[str, str] = {}
        for iface, name in rest.items():
            if name not in chosen.values():
                chosen[iface] = name
        if chosen:
            sources.append(IwSource(iw, chosen))
            covered |= set(chosen.values())
            det.found.append(f"iw: {', '.join(f'{i}->{n}' for i, n in chosen.items())}")

    termux = ctx.which("termux-wifi-connectioninfo")
    if termux and RSSI_WIFI not in covered:
        sources.append(TermuxWifiSource(termux))
        det.found.append(f"termux-api: {termux}")

    if not sources:
        det.absent = (
            f"no {proc_path}, no wireless interface for iw ({'iw present' if iw else 'iw not installed'}), "
            "no termux-wifi-connectioninfo"
        )
    return sources, det
