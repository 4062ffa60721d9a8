"""The telemetry service on a phone under Termux, without a phone: termux-api's commands are fakes that
print termux-api's JSON (tests/fixtures/termux/), found on the tool PATH the service is given
(AUTOSCALE_TELEMETRY_TOOL_PATH). Detection, the subprocess calls, the parsing and /state are the real ones.
"""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.telemetry.sources.base import DetectContext, Detection
from services.telemetry.sources.termux import (
    BATTERY_TOOL,
    WIFI_TOOL,
    TermuxWifiSource,
    battery_watts,
    detect_battery,
    run_json,
    wifi_rssi,
)
from tests.test_telemetry import read_state, run_telemetry, source_entry, wait_for

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "termux"
# battery-discharging.json: 412,000 µA at 3,850 mV
DISCHARGING_W = 0.412 * 3.850


def fake_tool(bin_dir: Path, tool: str, output: Path) -> Path:
    """A command named ``tool`` that prints what ``output`` holds when it runs (swap the file to change it)."""
    current = bin_dir / f"{tool}.json"
    shutil.copyfile(output, current)
    script = bin_dir / tool
    script.write_text(f"#!/bin/sh\nexec cat '{current}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


@pytest.fixture(scope="module")
def phone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    """Telemetry as on a phone: no readable sysfs battery or wireless files, termux-api on the PATH."""
    root = tmp_path_factory.mktemp("termux-phone")
    bin_dir, sysfs, procfs = root / "bin", root / "sys", root / "proc"
    for d in (bin_dir, sysfs, procfs):
        d.mkdir()
    fake_tool(bin_dir, BATTERY_TOOL, FIXTURES / "battery-discharging.json")
    fake_tool(bin_dir, WIFI_TOOL, FIXTURES / "wifi-connected.json")
    with run_telemetry(
        root,
        AUTOSCALE_TELEMETRY_TOOL_PATH=str(bin_dir),
        AUTOSCALE_TELEMETRY_SYS_ROOT=str(sysfs),
        AUTOSCALE_TELEMETRY_PROC_ROOT=str(procfs),
        AUTOSCALE_TELEMETRY_DISABLE="corunner",
        # termux-api is polled every 2 s: a longer stale bound than test_telemetry's 1 s
        AUTOSCALE_TELEMETRY_STALE_AFTER_S="10",
    ) as client:
        yield client, bin_dir


def test_phone_battery_and_wifi_are_measured(phone: tuple[httpx.Client, Path]) -> None:
    client, bin_dir = phone
    body = client.get("/sources").json()
    found = {d["family"]: d["found"] for d in body["detection"]}
    assert found["battery"] == [f"termux-api: {bin_dir / BATTERY_TOOL}"]
    assert found["wireless"] == [f"termux-api: {bin_dir / WIFI_TOOL}"]
    assert body["readings"]["rssi_wifi_dbm"]["source"] == "termux-wifi"

    snap = wait_for(
        lambda: (
            (s := read_state(client)).readings.get("power.host.battery.termux") and "rssi_wifi_dbm" in s.readings and s
        ),
        20,
        "the termux readings",
    )
    power, rssi = snap.readings["power.host.battery.termux"], snap.readings["rssi_wifi_dbm"]
    assert power.source == "measured" and power.unit == "W"
    assert power.value == pytest.approx(DISCHARGING_W)
    assert "current=-412000 uA voltage=3850 mV status=DISCHARGING plugged=UNPLUGGED" in power.detail
    assert rssi.source == "measured" and rssi.value == -58 and "ssid=lab-ap" in rssi.detail
    assert snap.conditions.rssi_wifi_dbm == -58
    # The phone's power is measured here: no emulated Mi8Pro power beside it.
    assert not [k for k in snap.readings if k.startswith("power.mi8pro.")]
    assert source_entry(client, "termux-battery")["errors"] == 0

    series = 'autoscale_telemetry_power_watts{device="host",processor="battery.termux",source="measured"}'
    metrics = wait_for(lambda: series in (t := client.get("/metrics").text) and t, 5, "the power export")
    assert 'autoscale_telemetry_rssi_dbm{link="wifi",source="measured"} -58.0' in metrics


def test_wifi_off_yields_no_reading(tmp_path: Path) -> None:
    # The real command path: the source runs the fake command and reads what it prints.
    tool = fake_tool(tmp_path, WIFI_TOOL, FIXTURES / "wifi-connected.json")
    source = TermuxWifiSource(str(tool))
    assert [r.value for r in source.read()] == [-58.0]
    shutil.copyfile(FIXTURES / "wifi-disconnected.json", tmp_path / f"{WIFI_TOOL}.json")
    assert source.read() == []  # a link that is down: the last value ages, nothing is invented
    assert wifi_rssi(run_json(str(tool))) is None


def test_termux_api_without_voltage_is_reported_absent(tmp_path: Path) -> None:
    fake_tool(tmp_path, BATTERY_TOOL, FIXTURES / "battery-no-voltage.json")
    det = Detection("battery")
    assert detect_battery(DetectContext(tool_path=str(tmp_path)), det) == []
    assert "no current and voltage" in det.absent and not det.found
    assert battery_watts(run_json(str(tmp_path / BATTERY_TOOL))) is None


def test_no_termux_api_no_source(tmp_path: Path) -> None:
    det = Detection("battery")
    assert detect_battery(DetectContext(tool_path=str(tmp_path)), det) == []
    assert det.absent == "" and not det.found  # the battery family's own message says what is missing
