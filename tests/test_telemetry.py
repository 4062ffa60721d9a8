"""The telemetry service, started for real (uvicorn subprocess on a free loopback port).

Two instances: one on this host as it is (psutil measured, the rest emulated) with injected
faulty sources, and one pointed at a fake sysfs/procfs tree so every measured family (RAPL,
hwmon, battery, cpufreq, /proc/net/wireless) is exercised end to end on any machine.

The fault-injection sources live in this module; the service imports them through
``AUTOSCALE_TELEMETRY_EXTRA_SOURCES=test_telemetry:<factory>`` (tests/ on PYTHONPATH).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.cli.launcher import service_command
from services.common.redis_embed import free_port
from services.common.settings import Settings
from services.core.schemas import Reading, TelemetrySnapshot
from services.telemetry.sources.base import CO_CPU, Source
from tests.conftest import wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
STALE_AFTER_S = 1.0
READ_TIMEOUT_S = 0.3
# /state is served from memory: a source that hangs forever must not hold it, so a /state that waited on
# one would run into this generous bound. How fast /state answers is measured by bench/bench_paths.py.
STATE_HANG_BOUND_S = 30.0
INSTALL_HINT = "install it with: sudo bash .ci/install-prometheus.sh  (apt-get install -y prometheus)"


# ----------------------------------------------------------------------------- injected sources


class HangLaterSource(Source):
    """Answers once, then every read hangs forever: its reading must age and go stale."""

    name = "test-hang-later"
    kind = "measured"

    def __init__(self) -> None:
        self.calls = 0

    def provides(self) -> tuple[str, ...]:
        return ("test.hang_later",)

    def read(self) -> list[Reading]:
        self.calls += 1
        if self.calls > 1:
            threading.Event().wait()  # never set: a sensor that stopped answering
        return [self.reading("test.hang_later", 42.0, "1")]


class HangAlwaysSource(Source):
    """Hangs from the first read; offers ``co_cpu`` so the conditions must fall back."""

    name = "test-hang-always"
    kind = "measured"

    def provides(self) -> tuple[str, ...]:
        return (CO_CPU,)

    def read(self) -> list[Reading]:
        threading.Event().wait()
        return []


class BrokenSource(Source):
    name = "test-broken"
    kind = "measured"

    def provides(self) -> tuple[str, ...]:
        return ("test.broken",)

    def read(self) -> list[Reading]:
        raise RuntimeError("sensor unplugged")


def faulty_sources() -> list[Source]:
    return [HangLaterSource(), BrokenSource()]


def hang_always_sources() -> list[Source]:
    return [HangAlwaysSource()]


# ----------------------------------------------------------------------------- helpers


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(f"promtool is not installed; {INSTALL_HINT}")
    return path


def promtool_check_metrics(text: str) -> None:
    res = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"promtool check metrics failed:\n{res.stdout}\n{res.stderr}"


@contextmanager
def run_telemetry(tmp: Path, **env: str) -> Iterator[httpx.Client]:
    port = free_port()
    log_path = tmp / f"telemetry-{port}.log"
    child_env = (
        dict(os.environ)
        | {
            "AUTOSCALE_HOST": "127.0.0.1",
            "AUTOSCALE_TELEMETRY_PORT": str(port),
            "AUTOSCALE_TELEMETRY_REFRESH_S": "0.2",
            "AUTOSCALE_TELEMETRY_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
            "AUTOSCALE_TELEMETRY_STALE_AFTER_S": str(STALE_AFTER_S),
            "AUTOSCALE_SCENARIO": "S1",
            "AUTOSCALE_DATA_DIR": str(tmp / "var"),
            "AUTOSCALE_MESH_ID": f"test-{uuid.uuid4().hex[:8]}",
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        | env
    )
    child_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            service_command("telemetry", "127.0.0.1", port),
            cwd=ROOT,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0, trust_env=False)
    try:
        wait_until_ready(client, "/readyz", proc, log_path, "telemetry", poll_s=0.1)
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def read_state(client: httpx.Client) -> TelemetrySnapshot:
    resp = client.get("/state", timeout=STATE_HANG_BOUND_S)  # a wait on a hung source would time out
    assert resp.status_code == 200, resp.text
    return TelemetrySnapshot.model_validate_json(resp.content)


def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def source_entry(client: httpx.Client, name: str) -> dict[str, Any]:
    body = client.get("/sources").json()
    return next(s for s in body["sources"] if s["name"] == name)


# ----------------------------------------------------------------------------- this host


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("telemetry-host")
    with run_telemetry(tmp, AUTOSCALE_TELEMETRY_EXTRA_SOURCES="test_telemetry:faulty_sources") as client:
        yield client


def test_health_and_ready(host: httpx.Client) -> None:
    assert host.get("/healthz").json() == {"status": "ok"}
    assert host.get("/readyz").status_code == 200


def test_state_is_a_complete_snapshot(host: httpx.Client) -> None:
    snap = read_state(host)
    assert snap.scenario == "s1"
    for name in ("co_cpu", "co_mem", "rssi_wifi_dbm", "rssi_p2p_dbm"):
        assert name in snap.readings, f"{name} missing from {sorted(snap.readings)}"
        r = snap.readings[name]
        assert r.source in ("measured", "emulated") and r.age_s >= 0 and r.timestamp > 0
    c = snap.conditions
    assert 0 <= c.co_cpu <= 1 and 0 <= c.co_mem <= 1
    assert c.co_cpu == snap.readings["co_cpu"].value
    assert c.rssi_wifi_dbm == snap.readings["rssi_wifi_dbm"].value


def test_sources_say_measured_or_emulated(host: httpx.Client) -> None:
    body = host.get("/sources").json()
    families = {d["family"]: d for d in body["detection"]}
    assert set(families) >= {"corunner", "rapl", "hwmon", "battery", "nvml", "cpufreq", "wireless"}
    for d in families.values():
        assert d["found"] or d["absent"], f"detection of {d['family']} gives no reason"
    readings = body["readings"]
    snap = read_state(host)
    # psutil co-runner load is measured on any Linux host this suite runs on.
    assert families["corunner"]["found"]
    for name in ("co_cpu", "co_mem"):
        assert readings[name]["source"] == "psutil" and readings[name]["kind"] == "measured"
        assert snap.readings[name].source == "measured"
    # Signal strength: measured only if this host really has a wireless interface.
    for name in ("rssi_wifi_dbm", "rssi_p2p_dbm"):
        expected = (
            "measured" if families["wireless"]["found"] and readings[name]["source"] != "scenario" else "emulated"
        )
        assert readings[name]["kind"] == expected == snap.readings[name].source
        if expected == "emulated":
            assert readings[name]["source"] == "scenario"
            assert snap.readings[name].detail == "scenario s1"
    # Power: measured families where detected, else the phone's emulated background power.
    measured_power = any(families[f]["found"] for f in ("rapl", "hwmon", "battery", "nvml"))
    power = {k: v for k, v in snap.readings.items() if k.startswith("power.")}
    assert power, "no power reading at all"
    for name, r in power.items():
        assert r.unit == "W" and r.value >= 0
        assert r.source == ("measured" if measured_power else "emulated"), name
    if not measured_power:
        assert set(power) == {"power.mi8pro.cpu", "power.mi8pro.gpu", "power.mi8pro.dsp"}


def test_hung_source_never_blocks_state_and_goes_stale(host: httpx.Client) -> None:
    # The first read answered, every later one hangs: the value must stay, age, and be flagged.
    first = wait_for(lambda: read_state(host).readings.get("test.hang_later"), 10, "the first hang_later value")
    assert first.value == 42.0 and first.source == "measured"

    def stale() -> Reading | None:
        r = read_state(host).readings.get("test.hang_later")
        return r if r is not None and r.stale else None

    r = wait_for(stale, 10, "test.hang_later to be flagged stale")
    # age_s is rounded to the millisecond: flagged at 1.0004 s, it may read exactly the bound
    assert r.value == 42.0 and r.age_s >= STALE_AFTER_S
    entry = source_entry(host, "test-hang-later")
    assert entry["status"] == "timeout" and entry["in_flight"] is True and entry["timeouts"] >= 1
    assert "longer than" in entry["last_error"]
    # Other readings keep refreshing meanwhile.
    snap = read_state(host)
    assert not snap.readings["co_cpu"].stale and snap.readings["co_cpu"].age_s < STALE_AFTER_S
    # Many /state calls in a row, each answered while the source still hangs.
    for _ in range(20):
        read_state(host)


def test_failing_source_is_reported(host: httpx.Client) -> None:
    entry = wait_for(lambda: (e := source_entry(host, "test-broken"))["errors"] >= 2 and e, 10, "test-broken errors")
    assert entry["status"] == "error" and "RuntimeError: sensor unplugged" in entry["last_error"]
    assert "test.broken" not in read_state(host).readings
    assert host.get("/sources").json()["readings"]["test.broken"]["has_value"] is False


def test_scenario_switch(host: httpx.Client) -> None:
    try:
        resp = host.put("/scenario", json={"name": "S4"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["scenario"] == "s4" and resp.json()["conditions"]["rssi_wifi_dbm"] == -85
        snap = read_state(host)  # effective at once, not after the next poll
        assert snap.scenario == "s4" and snap.conditions.rssi_wifi_dbm == -85
        assert snap.readings["rssi_wifi_dbm"].detail == "scenario s4"

        # Dynamic scenario, given inline: a trace.
        inline = {
            "name": "ramp",
            "kind": "dynamic",
            "conditions": {"rssi_p2p_dbm": {"trace": {"points": [[0, -90], [3600, -40]]}}},
        }
        resp = host.put("/scenario", json={"scenario": inline})
        assert resp.status_code == 200, resp.text
        assert read_state(host).conditions.rssi_p2p_dbm == -90

        # Prefer emulation: the scenario drives the co-runner load even though psutil measures it.
        resp = host.put("/scenario", json={"name": "D2", "prefer": "emulated"})
        assert resp.status_code == 200, resp.text
        snap = read_state(host)
        assert snap.readings["co_cpu"].source == "emulated" and snap.conditions.co_cpu == pytest.approx(0.8)
        assert host.get("/sources").json()["readings"]["co_cpu"]["source"] == "scenario"
        metrics = host.get("/metrics").text
        assert 'autoscale_telemetry_corunner_cpu_ratio{source="emulated"} 0.8' in metrics
        assert 'autoscale_telemetry_corunner_cpu_ratio{source="measured"}' not in metrics
    finally:
        resp = host.put("/scenario", json={"name": "s1", "prefer": "measured"})
        assert resp.status_code == 200, resp.text
    snap = read_state(host)
    assert snap.scenario == "s1" and snap.readings["co_cpu"].source == "measured"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"name": "S9"}, "name", "unknown_scenario"),
        ({"name": "../../etc/passwd"}, "name", "validation_error"),
        ({"name": "S1", "prefer": "magic"}, "prefer", "validation_error"),
        (
            {"scenario": {"name": "x", "kind": "static", "conditions": {"co_cpu": 1.5}}},
            "scenario.conditions",
            "invalid_scenario",
        ),
        ({"scenario": {"name": "x", "kind": "static", "colour": 1}}, "scenario.colour", "invalid_scenario"),
        ({"nme": "S1"}, "nme", "validation_error"),
    ],
)
def test_scenario_errors_name_the_field(host: httpx.Client, body: dict[str, Any], field: str, code: str) -> None:
    resp = host.put("/scenario", json=body)
    assert 400 <= resp.status_code < 500, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["field"].startswith(field), err
    assert "Traceback" not in resp.text
    assert read_state(host).scenario == "s1"  # a refused switch changes nothing


def test_admin_token_from_the_launcher_guards_scenario_switches(tmp_path: Path) -> None:
    """The token travels as the launcher passes it (Settings.child_env) and is never logged."""
    env = Settings(admin_token=SecretStr("t0k3n-xyz")).child_env()
    with run_telemetry(tmp_path, AUTOSCALE_ADMIN_TOKEN=env["AUTOSCALE_ADMIN_TOKEN"]) as client:
        refused = client.put("/scenario", json={"name": "S2"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        wrong = client.put("/scenario", json={"name": "S2"}, headers={"authorization": "Bearer t0k3n"})
        assert wrong.status_code == 401
        ok = client.put("/scenario", json={"name": "S2"}, headers={"authorization": "Bearer t0k3n-xyz"})
        assert ok.status_code == 200 and ok.json()["scenario"] == "s2", ok.text
    logs = "".join(p.read_text() for p in tmp_path.glob("telemetry-*.log"))
    assert "scenario switched" in logs and "t0k3n" not in logs


def test_metrics_pass_promtool(host: httpx.Client) -> None:
    wait_for(
        lambda: (
            (
                read_state(host).readings.get("test.hang_later")
                or Reading(name="x", value=0, unit="", source="measured", timestamp=0)
            ).stale
        ),
        10,
        "stale hang_later",
    )
    time.sleep(0.3)  # one export tick
    resp = host.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    promtool_check_metrics(text)
    for needle in (
        'autoscale_telemetry_rssi_dbm{link="wifi",source="emulated"}',
        'autoscale_telemetry_rssi_dbm{link="p2p",source="emulated"}',
        'autoscale_telemetry_corunner_cpu_ratio{source="measured"}',
        'autoscale_telemetry_corunner_memory_ratio{source="measured"}',
        'autoscale_telemetry_reading_stale{reading="test.hang_later"} 1.0',
        'autoscale_telemetry_reading_age_seconds{reading="co_cpu"}',
        'autoscale_telemetry_source_errors_total{reason="timeout",source_name="test-hang-later"}',
        'autoscale_telemetry_source_errors_total{reason="error",source_name="test-broken"}',
        "autoscale_telemetry_power_watts{",
    ):
        assert needle in text, f"{needle} not in /metrics"


# ----------------------------------------------------------------------------- fake sysfs/procfs


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture(scope="module")
def fake_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fake-host")
    sysfs, procfs = root / "sys", root / "proc"
    rapl = sysfs / "class/powercap/intel-rapl:0"
    _write(rapl / "name", "package-0\n")
    _write(rapl / "energy_uj", "1000000\n")
    _write(rapl / "max_energy_range_uj", "262143328850\n")
    _write(sysfs / "class/powercap/intel-rapl:0:0/name", "core\n")
    _write(sysfs / "class/powercap/intel-rapl:0:0/energy_uj", "500000\n")
    hw = sysfs / "class/hwmon/hwmon0"
    _write(hw / "name", "acpi_power\n")
    _write(hw / "power1_input", "5000000\n")  # µW
    _write(hw / "power1_label", "System\n")
    bat = sysfs / "class/power_supply/BAT0"
    _write(bat / "type", "Battery\n")
    _write(bat / "status", "Discharging\n")
    _write(bat / "current_now", "-500000\n")  # µA, Android sign
    _write(bat / "voltage_now", "4000000\n")  # µV -> 2 W
    _write(sysfs / "class/power_supply/AC/type", "Mains\n")
    pol = sysfs / "devices/system/cpu/cpufreq/policy0"
    _write(pol / "scaling_cur_freq", "1800000\n")
    _write(pol / "stats/time_in_state", "1000000 100\n2000000 300\n")
    _write(
        procfs / "net/wireless",
        "Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE\n"
        " face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n"
        "  wlan0: 0000   54.  -61.  -256        0      0      0      0     15        0\n"
        "p2p-wlan0-0: 0000   40.  184.  -256        0      0      0      0      0        0\n",
    )
    return root


@pytest.fixture(scope="module")
def fake(fake_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with run_telemetry(
        tmp_path_factory.mktemp("telemetry-fake"),
        AUTOSCALE_TELEMETRY_SYS_ROOT=str(fake_tree / "sys"),
        AUTOSCALE_TELEMETRY_PROC_ROOT=str(fake_tree / "proc"),
        AUTOSCALE_TELEMETRY_DISABLE="corunner",
        AUTOSCALE_TELEMETRY_EXTRA_SOURCES="test_telemetry:hang_always_sources",
    ) as client:
        yield client


def test_fake_host_every_family_measured(fake: httpx.Client, fake_tree: Path) -> None:
    body = fake.get("/sources").json()
    found = {d["family"]: d["found"] for d in body["detection"]}
    assert found["rapl"] and found["hwmon"] and found["battery"] and found["cpufreq"] and found["wireless"]
    assert body["readings"]["rssi_wifi_dbm"]["source"] == "proc-wireless"

    snap = wait_for(lambda: (s := read_state(fake)).readings.get("power.host.package-0") and s, 10, "RAPL power")
    r = snap.readings
    assert r["rssi_wifi_dbm"].source == "measured" and r["rssi_wifi_dbm"].value == -61
    assert r["rssi_p2p_dbm"].source == "measured" and r["rssi_p2p_dbm"].value == -72  # unsigned 184 -> -72 dBm
    assert snap.conditions.rssi_wifi_dbm == -61 and snap.conditions.rssi_p2p_dbm == -72
    assert r["power.host.acpi_power.system"].value == pytest.approx(5.0)
    assert r["power.host.battery.bat0"].value == pytest.approx(2.0)
    assert "status=Discharging" in r["power.host.battery.bat0"].detail
    assert r["cpufreq.policy0"].unit == "GHz"
    assert r["power.host.package-0"].source == "measured"
    assert "power.host.package-0.core" in r
    # Real power exists here, so no emulated phone power is invented beside it.
    assert not [k for k in r if k.startswith("power.mi8pro.")]

    # Counters move: RAPL energy accumulates, time_in_state gives the interval's mean frequency.
    _write(fake_tree / "sys/class/powercap/intel-rapl:0/energy_uj", "3000000\n")  # +2 J
    _write(fake_tree / "sys/devices/system/cpu/cpufreq/policy0/stats/time_in_state", "1000000 200\n2000000 400\n")
    snap = wait_for(
        lambda: (s := read_state(fake)).readings["energy.host.package-0"].value >= 2.0 and s, 10, "RAPL energy"
    )
    assert snap.readings["energy.host.package-0"].value == pytest.approx(2.0)
    wait_for(lambda: abs(read_state(fake).readings["cpufreq.policy0"].value - 1.5) < 1e-6, 10, "mean 1.5 GHz")

    energy_series = 'autoscale_telemetry_energy_joules_total{device="host",processor="package-0",source="measured"} 2.0'
    metrics = wait_for(lambda: energy_series in (t := fake.get("/metrics").text) and t, 5, "the energy counter export")
    promtool_check_metrics(metrics)
    assert 'autoscale_telemetry_rssi_dbm{link="wifi",source="measured"} -61.0' in metrics
    assert 'autoscale_telemetry_power_watts{device="host",processor="battery.bat0",source="measured"} 2.0' in metrics
    assert 'autoscale_telemetry_cpu_frequency_hertz{policy="policy0"} 1.5e+09' in metrics


def test_fake_host_hung_condition_source_falls_back(fake: httpx.Client) -> None:
    # The only co_cpu sensor hangs from its first read: the state stays complete (scenario S1
    # stands in for the conditions) and /sources says the measured source has no value.
    snap = read_state(fake)
    assert "co_cpu" not in snap.readings
    assert snap.conditions.co_cpu == 0.0
    body = fake.get("/sources").json()
    assert body["readings"]["co_cpu"] == body["readings"]["co_cpu"] | {"source": "test-hang-always", "has_value": False}
    entry = wait_for(lambda: (e := source_entry(fake, "test-hang-always"))["timeouts"] >= 1 and e, 10, "a timeout")
    assert entry["in_flight"] is True and entry["reads"] == 0


# ----------------------------------------------------------------------------- in-process units


def test_proc_wireless_and_iw_parsers() -> None:
    from services.telemetry.sources.wireless import parse_iw_link, parse_proc_wireless

    text = (
        "h1\nh2\n"
        "  wlan0: 0000   54.  -61.  -256        0      0      0      0     15        0\n"
        "  wlan1: 0000    0.    0.  -256        0      0      0      0      0        0\n"
    )
    assert parse_proc_wireless(text) == {"wlan0": -61.0}  # level 0 = not associated
    assert parse_iw_link("Connected to aa:bb (on wlan0)\n\tsignal: -47 dBm\n") == -47.0
    assert parse_iw_link("Not connected.\n") is None


def test_energy_counter_wraps(tmp_path: Path) -> None:
    from services.telemetry.sources.power import _Counter

    f = tmp_path / "energy_uj"
    f.write_text("900\n")
    c = _Counter(path=f, scale=1e-6, wrap=1000.0)
    assert c.sample()
    f.write_text("100\n")  # wrapped: 900 -> 1000 -> 100 is +200 µJ
    assert c.sample()
    assert c.total_j == pytest.approx(200e-6)


def test_corunner_excludes_mesh_processes() -> None:
    from services.telemetry.sources.corunner import MESH_ID_ENV, CoRunnerSource

    mesh_id = f"test-{uuid.uuid4().hex[:8]}"
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    member = subprocess.Popen(sleeper, env=dict(os.environ) | {MESH_ID_ENV: mesh_id})
    other = subprocess.Popen(sleeper, env={k: v for k, v in os.environ.items() if k != MESH_ID_ENV})
    try:
        time.sleep(0.3)  # let the children exec so their environ is readable
        src = CoRunnerSource(mesh_id=mesh_id)
        pids = {p.pid for p in src._mesh_processes()}
        assert member.pid in pids and os.getpid() in pids
        assert other.pid not in pids
        readings = {r.name: r for r in src.read()}
        assert 0 <= readings["co_cpu"].value <= 1 and 0 <= readings["co_mem"].value <= 1
        assert readings["co_cpu"].source == "measured"
    finally:
        for p in (member, other):
            p.kill()
            p.wait()
