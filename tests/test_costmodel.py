"""Cost model: eqs. 1-4 by hand on a tiny profile, monotonicity, the action set, vector == scalar."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from services.common.config_files import load_profile
from services.core import costmodel as cm
from services.core.profiles import DeviceProfile, ProfileError, parse_profile
from services.core.schemas import Location, ModelFeatures, Precision, Processor, RuntimeConditions, Target

BASE_W = 0.3  # the tiny phone's base power (SoC + display idle), charged over every latency
TINY = {
    "name": "tiny",
    "kind": "phone",
    "base_power_w": BASE_W,
    "processors": {
        "cpu": {
            "name": "c",
            "cores": 2,
            "utilisation": 0.5,
            "idle_w": 0.2,
            "dvfs": {"steps": 2, "freqs_ghz": [1.0, 2.0], "busy_w": [1.0, 3.0]},
            "throughput_gmacs": {"fp32": 1.0, "int8": 2.0},
            "layer_ms": {"conv": 1.0, "fc": 2.0, "rc": 0.0},
            "launch_ms": 10.0,
            "memory_bound": 0.5,
            "interference": {"cpu": 1.0, "mem": 0.5},
        },
        "gpu": {
            "name": "g",
            "utilisation": 1.0,
            "idle_w": 0.0,
            "dvfs": {"steps": 1, "freqs_ghz": [0.5], "busy_w": [2.0]},
            "throughput_gmacs": {"fp32": 4.0, "fp16": 8.0},
            "supports_rc": False,
        },
        "dsp": {"name": "d", "power_w": 1.5, "throughput_gmacs": {"int8": 10.0}, "supports_rc": False},
    },
    "radio": {
        "wifi": {
            "rtt_ms": 10.0,
            "idle_w": 0.1,
            "points": [
                {"rssi_dbm": -90, "up_mbps": 1.0, "down_mbps": 2.0, "tx_w": 2.0, "rx_w": 1.0},
                {"rssi_dbm": -50, "up_mbps": 100.0, "down_mbps": 200.0, "tx_w": 1.0, "rx_w": 0.5},
            ],
        },
        "p2p": {
            "rtt_ms": 2.0,
            "idle_w": 0.05,
            "points": [
                {"rssi_dbm": -90, "up_mbps": 1.0, "down_mbps": 1.0, "tx_w": 1.0, "rx_w": 1.0},
                {"rssi_dbm": -40, "up_mbps": 50.0, "down_mbps": 50.0, "tx_w": 0.5, "rx_w": 0.5},
            ],
        },
    },
}
SERVER = {
    "name": "srv",
    "kind": "server",
    "processors": {
        "gpu": {"name": "s", "power_w": 100.0, "idle_w": 20.0, "utilisation": 0.5, "throughput_gmacs": {"fp32": 1000.0}}
    },
}
F = ModelFeatures(conv=3, fc=1, rc=0, macs=1_000_000_000, input_bytes=125_000, output_bytes=25_000)
IDLE = RuntimeConditions()


@pytest.fixture(scope="module")
def tiny() -> DeviceProfile:
    return parse_profile(TINY, "tiny.yaml")


@pytest.fixture(scope="module")
def server() -> DeviceProfile:
    return parse_profile(SERVER, "srv.yaml")


def test_cpu_eq1_by_hand(tiny: DeviceProfile) -> None:
    t = Target(runner=Location.edge, processor=Processor.cpu, precision=Precision.fp32, dvfs=0)
    # work 1 s MACs + (3*1 + 1*2) ms layers = 1.005 s; at half frequency with 50 % memory-bound:
    # x (0.5 + 0.5 / 0.5) = 1.5 -> 1.5075 s, + 10 ms launch
    assert cm.inference_time(tiny, F, t, IDLE) == pytest.approx(1.5175)
    # eq. 1 over 2 cores: each busy 50 % at 1.0/2 W, idle 50 % at 0.2/2 W -> 2*(0.25+0.05) = 0.6 W,
    # plus the phone's base power over the 2 s
    assert cm.device_energy(tiny, t, 2.0, IDLE) == pytest.approx(1.2 + BASE_W * 2.0)
    # co-runners: x (1 + 1.0*0.5 + 0.5*0.4) = 1.7
    cond = RuntimeConditions(co_cpu=0.5, co_mem=0.4)
    assert cm.inference_time(tiny, F, t, cond) == pytest.approx(1.5175 * 1.7)


def test_gpu_eq2_and_dsp_eq3(tiny: DeviceProfile) -> None:
    g = Target(runner=Location.edge, processor=Processor.gpu, precision=Precision.fp16, dvfs=0)
    assert cm.inference_time(tiny, F, g, IDLE) == pytest.approx(0.125)
    assert cm.device_energy(tiny, g, 0.125, IDLE) == pytest.approx(0.25 + BASE_W * 0.125)  # 2 W x 0.125 s + base
    d = Target(runner=Location.edge, processor=Processor.dsp, precision=Precision.int8)
    assert cm.inference_time(tiny, F, d, IDLE) == pytest.approx(0.1)
    assert cm.device_energy(tiny, d, 0.1, IDLE) == pytest.approx(0.15 + BASE_W * 0.1)  # eq. 3: 1.5 W x latency + base


def test_remote_eq4_by_hand(tiny: DeviceProfile, server: DeviceProfile) -> None:
    mesh = cm.Mesh(edge=tiny, peer=server, cloud=server)
    t = Target(runner=Location.cloud, processor=Processor.gpu, precision=Precision.fp32)
    tx, rx = cm.link_times(tiny, Location.cloud, F.input_bytes, F.output_bytes, IDLE)  # -50 dBm
    assert tx == pytest.approx(0.005 + 1e6 / 100e6) and rx == pytest.approx(0.005 + 2e5 / 200e6)
    c = cm.estimate(mesh, F, t, IDLE)
    assert c.inference_s == pytest.approx(0.001) and c.latency_s == pytest.approx(tx + 0.001 + rx)
    # eq. 4: P_tx t_tx + P_rx t_rx + P_idle (latency - t_tx - t_rx), plus the phone's base power
    # over the whole latency (the phone waits, screen on, for the remote result)
    assert c.energy_j == pytest.approx(1.0 * tx + 0.5 * rx + 0.1 * 0.001 + BASE_W * c.latency_s)
    # the server's own energy: 100 W x 50 % + 20 W x 50 % over 1 ms
    assert c.device_energy_j == pytest.approx(60.0 * 0.001)
    # interpolation: at -70 dBm, goodput is the geometric mean (log-linear), power the mean
    mid = RuntimeConditions(rssi_wifi_dbm=-70)
    tx70, _ = cm.link_times(tiny, "cloud", F.input_bytes, 0, mid)
    assert tx70 == pytest.approx(0.005 + 1e6 / 10e6)
    e70 = cm.phone_energy(tiny, t, 0.0, tx70, 0.0, mid)
    assert e70 == pytest.approx((1.5 + BASE_W) * tx70)


def test_local_has_no_link_and_phone_energy_is_device_energy(tiny: DeviceProfile) -> None:
    t = Target(runner=Location.edge, processor=Processor.dsp, precision=Precision.int8)
    assert cm.link_times(tiny, Location.edge, 10**6, 10**6, IDLE) == (0.0, 0.0)
    assert cm.phone_energy(tiny, t, 0.1, 0.0, 0.0, IDLE) == cm.device_energy(tiny, t, 0.1, IDLE)


def test_mi8pro_action_count() -> None:
    mi8, tab, cloud = load_profile("mi8pro"), load_profile("galaxy_tab_s6"), load_profile("cloud_p100")
    assert len(cm.targets_for(mi8, Location.edge)) == 23 * 2 + 7 * 2 + 1
    assert [t.id for t in cm.targets_for(tab, Location.peer)] == ["peer/cpu/fp32", "peer/gpu/fp32", "peer/dsp/int8"]
    assert [t.id for t in cm.targets_for(cloud, Location.cloud)] == ["cloud/cpu/fp32", "cloud/gpu/fp32"]
    assert len(cm.Mesh(mi8, tab, cloud).targets()) == 66
    s10 = load_profile("galaxy_s10e")
    assert len(cm.targets_for(s10, "edge")) == 21 * 2 + 9 * 2


def test_supports_rc_only_on_cpus_and_cloud() -> None:
    mi8, tab, cloud = load_profile("mi8pro"), load_profile("galaxy_tab_s6"), load_profile("cloud_p100")
    bert = ModelFeatures(conv=0, fc=1, rc=24, macs=4_000_000_000)
    ts = cm.Mesh(mi8, tab, cloud).targets(bert)
    assert {(t.runner, t.processor) for t in ts} == {
        ("edge", "cpu"),
        ("peer", "cpu"),
        ("cloud", "cpu"),
        ("cloud", "gpu"),
    }
    assert cm.frequency_ghz(mi8, Target.parse("edge/cpu/fp32@22")) == pytest.approx(2.8032)
    assert cm.frequency_ghz(mi8, Target.parse("edge/dsp/int8")) is None


MI8 = load_profile("mi8pro")
MNV1 = ModelFeatures(conv=14, fc=1, rc=0, macs=569_000_000, input_bytes=602_112, output_bytes=4_004)


def test_monotone_dvfs() -> None:
    times, powers = [], []
    for k in range(23):
        t = Target(runner=Location.edge, processor=Processor.cpu, precision=Precision.int8, dvfs=k)
        times.append(cm.inference_time(MI8, MNV1, t, IDLE))
        powers.append(cm.device_energy(MI8, t, 1.0, IDLE))  # average power
    assert all(b < a for a, b in pairwise(times))
    assert all(b > a for a, b in pairwise(powers))


def test_monotone_rssi() -> None:
    t = Target(runner=Location.cloud, processor=Processor.gpu, precision=Precision.fp32)
    prev_tx, prev_e = 0.0, 0.0
    for rssi in range(-40, -96, -5):
        cond = RuntimeConditions(rssi_wifi_dbm=rssi, rssi_p2p_dbm=rssi)
        tx, rx = cm.link_times(MI8, "cloud", MNV1.input_bytes, MNV1.output_bytes, cond)
        e = cm.phone_energy(MI8, t, 0.005, tx, rx, cond)
        assert tx >= prev_tx and e >= prev_e
        prev_tx, prev_e = tx, e
    # "steep below -80 dBm": the step from -80 to -85 costs more than from -50 to -75
    tx_at = {
        r: cm.link_times(MI8, "peer", MNV1.input_bytes, 0, RuntimeConditions(rssi_p2p_dbm=r))[0]
        for r in (-50, -75, -80, -85)
    }
    assert tx_at[-85] - tx_at[-80] > tx_at[-75] - tx_at[-50]


def test_corunners_slow_local_only() -> None:
    cpu = Target.parse("edge/cpu/fp32@22")
    gpu = Target.parse("edge/gpu/fp16@6")
    cloud = Target.parse("cloud/gpu/fp32")
    cp, mem = RuntimeConditions(co_cpu=0.9), RuntimeConditions(co_mem=0.9)
    base_cpu, base_gpu = cm.inference_time(MI8, MNV1, cpu, IDLE), cm.inference_time(MI8, MNV1, gpu, IDLE)
    assert cm.inference_time(MI8, MNV1, cpu, cp) > 2 * base_cpu  # CPU co-runner hurts the CPU a lot
    assert cm.inference_time(MI8, MNV1, gpu, cp) < 1.2 * base_gpu  # ...and the GPU little
    assert cm.inference_time(MI8, MNV1, gpu, mem) > 1.4 * base_gpu  # memory co-runner hurts all
    srv = load_profile("cloud_p100")
    assert cm.inference_time(srv, MNV1, cloud, mem) == cm.inference_time(srv, MNV1, cloud, IDLE)


def test_vectorised_matches_scalar() -> None:
    mesh = cm.Mesh(MI8, load_profile("galaxy_tab_s6"), load_profile("cloud_p100"))
    targets = mesh.targets(MNV1)
    table = cm.CostTable(mesh, MNV1, targets)
    rng = np.random.default_rng(1)
    conds = [
        RuntimeConditions(
            co_cpu=rng.uniform(),
            co_mem=rng.uniform(),
            rssi_wifi_dbm=rng.uniform(-95, -40),
            rssi_p2p_dbm=rng.uniform(-95, -40),
        )
        for _ in range(5)
    ]
    arr = table.evaluate(
        *(np.array([getattr(c, f) for c in conds]) for f in ("co_cpu", "co_mem", "rssi_wifi_dbm", "rssi_p2p_dbm"))
    )
    for i, c in enumerate(conds):
        for j, t in enumerate(targets):
            est = cm.estimate(mesh, MNV1, t, c)
            for k in ("inference_s", "tx_s", "rx_s", "latency_s", "energy_j", "device_energy_j"):
                assert arr[k][i, j] == pytest.approx(getattr(est, k), rel=1e-9), (t.id, k)


def test_scalar_path_is_fast() -> None:
    import time

    mesh = cm.Mesh(MI8, load_profile("galaxy_tab_s6"), load_profile("cloud_p100"))
    t = Target.parse("cloud/gpu/fp32")
    t0 = time.perf_counter()
    for _ in range(2000):
        cm.estimate(mesh, MNV1, t, IDLE)
    per_call = (time.perf_counter() - t0) / 2000
    assert per_call < 200e-6 and math.isfinite(per_call)


def test_base_power_is_charged_over_every_targets_latency() -> None:
    """Every target, local or remote, costs the phone base_power_w x its whole latency on top of
    eqs. 1-4: the same mesh with the base power zeroed differs by exactly that."""
    tab, srv = load_profile("galaxy_tab_s6"), load_profile("cloud_p100")
    mesh = cm.Mesh(MI8, tab, srv)
    bare = cm.Mesh(MI8.model_copy(update={"base_power_w": 0.0}), tab, srv)
    assert MI8.base_power_w is not None and MI8.base_power_w > 0
    cond = RuntimeConditions(co_cpu=0.3, rssi_wifi_dbm=-82)
    for t in mesh.targets(MNV1):
        with_base, without = cm.estimate(mesh, MNV1, t, cond), cm.estimate(bare, MNV1, t, cond)
        assert with_base.latency_s == without.latency_s
        assert with_base.energy_j - without.energy_j == pytest.approx(MI8.base_power_w * with_base.latency_s), t.id


def test_a_phone_without_base_power_is_refused() -> None:
    data = {k: v for k, v in TINY.items() if k != "base_power_w"}
    with pytest.raises(ProfileError, match="base_power_w"):
        parse_profile(data, "nobase.yaml")


def test_deviations_scale_the_terms_they_name() -> None:
    """``Deviations``: none = the profiles; latency x2 doubles inference time; goodput x2 halves
    the transfer beyond the round trip; base power x2 doubles the base term."""
    mesh = cm.Mesh(MI8, load_profile("galaxy_tab_s6"), load_profile("cloud_p100"))
    targets = mesh.targets(MNV1)
    table = cm.CostTable(mesh, MNV1, targets)
    x = (np.array([0.2]), np.array([0.1]), np.array([-60.0]), np.array([-55.0]))
    plain = table.evaluate(*x)
    none = table.evaluate(*x, dev=cm.Deviations.none(len(targets)))
    for k in plain:
        assert np.array_equal(plain[k], none[k])
    n = len(targets)
    dev = cm.Deviations(2 * np.ones(n), np.ones(n), {"wifi": 2.0, "p2p": 1.0}, {}, 2.0)
    d = table.evaluate(*x, dev=dev)
    assert np.allclose(d["inference_s"], 2 * plain["inference_s"])
    cloud = [j for j, t in enumerate(targets) if t.runner == Location.cloud]
    half_rtt = MI8.radio.wifi.rtt_ms / 2e3 if MI8.radio else 0.0
    assert np.allclose(d["tx_s"][0, cloud] - half_rtt, (plain["tx_s"][0, cloud] - half_rtt) / 2)
    local = [j for j, t in enumerate(targets) if t.runner == Location.edge]
    base = MI8.base_w
    proc_e = plain["energy_j"][0, local] - base * plain["latency_s"][0, local]
    assert np.allclose(d["energy_j"][0, local], 2 * proc_e + 2 * base * d["latency_s"][0, local])
