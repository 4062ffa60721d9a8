"""Table IV scenarios: built-ins load, conditions are deterministic given the rng, bad files refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from services.common.config_files import SCENARIOS_DIR, builtin_scenarios, load_scenario
from services.core.scenarios import NON_STREAMING_QOS_S, STREAMING_QOS_S, TRANSLATION_QOS_S, ScenarioError, qos_s
from services.core.schemas import ModelFeatures
from services.core.state import StateBins, observe

VISION = ModelFeatures(conv=14, fc=1, rc=0, macs=569_000_000)


def test_table_iv() -> None:
    # Table IV, plus the evaluation's held-out trace (no setting was tuned on it)
    assert builtin_scenarios() == ["commute", "d1", "d2", "d3", "d4", "s1", "s2", "s3", "s4", "s5"]
    for n in builtin_scenarios():
        s = load_scenario(n.upper())
        assert s.kind == ("static" if n.startswith("s") else "dynamic")


def test_the_held_out_trace_fades_and_bursts() -> None:
    """commute: Wi-Fi crosses the -80 dBm weak bin and back, and the co-runner reaches "large"."""
    wifi = {_bins("commute", float(t)).rssi_w for t in range(0, 120, 5)}
    cpu = {_bins("commute", float(t)).co_cpu for t in range(0, 120, 5)}
    assert wifi == {0, 1} and 3 in cpu and 1 in cpu


def _bins(name: str, t: float = 0.0) -> StateBins:
    return observe(VISION, load_scenario(name).conditions_at(t, np.random.default_rng(0)))


def test_static_states() -> None:
    assert (_bins("s1").co_cpu, _bins("s1").co_mem, _bins("s1").rssi_w, _bins("s1").rssi_p) == (0, 0, 0, 0)
    assert _bins("s2").co_cpu == 3  # CPU-intensive: "large"
    assert _bins("s3").co_mem == 3  # memory-intensive: "large"
    assert _bins("s4").rssi_w == 1 and _bins("s4").rssi_p == 0  # weak Wi-Fi only
    assert _bins("s5").rssi_p == 1 and _bins("s5").rssi_w == 0  # weak Wi-Fi Direct only


def test_dynamic_vary_and_are_deterministic() -> None:
    d3 = load_scenario("d3")
    a = [d3.conditions_at(t, np.random.default_rng(7)).rssi_wifi_dbm for t in range(3)]
    b = [d3.conditions_at(t, np.random.default_rng(7)).rssi_wifi_dbm for t in range(3)]
    assert a == b
    rng = np.random.default_rng(1)
    series = d3.conditions_series(400, rng)["rssi_wifi_dbm"]
    weak = (series <= -80).mean()
    assert 0.15 < weak < 0.6 and series.min() >= -95 and series.max() <= -40  # crosses the weak threshold, clipped
    d2 = load_scenario("d2")
    cpu = {d2.conditions_at(float(t)).co_cpu for t in range(30)}
    assert len(cpu) > 3 and d2.conditions_at(0.0).co_cpu == d2.conditions_at(30.0).co_cpu  # loops every 30 s
    d4 = load_scenario("d4")
    assert d4.conditions_at(10.0).co_cpu < 0.25 < d4.conditions_at(50.0).co_cpu  # music player, then browser
    assert load_scenario("d1").conditions_at(5.0).co_cpu == pytest.approx(0.08)  # no rng: the mean


def test_use_cases() -> None:
    assert qos_s(VISION) == NON_STREAMING_QOS_S == 0.05
    assert qos_s(VISION, streaming=True) == STREAMING_QOS_S == pytest.approx(1 / 30)
    assert qos_s(ModelFeatures(conv=0, fc=1, rc=24, macs=1)) == TRANSLATION_QOS_S == 0.1


def _refused(tmp_path: Path, data: object) -> ScenarioError:
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as ei:
        load_scenario(f)
    assert str(f) in str(ei.value)
    return ei.value


def _base() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((SCENARIOS_DIR / "d3.yaml").read_text())
    return data


def test_bad_files(tmp_path: Path) -> None:
    d = _base()
    del d["kind"]
    e = _refused(tmp_path, d)
    assert e.field == "kind" and "required" in e.reason
    d = _base()
    d["conditions"]["rssi_wifi_dbm"]["gaussian"]["std"] = -1
    e = _refused(tmp_path, d)
    assert e.field == "conditions.rssi_wifi_dbm.gaussian.std"
    d = _base()
    d["conditions"]["co_cpu"] = 1.5
    e = _refused(tmp_path, d)
    assert e.field == "conditions" and "co_cpu" in e.reason and "outside" in e.reason
    d = _base()
    d["conditions"]["co_mem"] = {"trace": {"points": [[5, 0.1], [1, 0.2]]}}
    e = _refused(tmp_path, d)
    assert e.field is not None and e.field.startswith("conditions.co_mem.trace") and "t_s = 0" in e.reason
    d = _base()
    d["conditions"]["bandwidth"] = 3
    e = _refused(tmp_path, d)
    assert e.field == "conditions.bandwidth" and e.reason == "unknown field"
    with pytest.raises(ScenarioError, match="built-in scenarios are"):
        load_scenario("s9")


def test_users_file(tmp_path: Path) -> None:
    f = tmp_path / "commute.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "name": "commute",
                "kind": "dynamic",
                "conditions": {"rssi_wifi_dbm": {"trace": {"points": [[0, -55], [10, -88]], "loop_s": 20}}},
            }
        )
    )
    s = load_scenario(f)
    assert s.conditions_at(5).rssi_wifi_dbm == -55 and s.conditions_at(15).rssi_wifi_dbm == -88
    assert s.conditions_at(25).rssi_wifi_dbm == -55
