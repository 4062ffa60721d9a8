"""docker-compose.yml, the Dockerfile and what they name, checked without a Docker engine.

Real tools: Debian's docker-compose parses and validates the file (``config``), check-jsonschema validates
it against the Compose specification's JSON schema (vendored in check-jsonschema), hadolint lints the
Dockerfile, promtool checks the Prometheus config. Then the cross-checks: every command is a real
``autoscale`` subcommand, ports, environment names and healthcheck paths are the code's, Prometheus and
Grafana name compose services, and every package an image installs is pinned by the lock.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

from scripts.image_requirements import image_requirements
from services.cli.main import app as cli
from services.common.settings import Settings
from tests.deploy_cases import (
    COMPOSE_FILE,
    COMPOSE_ROLES,
    DEPLOY,
    REGISTRATION_ENV,
    ROOT,
    compose,
    compose_env,
    compose_raw,
    docker_compose,
    mesh_services,
    mounts,
    project_version,
    published,
    readyz_port,
    run,
    tool,
    unknown_settings,
)

PROM_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"


# ----------------------------------------------------------------------------- the validators


@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"]])
def test_docker_compose_config_accepts_the_file(profile: list[str]) -> None:
    res = docker_compose(*profile, "config", "-q")
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_refuses_to_start_without_a_token() -> None:
    res = docker_compose("config", "-q", env=compose_env(AUTOSCALE_MESH_TOKEN=""))
    assert res.returncode != 0
    assert "set AUTOSCALE_MESH_TOKEN in .env, see deploy/.env.example" in res.stderr


def test_compose_file_matches_the_compose_specification_schema() -> None:
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE))
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_validators_catch_a_broken_file(tmp_path: Path) -> None:
    # Teeth: a misspelt condition fails both validators (so a passing run means something).
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("condition: service_healthy", "condition: service_healty", 1))
    assert docker_compose("config", "-q", file=broken).returncode != 0
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken))
    assert res.returncode != 0 and "service_healty" in res.stdout + res.stderr


def test_hadolint_accepts_the_dockerfile() -> None:
    res = run(tool("hadolint"), str(DEPLOY / "Dockerfile"))
    assert res.returncode == 0, res.stdout + res.stderr


# ----------------------------------------------------------------------------- the mesh's services


def _routes() -> dict[str, set[str]]:
    """GET routes of each service's app, from the code."""
    from services.decider.api.health import router as decider_health
    from services.runner.app import router as runner_router
    from services.telemetry.app import create_app as telemetry_app
    from services.telemetry.config import TelemetryOptions

    everything = "corunner,rapl,hwmon,battery,nvml,cpufreq,wireless"  # nothing to detect: cheap
    telemetry = telemetry_app(Settings(), options=TelemetryOptions(disable=everything))
    return {
        "decider": {getattr(r, "path", "") for r in decider_health.routes},
        "runner": {getattr(r, "path", "") for r in runner_router.routes},
        "telemetry": set(telemetry.openapi()["paths"]),
    }


def test_every_command_is_a_real_autoscale_subcommand() -> None:
    runner = CliRunner()
    for name, svc in mesh_services().items():
        command = svc["command"]
        assert command[0] == "autoscale", f"{name}: {command}"
        res = runner.invoke(cli, [*command[1:], "--help"])
        assert res.exit_code == 0, f"{name}: `{' '.join(command)}` is not a command: {res.output}"
        role = COMPOSE_ROLES[name]
        assert command[1:] == (["runner", "--role", role] if role in ("edge", "peer", "cloud") else [role]), name


def test_healthchecks_probe_each_services_readyz_on_its_port() -> None:
    settings, routes = Settings(), _routes()
    for name, svc in mesh_services().items():
        role = COMPOSE_ROLES[name]
        assert readyz_port(svc["healthcheck"]["test"]) == settings.port(role), name
        assert "/readyz" in routes["runner" if role in ("edge", "peer", "cloud") else role], name
        assert svc["healthcheck"]["test"][:3] == ["CMD", "python", "/usr/local/bin/healthcheck.py"], name
    for name, svc in compose()["services"].items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_environment_names_and_urls_are_the_settings() -> None:
    settings = Settings()
    services = compose()["services"]
    for name, svc in mesh_services().items():
        env: dict[str, Any] = svc["environment"]
        assert unknown_settings(list(env)) == [], f"{name}: no service reads these"
        url = urlsplit(env["AUTOSCALE_TELEMETRY_URL"])
        assert url.hostname in services and COMPOSE_ROLES[url.hostname] == "telemetry", name
        assert url.port == settings.port("telemetry"), name
        # Runners are found in the registry (each replica by its own address), not by a static URL per role.
        assert not {"AUTOSCALE_EDGE_URL", "AUTOSCALE_PEER_URL", "AUTOSCALE_CLOUD_URL"} & set(env), name
        assert env["AUTOSCALE_HOST"] == "0.0.0.0"
        redis = urlsplit(env.get("REDIS_URL", "redis://redis:6379/0"))
        assert redis.hostname == "redis" and "redis" in services


