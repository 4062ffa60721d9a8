"""What the deploy tests share: the repository's deploy files, parsed, and what the code says they must match.

The compose file is read as ``docker-compose config`` resolves it (anchors, merge keys and ``${VAR}``
interpolated with test tokens), so the checks see what Docker would run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.settings import Settings, _env_name
from services.telemetry.config import TelemetryOptions

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S = DEPLOY / "k8s"
DEPLOY_TOOLS_HINT = (
    "install it with: sudo bash .ci/install-deploy-tools.sh  (Debian's docker-compose, shellcheck, systemd)"
)

# The runner registry's settings every runner sets (compose's x-runner-env, deploy/k8s/runners.yaml).
REGISTRATION_ENV = frozenset({"AUTOSCALE_ADVERTISE_URL", "AUTOSCALE_RUNNER_REGISTRY"})
# Test values for the variables compose interpolates (the real ones come from .env).
COMPOSE_ENV = {
    "AUTOSCALE_CLIENT_TOKEN": "client-token-for-config-check",
    "AUTOSCALE_ADMIN_TOKEN": "admin-token-for-config-check",
    "AUTOSCALE_MESH_TOKEN": "mesh-token-for-config-check",
    "GRAFANA_ADMIN_PASSWORD": "grafana-password-for-config-check",
}
# Compose service / Kubernetes name -> the mesh role it runs (Settings.port(role), the CLI's role).
COMPOSE_ROLES = {
    "decider": "decider",
    "telemetry": "telemetry",
    "edge_runner": "edge",
    "peer_runner": "peer",
    "cloud_runner": "cloud",
    "cloud_runner_gpu": "cloud",
}
K8S_ROLES = {
    "decider": "decider",
    "telemetry": "telemetry",
    "edge-runner": "edge",
    "peer-runner": "peer",
    "cloud-runner": "cloud",
}


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(ROOT / ".venv" / "bin"))
    if path is None:
        pytest.fail(f"{name} is not installed; {DEPLOY_TOOLS_HINT}")
    return path


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def compose_env(**extra: str) -> dict[str, str]:
    """The environment of a compose check: this one less any real tokens, plus the test values."""
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV}
    return env | COMPOSE_ENV | extra


def docker_compose(
    *args: str, file: Path = COMPOSE_FILE, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run(
        tool("docker-compose"), "--project-directory", str(ROOT), "-f", str(file), *args, env=env or compose_env()
    )


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml resolved by docker-compose itself, the gpu profile included."""
    res = docker_compose("--profile", "gpu", "config")
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = yaml.safe_load(res.stdout)
    return doc


def compose_raw() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return doc


def mesh_services() -> dict[str, dict[str, Any]]:
    """The compose services that run AutoScale (the others are Redis, Prometheus, Grafana)."""
    return {n: s for n, s in compose()["services"].items() if n in COMPOSE_ROLES}


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    """Every object of every manifest in deploy/k8s (kustomization.yaml is kustomize's, not an API object)."""
    out: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def k8s_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == kind}


@cache
def setting_env_names() -> frozenset[str]:
    """Every environment variable a service reads: Settings' fields and telemetry's options."""
    names = {_env_name(name, field) for name, field in Settings.model_fields.items()}
    names |= {f"AUTOSCALE_TELEMETRY_{f.upper()}" for f in TelemetryOptions.model_fields}
    names |= {"REDIS_URL", "AUTOSCALE_REDIS_URL"}
    return frozenset(names)


def unknown_settings(names: set[str] | list[str]) -> list[str]:
    """The ``AUTOSCALE_*`` / ``REDIS_URL`` names that no service reads (typos, renamed settings)."""
    ours = {n for n in names if n.startswith("AUTOSCALE_") or n == "REDIS_URL"}
    return sorted(ours - setting_env_names())


def env_file_names(path: Path) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^([A-Z][A-Z0-9_]*)=", path.read_text(), re.MULTILINE)]


def project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def mounts(svc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (source, "bind" | "volume"), from either syntax ``docker-compose config`` prints
    (Debian's 1.29 writes ``source:target:mode`` strings, Compose v2 writes mappings)."""
    out: dict[str, tuple[str, str]] = {}
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = (v["source"], v["type"])
        else:
            source, target = v.split(":")[:2]
            out[target] = (source, "bind" if source.startswith("/") else "volume")
    return out


def published(svc: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, published port) of each published port, from either syntax."""
    out: list[tuple[str, int]] = []
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), int(p["published"])))
        else:
            parts = p.split("/")[0].split(":")
            out.append((parts[0] if len(parts) == 3 else "", int(parts[-2])))
    return out


def readyz_port(healthcheck: list[str]) -> int:
    """The port of the http://127.0.0.1:PORT/readyz URL a healthcheck command probes."""
    urls = [m for part in healthcheck for m in re.findall(r"http://127\.0\.0\.1:(\d+)/readyz$", part)]
    assert len(urls) == 1, f"healthcheck does not probe one /readyz URL: {healthcheck}"
    return int(urls[0])
