"""Bad configuration is refused before anything starts, naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.cli.launcher import check_config
from services.common.settings import Settings
from tests.conftest import ROOT


def test_defaults_are_valid() -> None:
    assert check_config(Settings()) == []


def test_bad_profile_scenario_and_engine_are_each_named() -> None:
    problems = check_config(Settings(edge_device="pixel9", scenario="S9", engine_overrides={"cloud": "tensorrt"}))
    assert len(problems) == 3
    assert "AUTOSCALE_EDGE_DEVICE=pixel9" in problems[0] and "mi8pro" in problems[0]
    assert "AUTOSCALE_SCENARIO" in problems[1] and "s1" in problems[1]
    assert "tensorrt" in problems[2] and "onnxruntime" in problems[2]


def test_settings_validation() -> None:
    with pytest.raises(ValidationError, match="distinct"):
        Settings(decider_port=8001)
    with pytest.raises(ValidationError, match="log_level"):
        Settings(log_level="loud")


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
