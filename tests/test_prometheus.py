"""Prometheus, alerting and Grafana files, checked with the real tools against the real mesh.

Static: promtool accepts the config and the rules; every alert carries an honest ``probe``;
the dashboards are valid Grafana JSON bound to the provisioned datasource.
Live: a real Prometheus scrapes the running mesh (the shared ``mesh`` fixture) every second
while traffic flows; then EVERY dashboard query and every alert probe must return data
through the HTTP API, every alert expression must evaluate, and every service's /metrics
must pass ``promtool check metrics``.

Prometheus missing is a failure with the install command, never a skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from services.common.redis_embed import free_port
from tests.conftest import wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
INSTALL_HINT = (
    "install it with: sudo bash .ci/install-prometheus.sh  (= apt-get update && apt-get install -y prometheus)"
)
ROLES = ("decider", "edge", "peer", "cloud", "telemetry", "supervisor")


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (the metrics tests need the real Prometheus); {INSTALL_HINT}")
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=60)


# ----------------------------------------------------------------------------- static checks


def test_prometheus_and_promtool_are_installed() -> None:
    for name in ("prometheus", "promtool"):
        res = subprocess.run([binary(name), "--version"], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0 and "version" in (res.stdout + res.stderr), res.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_promtool_check_config(config: str) -> None:
    res = promtool("check", "config", str(PROM_DIR / config))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_promtool_check_rules() -> None:
    res = promtool("check", "rules", str(PROM_DIR / "alerts.yml"))
    assert res.returncode == 0, res.stdout + res.stderr


def _metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (ours and Prometheus' ``up``)."""
    return set(re.findall(r"\b(autoscale_[a-z0-9_]+|up)\b(?=\s*[{\[)\s]|$)", expr))


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_has_an_honest_probe() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    # The alerts the operations brief asks for.
    assert {"QoSViolationRatioHigh", "RunnerDown", "RedisUnreachable", "TelemetryStale"} <= names
    for rule in rules:
        probe = rule.get("annotations", {}).get("probe")
        assert probe, f"alert {rule['alert']} has no probe annotation"
        selected, probed = _metric_names(rule["expr"]), _metric_names(probe)
        # The probe watches the alert's own series, nothing else.
        assert probed and probed <= selected, f"{rule['alert']}: probe uses {probed}, expr uses {selected}"


def dashboard_queries() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.stem}: {panel['title']} [{target['refId']}]", target["expr"]))
    return out


def test_dashboards_are_valid_grafana_json() -> None:
    assert {p.stem for p in DASHBOARDS} >= {"overview", "devices"}
    ds = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    ds_uid = ds["datasources"][0]["uid"]
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "provider.yml").read_text())
    assert provider["providers"][0]["type"] == "file" and provider["providers"][0]["options"]["path"]
    uids: set[str] = set()
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        assert dash["uid"] not in uids and dash["title"]
        uids.add(dash["uid"])
        assert 36 <= dash["schemaVersion"] <= 41
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in dash["panels"]:
            where = f"{path.name}: {panel.get('title')}"
            assert panel["type"] in ("timeseries", "stat", "gauge", "bargauge", "table"), where
            assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), where
            assert panel["datasource"]["uid"] == ds_uid, where
            assert panel["targets"], where
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), where
            for t in panel["targets"]:
                assert t["expr"].strip() and _metric_names(t["expr"]), f"{where}: {t['expr']}"


def test_dashboards_cover_the_brief() -> None:
    exprs = " ".join(e for _, e in dashboard_queries())
    for needle in (
        "autoscale_decider_requests_total",
        "autoscale_decider_latency_seconds_bucket",
        "autoscale_decider_qos_violations_total",
        "autoscale_decider_energy_joules_total",
        "autoscale_decider_explorations_total",
        "autoscale_decider_reward_cumulative",
        "autoscale_telemetry_power_watts",
        "autoscale_telemetry_rssi_dbm",
        "autoscale_telemetry_corunner_cpu_ratio",
        "autoscale_runner_busy_seconds_total",
    ):
        assert needle in exprs, f"no panel uses {needle}"


# ----------------------------------------------------------------------------- live Prometheus


@dataclass
class LiveProm:
    url: str
    client: httpx.Client

    def query(self, expr: str) -> dict[str, Any]:
        resp = self.client.get("/api/v1/query", params={"query": expr})
        body: dict[str, Any] = resp.json()
        return body


