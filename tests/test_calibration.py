"""`autoscale calibrate`: a real quick run writes a profile that loads, validates and cites a source for every
number; the fit recovers a known profile; cpufreq and power sensors are driven through their files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import psutil
import pytest
import yaml

from services.calibration.fit import PowerInputs, fit_profile, power_params
from services.calibration.hardware import Cpufreq, detect_power
from services.calibration.models import CalibrationReport, Cell
from services.common import zoo
from services.common.config_files import load_profile
from services.core import costmodel
from services.core.profiles import DeviceProfile, ProcessorProfile
from services.core.schemas import Location, Precision, Processor, RuntimeConditions, Target
from tests.conftest import MODEL_CACHE, ROOT

NUMBER_LINE = re.compile(r"^\s*(-\s*\{|[a-z0-9_]+:\s*(\[|-?[0-9]))")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path, int]:
    out = tmp_path_factory.mktemp("calibration")
    cpu = sorted(os.sched_getaffinity(0))[0]
    env = dict(os.environ) | {"AUTOSCALE_MODELS_DIR": str(MODEL_CACHE), "AUTOSCALE_DATA_DIR": str(out)}
    cmd = [sys.executable, "-m", "services.cli", "calibrate", "--quick", "--models", "mobilenet_v3,mobilenet_v2"]
    cmd += ["--cpus", str(cpu), "--name", "test_host", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stdout, _ = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, ""), out, proc.pid


def test_quick_calibration_writes_a_valid_profile_citing_every_number(
    quick_run: tuple[subprocess.CompletedProcess[str], Path, int],
) -> None:
    done, out, _ = quick_run
    assert done.returncode == 0, done.stdout[-3000:]
    path = out / "test_host.yaml"
    profile = load_profile(path)
    assert profile.name == "test_host" and profile.kind == "phone" and profile.radio is not None
    schema = json.loads((ROOT / "docs" / "profile.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    numbered = [line for line in path.read_text().splitlines() if NUMBER_LINE.match(line)]
    assert len(numbered) > 20
    for line in numbered:
        assert re.search(r"# source: (measured on \S+ \d{4}-\d\d-\d\d \(|assumed \()", line), line
    # The fitted numbers say so, with the fit's error; what one CPU at one frequency cannot show is assumed.
    text = path.read_text()
    assert re.search(r"fp32: [0-9.e+-]+  # source: measured on .*fit MAPE [0-9.]+ %", text)
    assert re.search(r"memory_bound: 0  # source: assumed \(", text)


def test_quick_calibration_reports_fit_quality_per_network(
    quick_run: tuple[subprocess.CompletedProcess[str], Path, int],
) -> None:
    done, out, _ = quick_run
    assert done.returncode == 0, done.stdout[-3000:]
    report = CalibrationReport.model_validate_json((out / "test_host.fit.json").read_text())
    assert {n.model for n in report.networks} == {"mobilenet_v3", "mobilenet_v2"}
    for net in report.networks:
        assert net.mape_pct >= 0 and net.cells
        assert {c.condition for c in net.cells} == {"none", "cpu", "mem"}
        assert all(c.measured_ms > 0 and c.predicted_ms > 0 for c in net.cells)
    assert report.plan.threads == [1] and report.plan.fit_threads == 1
    assert all(c.n >= 3 and c.p10_ms <= c.median_ms <= c.p90_ms for c in report.cells)
    assert not report.host.cpufreq.settable or report.host.cpufreq.steps_khz
    md = (out / "test_host.report.md").read_text()
    assert "MAPE" in md and "test_host.fit.png" in md and (out / "test_host.fit.png").stat().st_size > 0
    assert "MAPE" in done.stdout and "AUTOSCALE_MEASURE_ON_HOST=true" in done.stdout


def test_quick_calibration_leaves_no_corunner(quick_run: tuple[subprocess.CompletedProcess[str], Path, int]) -> None:
    _, _, pid = quick_run
    left = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "services.common.corunners" in cmd and "--parent" in cmd and cmd[cmd.index("--parent") + 1] == str(pid):
            left.append(p.pid)
    assert left == []


def test_calibrate_refuses_bad_options_naming_them(tmp_path: Path) -> None:
    for args, word in ((["--models", "resnet"], "--models"), (["--name", "Bad-Name"], "--name")):
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "calibrate", "--out", str(tmp_path), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and word in done.stderr


def _cells_from(profile: DeviceProfile, models: list[str]) -> list[Cell]:
    """What a calibration would measure on a device that behaves exactly like ``profile``."""
    cells = []
    for model in models:
        feats = zoo.zoo_features(model)
        for precision in (Precision.fp32, Precision.int8):
            for cond, co_cpu in (("none", 0.05), ("cpu", 0.55), ("mem", 0.5)):
                t = Target(runner=Location.edge, processor=Processor.cpu, precision=precision, dvfs=0)
                ms = costmodel.inference_time(profile, feats, t, RuntimeConditions(co_cpu=co_cpu, co_mem=0.1)) * 1e3
                cells.append(
                    Cell(
                        model=model,
                        precision=precision,
                        threads=1,
                        step=0,
                        freq_ghz=2.0,
                        condition=cond,  # type: ignore[arg-type]
                        round=0,
                        n=10,
                        median_ms=ms,
                        p10_ms=ms,
                        p90_ms=ms,
                        co_cpu=co_cpu,
                        co_mem=0.1,
                    )
                )
    return cells


def test_fit_recovers_a_known_profile() -> None:
    truth_proc = ProcessorProfile.model_validate(
        {
            "name": "truth",
            "dvfs": {"steps": 1, "freqs_ghz": [2.0], "busy_w": [1.0]},
            "throughput_gmacs": {"fp32": 40.0, "int8": 90.0},
            "layer_ms": {"conv": 0.03, "fc": 0.1},
            "launch_ms": 0.4,
            "interference": {"cpu": 1.8},
        }
    )
    truth = DeviceProfile.model_validate({"name": "truth", "kind": "server", "processors": {"cpu": truth_proc}})
    models = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "inception_v1", "resnet50", "ssd_mobilenet_v3"]
    cells = _cells_from(truth, models)
    features = {m: zoo.zoo_features(m) for m in models}
    result = fit_profile(cells, features, fit_threads=1, name="fit", freqs_ghz=[2.0], power=PowerInputs())
    got = {p.name: p for p in result.params}
    assert result.mape_pct < 1.0
    assert got["throughput_gmacs.fp32"].value == pytest.approx(40.0, rel=0.02)
    assert got["throughput_gmacs.int8"].value == pytest.approx(90.0, rel=0.02)
    assert got["interference.cpu"].value == pytest.approx(1.8, rel=0.02)
    assert got["layer_ms.fc"].value == pytest.approx(0.1, rel=0.05)
    assert got["memory_bound"].source == "assumed" and got["interference.mem"].source == "assumed"
    assert got["dvfs.busy_w"].source == "assumed" and "Table II" in got["dvfs.busy_w"].why


def test_power_from_a_sensor_is_measured_and_net_of_idle() -> None:
    cells = [
        Cell(
            model="m",
            precision=Precision.fp32,
            threads=1,
            step=0,
            freq_ghz=None,
            condition="none",
            round=0,
            n=5,
            median_ms=5.0,
            p10_ms=5.0,
            p90_ms=5.0,
            co_cpu=0.0,
            co_mem=0.0,
            power_w=w,
        )
        for w in (7.5, 8.0, 8.5)
    ]
    busy, idle, params = power_params(cells, 1, 1, PowerInputs(idle_w={0: 5.0}, sensor="rapl"), None)
    assert busy == [pytest.approx(3.0)] and idle == 5.0
    assert all(p.source == "measured" and "rapl" in p.why for p in params)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cpufreq_steps_are_set_and_restored_through_sysfs(tmp_path: Path) -> None:
    pol = tmp_path / "devices/system/cpu/cpufreq/policy0"
    for name, text in (
        ("related_cpus", "0-1"),
        ("scaling_available_frequencies", "1000000 1400000 1800000 2200000"),
        ("scaling_min_freq", "1000000"),
        ("scaling_max_freq", "2200000"),
        ("scaling_cur_freq", "2200000"),
    ):
        _write(pol / name, text)
    cf = Cpufreq([1], sys_root=tmp_path)
    assert cf.settable and cf.steps(2) == [1000000, 2200000] and cf.steps(9) == cf.available_khz
    cf.set(1400000)
    assert (pol / "scaling_min_freq").read_text() == (pol / "scaling_max_freq").read_text() == "1400000"
    cf.restore()
    assert (pol / "scaling_min_freq").read_text() == "1000000"
    assert (pol / "scaling_max_freq").read_text() == "2200000"
    assert cf.current_ghz() == pytest.approx(2.2)
    assert not Cpufreq([0], sys_root=tmp_path / "none").settable
    _write(tmp_path / "devices/system/cpu/cpufreq/policy2/related_cpus", "2-3")
    spanning = Cpufreq([1, 2], sys_root=tmp_path)
    assert not spanning.settable and "span 2" in spanning.detail


def test_rapl_counter_gives_power_while_a_function_runs(tmp_path: Path) -> None:
    zone = tmp_path / "class/powercap/intel-rapl:0"
    _write(zone / "name", "package-0")
    _write(zone / "max_energy_range_uj", "262143328850")
    _write(zone / "energy_uj", "0")
    _write(tmp_path / "class/powercap/intel-rapl:0:0/name", "core")
    _write(tmp_path / "class/powercap/intel-rapl:0:0/energy_uj", "0")
    meter, facts = detect_power(tmp_path)
    assert meter is not None and facts.sensor == "rapl" and meter.names == ["energy.host.package-0"]
    assert facts.counter == str(zone / "energy_uj")  # what AUTOSCALE_ENERGY_COUNTER should read
    stop = threading.Event()

    def counter() -> None:  # a package drawing energy: the counter only ever rises, replaced whole as sysfs reads
        uj = 0
        while not stop.is_set():
            uj += 50_000
            (zone / "energy_uj.tmp").write_text(str(uj))
            os.replace(zone / "energy_uj.tmp", zone / "energy_uj")
            time.sleep(0.01)

    t = threading.Thread(target=counter, daemon=True)
    t.start()
    try:
        _, watts = meter.measure(lambda: time.sleep(0.3))
    finally:
        stop.set()
        t.join(timeout=10)
    assert watts is not None and watts > 0
    absent, facts = detect_power(tmp_path / "empty")
    assert absent is None and facts.sensor is None and set(facts.families) == {"rapl", "hwmon", "battery"}
