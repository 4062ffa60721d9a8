"""Bad configuration is refused before anything starts, naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.cli.launcher import check_config
from services.common.redis_embed import free_ports
from services.common.settings import Settings, redact_url
from tests.conftest import ROOT, mesh_settings


def test_defaults_are_valid() -> None:
    assert check_config(Settings()) == []


def test_bad_profile_scenario_and_engine_are_each_named() -> None:
    problems = check_config(Settings(edge_device="pixel9", scenario="S9", engine_overrides={"cloud": "tensorrt"}))
    assert len(problems) == 3
    assert "AUTOSCALE_EDGE_DEVICE=pixel9" in problems[0] and "mi8pro" in problems[0]
    assert "AUTOSCALE_SCENARIO" in problems[1] and "s1" in problems[1]
    assert "tensorrt" in problems[2] and "onnxruntime" in problems[2]


def test_test_meshes_get_distinct_ports(tmp_path: Path) -> None:
    # Six ports chosen one after another could repeat (a closed socket's port is free again): a
    # fresh clone's run once failed the distinct-ports check that way.
    assert len(set(free_ports(200))) == 200
    for _ in range(20):
        mesh_settings(tmp_path)  # the distinct-ports validator passes


def test_settings_validation() -> None:
    with pytest.raises(ValidationError, match="distinct"):
        Settings(decider_port=8001)
    with pytest.raises(ValidationError, match="log_level"):
        Settings(log_level="loud")


def test_every_setting_belongs_to_exactly_one_section() -> None:
    sections = Settings.sections()
    names = [n for fields in sections.values() for n in fields]
    assert sorted(names) == sorted(Settings.model_fields), "a field in no section, or in two"
    assert "learning_rate" in sections["LearnerSettings"] and "redis_url" in sections["RedisSettings"]


def test_secrets_are_masked_yet_reach_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://app:hunter2@db.internal:6379/0")
    monkeypatch.setenv("AUTOSCALE_ADMIN_TOKEN", "t0k3n")
    s = Settings()
    shown = f"{s!r} {s} {s.model_dump_json()}"
    assert "hunter2" not in shown and "t0k3n" not in shown
    env = s.child_env()  # what the launcher hands to every service it starts
    assert env["REDIS_URL"] == "redis://app:hunter2@db.internal:6379/0" and env["AUTOSCALE_ADMIN_TOKEN"] == "t0k3n"
    assert env["AUTOSCALE_ZOO"] == "[]" and env["AUTOSCALE_DECIDER_PORT"] == "8000"
    for key, value in env.items():  # a child reading its environment sees the same settings
        monkeypatch.setenv(key, value)
    assert Settings().child_env() == env
    assert redact_url(env["REDIS_URL"]) == "redis://app:***@db.internal:6379/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_up_exits_2_with_the_reason(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "AUTOSCALE_DATA_DIR": str(tmp_path), "AUTOSCALE_EDGE_DEVICE": "pixel9"}
    res = subprocess.run(
        [sys.executable, "-m", "services.cli", "up", "--no-prebuild"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "pixel9" in res.stderr and "bad configuration" in res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "services.cli", "up"],
        cwd=ROOT,
        env=env | {"AUTOSCALE_DECIDER_PORT": "abc", "AUTOSCALE_EDGE_DEVICE": "mi8pro"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "decider_port" in res.stderr
