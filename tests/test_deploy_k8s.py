"""deploy/k8s, checked without a cluster: every object against the Kubernetes API's JSON schemas (the ones
kubernetes-validate bundles, strict: unknown fields fail), then against the compose stack and the code
(commands, ports, probes, environment names, images), and the autoscaling chain (HPA -> Prometheus adapter
rules -> series the runners really export).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from services.common.config_files import load_profile, load_scenario
from services.common.settings import Settings
from tests.deploy_cases import (
    COMPOSE_ROLES,
    DEPLOY,
    K8S,
    K8S_ROLES,
    REGISTRATION_ENV,
    compose,
    k8s_docs,
    k8s_objects,
    project_version,
    run,
    tool,
    unknown_settings,
)

# The oldest Kubernetes still in common support and the newest the bundled schemas know.
K8S_VERSIONS = ("1.30.0", "1.33.0")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    files = sorted(str(p) for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    res = run(tool("kubernetes-validate"), "-k", version, "--strict", "--quiet", *files)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_schema_check_catches_a_broken_manifest(tmp_path: Path) -> None:
    broken = tmp_path / "runners.yaml"
    broken.write_text((K8S / "runners.yaml").read_text().replace("readinessProbe", "readinessProbes", 1))
    res = run(tool("kubernetes-validate"), "-k", K8S_VERSIONS[-1], "--strict", "--quiet", str(broken))
    assert res.returncode != 0 and "readinessProbes" in res.stdout + res.stderr


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == manifests
    assert kustomization["namespace"] == "autoscale"
    assert [i["name"] for i in kustomization["images"]] == ["autoscale-mesh"]


def test_deployments_match_the_compose_services() -> None:
    settings, services = Settings(), compose()["services"]
    deployments = {n: d for n, d in k8s_objects("Deployment").items() if n in K8S_ROLES}
    assert set(deployments) == set(K8S_ROLES)
    for name, dep in deployments.items():
        role, c = K8S_ROLES[name], _container(dep)
        twin = services[name.replace("-", "_")]
        assert c["command"] == twin["command"], name
        # The same image variant (core / tvm) as compose, of this version.
        assert (
            c["image"]
            == twin["image"]
            == f"autoscale-mesh:{project_version()}-{twin['build']['args']['EXTRAS'] or 'core'}"
        )
        assert c["ports"] == [{"name": "http", "containerPort": settings.port(role)}], name
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz", name
        # The compose healthcheck probes the same /readyz on the same port.
        assert f"http://127.0.0.1:{settings.port(role)}/readyz" in twin["healthcheck"]["test"], name
        pod = dep["spec"]["template"]["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and f"{pod['runAsUser']}:{pod['runAsGroup']}" == twin["user"], name
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name
        assert c["resources"]["limits"]["memory"], name
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(settings.port(role)), name


def test_services_route_to_their_deployments() -> None:
    settings, deployments = Settings(), k8s_objects("Deployment")
    for name, svc in k8s_objects("Service").items():
        if name == "redis":
            continue
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items(), name
        assert svc["spec"]["ports"] == [{"name": "http", "port": settings.port(K8S_ROLES[name]), "targetPort": "http"}]


def test_environment_names_are_settings_and_urls_name_services() -> None:
    settings, services = Settings(), k8s_objects("Service")
    config = k8s_objects("ConfigMap")["autoscale-config"]["data"]
    secret = k8s_objects("Secret")["autoscale-tokens"]["stringData"]
    assert unknown_settings(list(config) + list(secret)) == []
    url = urlsplit(config["AUTOSCALE_TELEMETRY_URL"])
    assert url.hostname in services and K8S_ROLES[url.hostname] == "telemetry"
    assert url.port == settings.port("telemetry")
    # Runner pods register themselves (runners.yaml); no static URL per role would reach every replica.
    assert not {"AUTOSCALE_EDGE_URL", "AUTOSCALE_PEER_URL", "AUTOSCALE_CLOUD_URL"} & set(config)
    assert urlsplit(config["REDIS_URL"]).hostname == "redis" and "redis" in services
    # The same mesh settings as compose's (decider's environment there), less what differs by design.
    compose_env = compose()["services"]["decider"]["environment"]
    same = {"AUTOSCALE_HOST", "AUTOSCALE_DATA_DIR", "AUTOSCALE_SCENARIO", "AUTOSCALE_PRELOAD_MODELS"}
    assert {k: config[k] for k in same} == {k: compose_env[k] for k in same}
    # Placeholders shorter than the 16 characters a token needs: applied as they are, the mesh refuses to start.
    assert all(len(v) < 16 for v in secret.values())


def test_runners_register_with_their_pod_address() -> None:
    settings = Settings()
    for name, dep in k8s_objects("Deployment").items():
        role = K8S_ROLES.get(name)
        if role not in ("edge", "peer", "cloud"):
            continue
        env = {e["name"]: e for e in _container(dep)["env"]}
        assert set(env) >= REGISTRATION_ENV, name
        assert env["AUTOSCALE_RUNNER_REGISTRY"]["value"] == "true"
        assert env["AUTOSCALE_ADVERTISE_URL"]["value"] == f"http://$(POD_IP):{settings.port(role)}"
        # $(POD_IP) is expanded by Kubernetes only when POD_IP is defined earlier in the list.
        names = [e["name"] for e in _container(dep)["env"]]
        assert names.index("POD_IP") < names.index("AUTOSCALE_ADVERTISE_URL")
        assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        # Compose's runner of the same role registers under the same names.
        compose_env = compose()["services"][name.replace("-", "_")]["environment"]
        assert set(compose_env) >= REGISTRATION_ENV and COMPOSE_ROLES[name.replace("-", "_")] == role


def test_redis_persists_its_aof() -> None:
    redis = k8s_objects("StatefulSet")["redis"]
    c = _container(redis)
    assert c["image"] == compose()["services"]["redis"]["image"]
    assert c["args"] == compose()["services"]["redis"]["command"]
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_cloud_runner_scales_on_metrics_the_adapter_serves() -> None:
    hpa = k8s_objects("HorizontalPodAutoscaler")["cloud-runner"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cloud-runner"}
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    adapter = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    served = {r["name"]["as"]: r for r in adapter["rules"]["custom"]}
    assert wanted == set(served)
    pdbs = {n: p["spec"]["selector"]["matchLabels"] for n, p in k8s_objects("PodDisruptionBudget").items()}
    assert pdbs["cloud-runner"] == {"app.kubernetes.io/name": "cloud-runner"}


def test_adapter_rules_read_series_the_runners_export(mesh: Any) -> None:
    adapter = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    series = {re.match(r"[a-z_]+", r["seriesQuery"]).group(0) for r in adapter["rules"]["custom"]}  # type: ignore[union-attr]
    text = httpx.get(f"{mesh.url('cloud')}/metrics", timeout=10).text
    exported = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    exported |= {f"{n}_total" for n in exported}  # a counter's TYPE line names it without _total
    assert series <= exported, f"not exported by a runner: {series - exported}"


def test_profiles_and_scenarios_in_the_configmaps_load() -> None:
    maps = k8s_objects("ConfigMap")
    for key, text in maps["autoscale-profiles"]["data"].items():
        path = Path("/tmp") / key  # the loaders take a path; the name is the file's
        path.write_text(text)
        assert load_profile(str(path)).name == Path(key).stem
    assert (
        maps["autoscale-profiles"]["data"]["gpu_server.yaml"] == (DEPLOY / "gpu-server" / "gpu_server.yaml").read_text()
    )
    for key, text in maps["autoscale-scenarios"]["data"].items():
        path = Path("/tmp") / key
        path.write_text(text)
        assert load_scenario(str(path)).name == Path(key).stem
    mounts = {m["mountPath"] for m in _container(k8s_objects("Deployment")["decider"])["volumeMounts"]}
    config = maps["autoscale-config"]["data"]
    assert config["AUTOSCALE_PROFILES_DIR"] in mounts and "/etc/autoscale/scenarios" in mounts


def test_prometheus_k8s_config(tmp_path: Path) -> None:
    # Debian's promtool is built without Kubernetes service discovery, so the pod discovery is swapped for a
    # static target and everything else (relabelling, rule files) is checked by promtool as written.
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.k8s.yml").read_text())
    job = cfg["scrape_configs"][0]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["autoscale"]}}]
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
    cfg["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    res = run(tool("promtool"), "check", "config", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    # The role and job labels the dashboards and alerts select by come from each Deployment's component label.
    components = {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in k8s_objects("Deployment").values()
    }

    def relabelled(label: str) -> set[str]:
        out: set[str] = set()
        for rule in job["relabel_configs"]:
            if rule.get("target_label") == label:
                replacement = rule["replacement"].replace("$1", r"\1")
                out |= {re.sub(rule["regex"], replacement, c) for c in components if re.fullmatch(rule["regex"], c)}
        return out

    assert relabelled("role") == {"decider", "edge", "peer", "cloud", "telemetry"}
    alert_jobs = set(re.findall(r'job="([a-z]+)"', (DEPLOY / "prometheus" / "alerts.yml").read_text()))
    assert alert_jobs and relabelled("job") == alert_jobs


def test_every_object_is_labelled_part_of_the_mesh() -> None:
    for path, doc in k8s_docs():
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "autoscale-mesh", (path.name, doc["kind"])