def test_runners_register_and_scale() -> None:
    settings = Settings()
    for name, svc in mesh_services().items():
        role = COMPOSE_ROLES[name]
        if role not in ("edge", "peer", "cloud"):
            continue
        env = svc["environment"]
        assert set(env) >= REGISTRATION_ENV, name
        assert env["AUTOSCALE_RUNNER_REGISTRY"] == "true"
        # Each replica advertises its own address (the entrypoint fills in {hostname}).
        assert env["AUTOSCALE_ADVERTISE_URL"] == f"http://{{hostname}}:{settings.port(role)}", name
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert "ports" not in svc, f"{name}: a fixed host port would stop `--scale {name}=N`"


def test_every_service_is_hardened_and_limited() -> None:
    for name, svc in compose()["services"].items():
        assert svc["restart"] == "unless-stopped", name
        user = str(svc.get("user", ""))
        assert user and user.split(":")[0] not in ("0", "root"), f"{name} runs as root"
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert svc["deploy"]["resources"]["limits"]["memory"], name
        image = svc["image"]
        assert re.search(r":v?\d+\.\d+", image) and not image.endswith(":latest"), f"{name}: unpinned {image}"
        for dep, cond in svc.get("depends_on", {}).items():
            assert cond["condition"] == "service_healthy", (name, dep)
    for name, svc in mesh_services().items():
        assert svc["user"] == "10001:10001", name  # the Dockerfile's autoscale user
        assert svc["image"].startswith(f"autoscale-mesh:{project_version()}-"), name
        assert svc["build"]["dockerfile"].endswith("deploy/Dockerfile"), name


def test_published_ports() -> None:
    ports = {n: published(s) for n, s in compose()["services"].items()}
    assert ports["decider"] == [("", 8000)]  # every interface: it needs tokens there
    # No auth of their own: the host's loopback only.
    assert ports["prometheus"] == [("127.0.0.1", 9090)] and ports["grafana"] == [("127.0.0.1", 3000)]
    assert {n for n, p in ports.items() if p} == {"decider", "prometheus", "grafana"}


