"""A phone's own sensors through termux-api (Termux + the Termux:API app): battery and Wi-Fi.

Android keeps apps out of most of sysfs, so under Termux the fuel gauge and the Wi-Fi link are read
with termux-api's commands, which print JSON:

* ``termux-battery-status``: ``current`` in µA (BatteryManager's CURRENT_NOW; positive while charging,
  negative while discharging) and ``voltage`` in mV (Termux:API 0.51 and later; older versions print no
  voltage, and then no power is derived). Power is ``|current| x voltage``: the phone's whole draw while
  it discharges (unplugged), the charge current while it charges, which the reading's detail says.
  Some vendors' gauges report mA where Android documents µA; the detail carries the raw values.
* ``termux-wifi-connectioninfo``: ``rssi`` in dBm (-127, or no rssi, when disconnected).

Each call starts an Android service (~0.5-2 s), so these sources have a longer timeout and interval than
a sysfs file. Detection finds the commands on the PATH (``DetectContext.tool_path``: a directory of fake
commands in the tests, which print recorded outputs).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from services.core.schemas import Reading
from services.telemetry.sources.base import HOST_DEVICE, RSSI_WIFI, DetectContext, Detection, Source, power_name

BATTERY_TOOL = "termux-battery-status"
WIFI_TOOL = "termux-wifi-connectioninfo"
BATTERY_PROCESSOR = "battery.termux"


def run_json(tool: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """Run a termux-api command and parse its JSON object (raises on failure or on anything else)."""
    res = subprocess.run([tool], capture_output=True, text=True, timeout=timeout_s, check=True)
    out = json.loads(res.stdout)
    if not isinstance(out, dict):
        raise ValueError(f"{tool} printed {type(out).__name__}, not a JSON object")
    return out


def battery_watts(status: dict[str, Any]) -> float | None:
    """|current (µA)| x voltage (mV) in W, or None when either is missing (termux-api before 0.51)."""
    current, voltage = status.get("current"), status.get("voltage")
    if not isinstance(current, (int, float)) or not isinstance(voltage, (int, float)) or voltage <= 0:
        return None
    return abs(current) * voltage / 1e9


def wifi_rssi(info: dict[str, Any]) -> float | None:
    """The Wi-Fi link's RSSI in dBm, or None while disconnected."""
    rssi = info.get("rssi")
    # Android reports -127 (or no rssi) when Wi-Fi is disconnected.
    if not isinstance(rssi, (int, float)) or rssi <= -127 or info.get("supplicant_state") == "DISCONNECTED":
        return None
    return float(rssi)


class _TermuxSource(Source):
    """termux-api starts an Android service per call (~0.5-2 s): slower timeout and interval."""

    kind = "measured"
    timeout_s = 6.0
    interval_s = 2.0

    def __init__(self, tool: str) -> None:
        self.tool = tool

    def describe(self) -> str:
        return self.tool


class TermuxWifiSource(_TermuxSource):
    name = "termux-wifi"

    def provides(self) -> tuple[str, ...]:
        return (RSSI_WIFI,)

    def read(self) -> list[Reading]:
        info = run_json(self.tool)
        rssi = wifi_rssi(info)
        if rssi is None:
            return []
        return [self.reading(RSSI_WIFI, rssi, "dBm", f"termux ssid={info.get('ssid', '?')}")]


class TermuxBatterySource(_TermuxSource):
    name = "termux-battery"

    def provides(self) -> tuple[str, ...]:
        return (power_name(HOST_DEVICE, BATTERY_PROCESSOR),)

    def read(self) -> list[Reading]:
        status = run_json(self.tool)
        watts = battery_watts(status)
        if watts is None:
            raise ValueError(f"{self.tool} printed no current and voltage: {sorted(status)}")
        detail = (
            f"termux current={status['current']} uA voltage={status['voltage']} mV "
            f"status={status.get('status', '?')} plugged={status.get('plugged', '?')}"
        )
        return [self.reading(power_name(HOST_DEVICE, BATTERY_PROCESSOR), watts, "W", detail)]


def detect_battery(ctx: DetectContext, det: Detection) -> list[Source]:
    """The termux battery source when the command exists and its output has current and voltage; what it
    found or why not goes into ``det`` (the battery family's report)."""
    tool = ctx.which(BATTERY_TOOL)
    if tool is None:
        return []
    try:
        status = run_json(tool, timeout_s=TermuxBatterySource.timeout_s)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        det.absent = f"{tool} failed: {exc}"
        return []
    if battery_watts(status) is None:
        det.absent = f"{tool} prints no current and voltage (Termux:API older than 0.51?)"
        return []
    det.found.append(f"termux-api: {tool}")
    return [TermuxBatterySource(tool)]
