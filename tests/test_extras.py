"""The serving core alone: a mesh whose processes have none of the extras (scikit-learn, matplotlib,
TVM) starts and serves, and each feature that needs an extra says which one instead of failing.

The extras are hidden from the mesh's processes by tests/fixtures/no_extras/sitecustomize.py on their
PYTHONPATH (the modules read as not installed, as in the core image); everything else is the real mesh.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.cli.launcher import Mesh
from services.core.extras import EXTRA_OF, MissingExtra, require
from tests.conftest import mesh_settings

ROOT = Path(__file__).resolve().parents[1]
NO_EXTRAS = str(ROOT / "tests" / "fixtures" / "no_extras")
CORE_ENV = {"PYTHONPATH": os.pathsep.join([NO_EXTRAS, str(ROOT)])}


@pytest.fixture(scope="module")
def core_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    # zoo=[]: every built-in this installation can serve, which is what the core image registers.
    m = Mesh(mesh_settings(tmp_path_factory.mktemp("core-mesh"), zoo=[]), env=CORE_ENV)
    m.start(timeout_s=600)
    try:
        yield m
    finally:
        m.stop()


def test_the_fixture_hides_the_extras() -> None:
    code = "import importlib.util as u; print([m for m in ('sklearn', 'matplotlib', 'tvm') if u.find_spec(m)])"
    res = subprocess.run(
        [sys.executable, "-c", code], env=os.environ | CORE_ENV, capture_output=True, text=True, timeout=60
    )
    assert res.stdout.strip() == "[]", res.stderr


def test_core_mesh_serves_without_the_extras(core_mesh: Mesh) -> None:
    with httpx.Client(base_url=core_mesh.url("decider"), timeout=60) as client:
        names = [m["name"] for m in client.get("/models").json()["models"]]
        assert "mobilenet_v1" in names and "digits" not in names  # digits is trained with scikit-learn
        r = client.post("/infer", json={"model": "mobilenet_v1", "synthetic": True, "output_format": "summary"})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["shape"] == [1, 1000]
        r = client.post("/infer", json={"model": "digits", "synthetic": True})
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_model"


@pytest.mark.parametrize("policy", ["lr", "svm", "bo"])
def test_a_policy_that_needs_scikit_learn_names_the_extra(core_mesh: Mesh, policy: str) -> None:
    body = {"model": "mobilenet_v1", "synthetic": True, "output_format": "summary", "policy": policy}
    r = httpx.post(f"{core_mesh.url('decider')}/infer", json=body, timeout=60)
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "missing_extra" and error["field"] == "policy" and error["install"] == "eval"
    assert f"policy '{policy}' needs scikit-learn" in error["message"]
    assert "pip install 'autoscale-mesh[eval]'" in error["message"]
    # The decider goes on serving every other policy.
    r = httpx.post(f"{core_mesh.url('decider')}/infer", json=body | {"policy": "autoscale"}, timeout=60)
    assert r.status_code == 200, r.text


def _core(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=os.environ | CORE_ENV | env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def test_a_tvm_runner_without_the_tvm_extra_refuses_to_start(tmp_path: Path) -> None:
    res = _core(
        "runner",
        "--role",
        "cloud",
        AUTOSCALE_ENGINE_OVERRIDES='{"cloud/cpu": "tvm"}',
        AUTOSCALE_DATA_DIR=str(tmp_path),
        AUTOSCALE_CLOUD_PORT="1",  # never reached: it stops before binding
    )
    assert res.returncode != 0
    assert "engine 'tvm' needs apache-tvm" in res.stderr and "autoscale-mesh[tvm]" in res.stderr


def test_evaluate_without_the_eval_extra_says_so(tmp_path: Path) -> None:
    res = _core("evaluate", "--out", str(tmp_path / "results"))
    assert res.returncode == 2
    assert "autoscale evaluate needs scikit-learn" in res.stderr and "autoscale-mesh[eval]" in res.stderr
    assert not (tmp_path / "results").exists()


def test_digits_listed_explicitly_without_scikit_learn_names_the_extra(tmp_path: Path) -> None:
    code = f"from services.common.model_store import ModelStore\nModelStore({str(tmp_path)!r}, ['digits'])\n"
    res = subprocess.run(
        [sys.executable, "-c", code], env=os.environ | CORE_ENV, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert res.returncode != 0 and "built-in model 'digits' needs scikit-learn" in res.stderr


def test_missing_extra_error() -> None:
    require("numpy")  # installed: nothing happens
    with pytest.raises(MissingExtra) as exc:
        require("the thing", "numpy", "surely_not_installed_module", field="x")
    assert exc.value.status == 503 and exc.value.code == "missing_extra" and exc.value.field == "x"
    assert exc.value.extra == {"install": "surely_not_installed_module"}
    assert set(EXTRA_OF.values()) == {
        ("scikit-learn", "eval"),
        ("matplotlib", "eval"),
        ("apache-tvm", "tvm"),
    }