def test_gpu_profile_reserves_the_gpus_for_a_cloud_runner() -> None:
    raw = compose_raw()["services"]
    assert "profiles" not in raw["cloud_runner"] and raw["cloud_runner_gpu"]["profiles"] == ["gpu"]
    gpu = compose()["services"]["cloud_runner_gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert gpu["networks"]["default"]["aliases"] == ["cloud_runner"]
    assert gpu["build"]["args"]["EXTRAS"] == "gpu"


def test_redis_is_7_with_aof_on_a_volume() -> None:
    redis = compose()["services"]["redis"]
    assert redis["image"].startswith("redis:7.")
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert mounts(redis)["/data"] == ("redis", "volume")


# ----------------------------------------------------------------------------- Prometheus and Grafana


def test_prometheus_scrapes_the_compose_services() -> None:
    services, settings = compose()["services"], Settings()
    prom = compose()["services"]["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.compose.yml" in prom["command"]
    assert mounts(prom)["/prometheus"] == ("prometheus", "volume")
    cfg = yaml.safe_load((PROM_DIR / "prometheus.compose.yml").read_text())
    seen: set[str] = set()
    for job in cfg["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host, port = target.split(":")
                assert host in services and int(port) == settings.port(COMPOSE_ROLES[host]), target
                seen.add(COMPOSE_ROLES[host])
        for dns in job.get("dns_sd_configs", []):
            for host in dns["names"]:
                assert host in services and dns["port"] == settings.port(COMPOSE_ROLES[host]), host
                seen.add(COMPOSE_ROLES[host])
    assert seen == {"decider", "edge", "peer", "cloud", "telemetry"}


def test_grafana_datasource_names_the_prometheus_service() -> None:
    grafana = compose()["services"]["grafana"]
    binds = {t: Path(src) for t, (src, kind) in mounts(grafana).items() if kind == "bind"}
    ds_dir = binds["/etc/grafana/provisioning/datasources"]
    assert ds_dir == GRAFANA_DIR / "compose" / "datasources"
    compose_ds = yaml.safe_load((ds_dir / "prometheus.yml").read_text())["datasources"][0]
    host_ds = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    url = urlsplit(compose_ds["url"])
    assert url.hostname == "prometheus" and url.port == 9090 and "prometheus" in compose()["services"]
    # Same datasource as the host's (the dashboards refer to its uid), another address.
    assert {k: v for k, v in compose_ds.items() if k != "url"} == {
        k: v for k, v in host_ds["datasources"][0].items() if k != "url"
    }
    assert binds["/var/lib/grafana/dashboards"] == GRAFANA_DIR / "dashboards"
    assert binds["/etc/grafana/provisioning/dashboards"] == GRAFANA_DIR / "provisioning" / "dashboards"


# ----------------------------------------------------------------------------- the images


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


@pytest.mark.parametrize("extras", ["", "tvm", "gpu", "eval,tvm", "test"])
def test_every_image_requirement_is_pinned_by_the_lock(extras: str) -> None:
    pins = _constraints()
    for line in image_requirements(extras.split(",")):
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in constraints.txt: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{line} vs the lock's {pins[name]}"


def test_gpu_image_has_onnxruntime_gpu_instead_of_onnxruntime() -> None:
    names = {canonicalize_name(Requirement(r).name) for r in image_requirements(["gpu"])}
    assert "onnxruntime-gpu" in names and "onnxruntime" not in names
    assert "onnxruntime" in {canonicalize_name(Requirement(r).name) for r in image_requirements([""])}
    core = {canonicalize_name(Requirement(r).name) for r in image_requirements([""])}
    assert not core & {"apache-tvm", "scikit-learn", "matplotlib"}  # the serving core carries none of the extras


def test_image_build_args_name_real_extras() -> None:
    for name, svc in mesh_services().items():
        extras = svc["build"]["args"]["EXTRAS"]
        assert image_requirements(extras.split(",")), name  # raises KeyError on an unknown extra
    res = run(sys.executable, "scripts/image_requirements.py", "--extras", "nope")
    assert res.returncode == 2 and "unknown extra 'nope'" in res.stderr


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    sources = [
        s for m in re.finditer(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE) for s in m.group(1).split()
    ]
    allowed = {
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    assert set(sources) == allowed
    for src in sources:
        assert (ROOT / src).exists(), src
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("**") if "**" in ignore else -1] == "**" and "**/.env" in ignore


def test_dockerfile_runs_as_the_compose_user_with_a_readyz_healthcheck() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile and "--uid 10001" in dockerfile
    assert re.search(r'^HEALTHCHECK .*CMD \["python", "/usr/local/bin/healthcheck.py"\]$', dockerfile, re.MULTILINE)
    assert dockerfile.count("FROM ${PYTHON_IMAGE} AS") == 2  # builder and runtime
    # The dependency layer comes before the code.
    assert dockerfile.index("pip install -c constraints.txt") < dockerfile.index("COPY services ./services")


# ----------------------------------------------------------------------------- healthcheck and entrypoint


def test_healthcheck_finds_the_service_of_pid_1() -> None:
    sys.path.insert(0, str(DEPLOY))
    try:
        from healthcheck import role_of  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(DEPLOY))
    assert role_of(["/opt/venv/bin/python", "/opt/venv/bin/autoscale", "runner", "--role", "cloud"]) == "cloud"
    assert role_of(["autoscale", "runner", "--role=peer"]) == "peer"
    assert role_of(["autoscale", "runner"]) == "edge"
    assert role_of(["autoscale", "telemetry"]) == "telemetry"
    assert role_of(["autoscale", "decider"]) == "decider"


def test_healthcheck_against_a_real_service(mesh: Any) -> None:
    script = str(DEPLOY / "healthcheck.py")
    for role in ("decider", "edge", "telemetry"):
        res = run(sys.executable, script, f"{mesh.url(role)}/readyz")
        assert res.returncode == 0, (role, res.stderr)
    from services.common.redis_embed import free_port

    res = run(sys.executable, script, f"http://127.0.0.1:{free_port()}/readyz")
    assert res.returncode == 1 and "readyz" in res.stderr


def test_entrypoint_fills_in_the_replicas_hostname() -> None:
    entry = str(DEPLOY / "docker-entrypoint.sh")
    hostname = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
    env = {"PATH": "/usr/bin:/bin", "AUTOSCALE_ADVERTISE_URL": "http://{hostname}:8003"}
    res = run("bash", entry, "sh", "-c", 'printf %s "$AUTOSCALE_ADVERTISE_URL"', env=env)
    assert res.returncode == 0 and res.stdout == f"http://{hostname}:8003", res.stderr
    env["AUTOSCALE_ADVERTISE_URL"] = "http://10.1.2.3:8003"  # an explicit address is left alone
    assert (
        run("bash", entry, "sh", "-c", 'printf %s "$AUTOSCALE_ADVERTISE_URL"', env=env).stdout == "http://10.1.2.3:8003"
    )
    assert run("bash", entry, "sh", "-c", "exit 7", env=env).returncode == 7  # exec: the command's status


def test_env_example_lists_every_variable_compose_requires() -> None:
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE_FILE.read_text()))
    example = set(re.findall(r"^([A-Z_]+)=", (DEPLOY / ".env.example").read_text(), re.MULTILINE))
    assert required and required <= example