def _scrape_config(mesh: Any, tmp: Path) -> Path:
    """The repository's prometheus.yml, re-pointed at the mesh's real ports, scraping every 1 s."""
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"]["scrape_interval"] = "1s"
    cfg["global"]["evaluation_interval"] = "1s"
    cfg["rule_files"] = [str(PROM_DIR / "alerts.yml")]
    (tmp / "targets").mkdir(exist_ok=True)
    for job in cfg["scrape_configs"]:
        for sc in job.get("static_configs", []):
            role = sc["labels"]["role"]
            assert role in ROLES, f"unexpected role {role} in prometheus.yml"
            sc["targets"] = [urlsplit(mesh.url(role)).netloc]
        for fsd in job.get("file_sd_configs", []):
            fsd["files"] = [str(tmp / "targets" / "*.json")]
            fsd["refresh_interval"] = "1s"
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = promtool("check", "config", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    return path


class Traffic:
    """Steady /infer requests in the background, so every rate() window has moving counters."""

    def __init__(self, decider_url: str, period_s: float = 0.25) -> None:
        self.url, self.period_s = decider_url, period_s
        self.sent = self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        bodies = [
            {"model": "mobilenet_v1", "synthetic": True},
            {"model": "mobilenet_v1", "synthetic": True, "streaming": True},  # 1/30 s QoS: some violations
        ]
        with httpx.Client(base_url=self.url, timeout=60.0, trust_env=False) as client:
            while not self._stop.is_set():
                body = bodies[self.sent % len(bodies)]
                self.sent += 1
                try:
                    resp = client.post("/infer", json=body)
                    if resp.status_code == 200:
                        self.ok += 1
                    else:
                        self.errors.append(f"{resp.status_code} {resp.text[:200]}")
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                self._stop.wait(self.period_s)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=70)


@pytest.fixture(scope="module")
def live(mesh: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveProm, Traffic]]:
    tmp = tmp_path_factory.mktemp("prometheus")
    config = _scrape_config(mesh, tmp)
    port = free_port()
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0, trust_env=False)
    try:
        wait_until_ready(client, "/-/ready", proc, log_path, "prometheus", poll_s=0.2)
        with Traffic(mesh.url("decider")) as traffic:
            yield LiveProm(str(client.base_url), client), traffic
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait_all_up(prom: LiveProm, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        targets = prom.client.get("/api/v1/targets").json()["data"]["activeTargets"]
        if len(targets) == len(ROLES) and all(t["health"] == "up" for t in targets):
            return targets
        if time.monotonic() > deadline:
            pytest.fail(
                "not every mesh service is scraped successfully: "
                + json.dumps([{k: t.get(k) for k in ("scrapeUrl", "health", "lastError")} for t in targets], indent=1)
            )
        time.sleep(0.5)


def test_prometheus_scrapes_every_service(live: tuple[LiveProm, Traffic]) -> None:
    prom, _ = live
    targets = _wait_all_up(prom, 60)
    assert {t["labels"]["role"] for t in targets} == set(ROLES)
    assert {t["labels"]["job"] for t in targets} == {"decider", "runner", "telemetry", "supervisor"}


def test_every_dashboard_query_and_alert_probe_returns_data(live: tuple[LiveProm, Traffic]) -> None:
    prom, traffic = live
    _wait_all_up(prom, 60)
    queries = dashboard_queries() + [(f"alert {r['alert']} probe", r["annotations"]["probe"]) for r in alert_rules()]
    alert_exprs = [(f"alert {r['alert']} expr", r["expr"]) for r in alert_rules()]
    # Rate windows need two scrapes with traffic in between: retry until all have data.
    deadline = time.monotonic() + 90
    while True:
        empty: list[str] = []
        for where, expr in queries:
            body = prom.query(expr)
            assert body["status"] == "success", f"{where}: {expr}\n{body}"
            if not body["data"]["result"]:
                empty.append(f"{where}: {expr}")
        if not empty:
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"{len(empty)} of {len(queries)} queries return no data after 90 s "
                f"(traffic: {traffic.sent} sent, {traffic.ok} ok, errors {traffic.errors[:3]}):\n" + "\n".join(empty)
            )
        time.sleep(1.0)
    for where, expr in alert_exprs:  # normally false: they must evaluate, not necessarily match
        body = prom.query(expr)
        assert body["status"] == "success", f"{where}: {expr}\n{body}"
    assert traffic.ok > 0 and not traffic.errors, traffic.errors[:5]


def test_alert_rules_load_and_evaluate(live: tuple[LiveProm, Traffic]) -> None:
    prom, _ = live
    deadline = time.monotonic() + 30
    while True:
        groups = prom.client.get("/api/v1/rules").json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        # An unevaluated rule reports the zero time.
        if rules and not any(r.get("lastEvaluation", "0001").startswith("0001") for r in rules):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"alert rules not evaluated within 30 s: {[r.get('name') for r in rules]}")
        time.sleep(0.5)
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
    for r in rules:
        assert r["health"] == "ok", f"rule {r['name']} evaluation: {r.get('lastError')}"
    # With every service up and Redis reachable, the outage alerts must not be firing.
    firing = {r["name"] for r in rules if r["state"] == "firing"}
    assert not firing & {"RunnerDown", "DeciderDown", "TelemetryDown", "RedisUnreachable"}, firing


def test_every_service_metrics_pass_promtool(live: tuple[LiveProm, Traffic], mesh: Any) -> None:
    # After traffic, so labelled series (requests, executions, energy) are present.
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        for role in ROLES:
            resp = client.get(f"{mesh.url(role)}/metrics")
            assert resp.status_code == 200, f"{role}: {resp.status_code}"
            res = promtool("check", "metrics", stdin=resp.text)
            assert res.returncode == 0, f"{role} /metrics: {res.stdout}{res.stderr}"
            assert "autoscale_" in resp.text, f"{role} exports no autoscale_ metric"
