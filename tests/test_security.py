"""Who may call what: every scoped route of the real services refuses the wrong caller, the runner's
upload path cannot swap a model, a non-loopback bind without tokens refuses to start, and
schemathesis finds no server error and no undocumented status code on any service."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from services.cli.launcher import Mesh, check_config, service_command
from services.common.auth import Authenticator, Scope, TokenEntry, security_problems
from services.common.errors import ApiError
from services.common.redis_embed import free_port
from services.common.settings import Settings
from tests.conftest import ROOT, TOKENS, bearer
from tests.test_models_api import custom_op_model, tiny_cnn

# Every operation of each service's OpenAPI schema by the scope it needs (None: public). The test
# below checks this table against the schemas, so a new route cannot be left out unnoticed.
ROUTES: dict[str, dict[tuple[str, str], str | None]] = {
    "decider": {
        ("GET", "/healthz"): None,
        ("GET", "/readyz"): None,
        ("POST", "/infer"): "client",
        ("GET", "/models"): "client",
        ("GET", "/models/{name}"): "client",
        ("GET", "/targets"): "client",
        ("POST", "/models"): "admin",
        ("POST", "/models/{name}/accuracy"): "admin",
        ("GET", "/policy"): "admin",
        ("PUT", "/policy/exploration"): "admin",
        ("GET", "/qtable/export"): "admin",
        ("POST", "/qtable/import"): "admin",
        ("POST", "/qtable/reset"): "admin",
        ("POST", "/qtable/transfer"): "admin",
        ("GET", "/qtable/stats"): "admin",
        ("GET", "/v2/health/live"): None,
        ("GET", "/v2/health/ready"): None,
        ("GET", "/v2"): None,
        ("GET", "/v2/models/{name}"): "client",
        ("GET", "/v2/models/{name}/ready"): "client",
        ("GET", "/v2/models/{name}/versions/{version}"): "client",
        ("GET", "/v2/models/{name}/versions/{version}/ready"): "client",
        ("POST", "/v2/models/{name}/infer"): "client",
        ("POST", "/v2/models/{name}/versions/{version}/infer"): "client",
    },
    "edge": {
        ("GET", "/healthz"): None,
        ("GET", "/readyz"): None,
        ("GET", "/targets"): "client",
        ("GET", "/models"): "client",
        ("POST", "/run"): "mesh",
        ("PUT", "/models/{name}"): "mesh",
    },
    "telemetry": {
        ("GET", "/healthz"): None,
        ("GET", "/readyz"): None,
        ("GET", "/state"): "client",
        ("GET", "/sources"): "client",
        ("PUT", "/scenario"): "admin",
    },
}
ACCURACY = json.dumps({"fp32": {"top1": 50.0, "source": "declared"}})
GRANTS = {"client": {"client"}, "admin": {"admin", "client"}, "mesh": {"mesh", "client"}}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120, trust_env=False) as c:
        yield c


def _path(template: str) -> str:
    return template.replace("{name}", "mobilenet_v1").replace("{version}", "1")


def test_the_route_table_covers_every_operation(secure_mesh: Mesh, http: httpx.Client) -> None:
    for role, routes in ROUTES.items():
        schema = http.get(f"{secure_mesh.url(role)}/openapi.json").json()
        operations = {(m.upper(), p): op for p, item in schema["paths"].items() for m, op in item.items()}
        assert set(operations) == set(routes), role
        for key, scope in routes.items():
            declared = bool(operations[key].get("security"))
            assert declared == (scope is not None), (role, key)  # the bearer scheme is documented where needed
            if scope is not None:
                assert {"401", "403"} <= set(operations[key]["responses"]), (role, key)


@pytest.mark.parametrize("role", list(ROUTES))
def test_every_scoped_route_refuses_the_wrong_caller(secure_mesh: Mesh, http: httpx.Client, role: str) -> None:
    base = secure_mesh.url(role)
    for (method, template), scope in ROUTES[role].items():
        url = f"{base}{_path(template)}"
        if scope is None:
            assert http.request(method, url).status_code in (200, 503), (role, template)
            continue
        missing = http.request(method, url)
        assert missing.status_code == 401, (role, template, missing.text)
        assert missing.headers["www-authenticate"].startswith("Bearer")
        error = missing.json()["error"]
        if template.startswith("/v2/"):  # the Open Inference Protocol's shape: {"error": "<message>"}
            assert "Authorization" in error
        else:
            assert error["field"] == "authorization"
        wrong = http.request(method, url, headers={"authorization": "Bearer not-a-token-of-this-mesh"})
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
        for holder, scopes in GRANTS.items():
            resp = http.request(method, url, headers=bearer(holder))
            if scope in scopes:
                assert resp.status_code not in (401, 403), (role, template, holder, resp.text)
            else:
                assert resp.status_code == 403, (role, template, holder, resp.text)
                assert f'scope="{scope}"' in resp.headers["www-authenticate"]


def test_the_decider_reaches_runners_and_telemetry_with_the_mesh_token(secure_mesh: Mesh, http: httpx.Client) -> None:
    """Runners and telemetry refuse anonymous calls here, so a served /infer proves the token travels."""
    resp = http.post(
        f"{secure_mesh.url('decider')}/infer",
        json={"model": "mobilenet_v1", "synthetic": True},
        headers=bearer("client"),
    )
    assert resp.status_code == 200, resp.text
    runners = http.get(f"{secure_mesh.url('decider')}/targets", headers=bearer("client")).json()["runners"]
    assert all(r["healthy"] for r in runners.values()), runners


def _runner_models(mesh: Mesh, http: httpx.Client) -> dict[str, dict[str, str]]:
    """Each runner's view of its user models: name -> sha256."""
    return {
        role: {m["name"]: m["sha256"] for m in http.get(f"{mesh.url(role)}/models", headers=bearer("mesh")).json()}
        for role in ("edge", "peer", "cloud")
    }


def test_the_runner_upload_path_cannot_swap_a_model(secure_mesh: Mesh, http: httpx.Client) -> None:
    decider, edge = secure_mesh.url("decider"), secure_mesh.url("edge")
    original = tiny_cnn()
    sha = hashlib.sha256(original).hexdigest()
    up = http.post(
        f"{decider}/models", params={"name": "guarded", "accuracy": 60}, content=original, headers=bearer("admin")
    )
    assert up.status_code == 201, up.text
    assert all(views["guarded"] == sha for views in _runner_models(secure_mesh, http).values())
    attacker = tiny_cnn(external=False).replace(b"tiny", b"evil")  # other bytes, still a valid model
    attacker_sha = hashlib.sha256(attacker).hexdigest()
    url = f"{edge}/models/guarded"
    # no token, or a token without the mesh scope (a client, an operator): refused before the body is read
    assert http.put(url, content=attacker, headers={"x-model-sha256": attacker_sha}).status_code == 401
    for holder in ("client", "admin"):
        refused = http.put(url, content=attacker, headers={"x-model-sha256": attacker_sha, **bearer(holder)})
        assert refused.status_code == 403, refused.text
    # the mesh token, but bytes that are not the ones the decider validated
    lied = http.put(url, content=attacker, headers={"x-model-sha256": sha, **bearer("mesh")})
    assert lied.status_code == 422 and lied.json()["error"]["code"] == "sha256_mismatch", lied.text
    assert lied.json()["error"]["field"] == "x-model-sha256"
    no_hash = http.put(url, content=attacker, headers=bearer("mesh"))
    assert no_hash.status_code == 422 and no_hash.json()["error"]["field"] == "x-model-sha256", no_hash.text
    # a model the decider's op check would have refused, with its own correct hash
    custom = custom_op_model()
    unservable = http.put(
        f"{edge}/models/custom-op",
        content=custom,
        headers={"x-model-sha256": hashlib.sha256(custom).hexdigest(), **bearer("mesh")},
    )
    assert unservable.status_code == 422 and unservable.json()["error"]["code"] == "unsupported_op", unservable.text
    # nothing changed anywhere: the decider's record and every runner still hold the validated bytes
    assert http.get(f"{decider}/models/guarded", headers=bearer("client")).json()["sha256"] == sha
    views = _runner_models(secure_mesh, http)
    assert all(v["guarded"] == sha and "custom-op" not in v for v in views.values()), views


def _run_on_edge(mesh: Mesh, http: httpx.Client, model: str) -> list[int]:
    targets = http.get(f"{mesh.url('edge')}/targets", headers=bearer("mesh")).json()
    target = next(t["target"] for t in targets if model in (t["models"] or []) and t["target"]["precision"] == "fp32")
    resp = http.post(
        f"{mesh.url('edge')}/run", json={"model": model, "synthetic": True, "target": target}, headers=bearer("mesh")
    )
    assert resp.status_code == 200, resp.text
    return list(resp.json()["outputs"][0]["shape"])


def test_a_name_pushed_with_new_bytes_gets_a_new_session(secure_mesh: Mesh, http: httpx.Client) -> None:
    """Sessions are keyed by content: the runner serves the new bytes, not a session cached under the name."""
    first, second = tiny_cnn(), _tiny_cnn_with_outputs(5)
    for data in (first, second):
        headers = {"x-model-sha256": hashlib.sha256(data).hexdigest(), "x-accuracy": ACCURACY, **bearer("mesh")}
        resp = http.put(f"{secure_mesh.url('edge')}/models/repushed", content=data, headers=headers)
        assert resp.status_code == 200, resp.text
        expected = [1, 10] if data is first else [1, 5]
        assert _run_on_edge(secure_mesh, http, "repushed") == expected


def _tiny_cnn_with_outputs(classes: int) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((4, classes)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny5",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])],
        [w, fc],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# ----------------------------------------------------------------------------- configuration


def test_scopes_combine_and_open_scopes_need_a_loopback_socket() -> None:
    auth = Authenticator([TokenEntry(name="ops", token=SecretStr("t-admin"), scopes=[Scope.admin])])
    assert auth.open_scopes == {Scope.client, Scope.mesh}
    ops = auth.authorize("Bearer t-admin", Scope.client, local_loopback=False)
    assert ops.name == "ops" and ops.scopes == {Scope.admin, Scope.client}  # admin implies client
    assert auth.authorize(None, Scope.client, local_loopback=True).name == "anonymous"
    with pytest.raises(ApiError) as remote:  # an open scope, but the request came from another host
        auth.authorize(None, Scope.client, local_loopback=False)
    assert remote.value.status == 401
    with pytest.raises(ApiError) as forbidden:  # admin does not imply mesh
        auth.authorize("Bearer t-admin", Scope.mesh, local_loopback=True)
    assert forbidden.value.status == 403 and forbidden.value.field == "authorization"
    with pytest.raises(ApiError) as unknown:
        auth.authorize("Bearer t-admin2", Scope.admin, local_loopback=True)
    assert unknown.value.status == 401 and "invalid_token" in unknown.value.headers["WWW-Authenticate"]


def test_a_non_loopback_bind_needs_a_token_for_every_scope(tmp_path: Path) -> None:
    assert security_problems(Settings()) == []  # loopback: open without tokens, as `make run` and the tests
    problems = security_problems(Settings(host="0.0.0.0", admin_token=SecretStr("x" * 20)))
    assert len(problems) == 1
    assert "AUTOSCALE_CLIENT_TOKEN" in problems[0] and "AUTOSCALE_MESH_TOKEN" in problems[0]
    assert "AUTOSCALE_ADMIN_TOKEN" not in problems[0]
    assert any("shorter" in p for p in security_problems(Settings(host="10.0.0.5", client_token=SecretStr("short"))))
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "tokens:\n"
        f"  - {{name: app, token: {'a' * 32}, scopes: [client]}}\n"
        f"  - {{name: ops, token: {'b' * 32}, scopes: [admin]}}\n"
        f"  - {{name: decider, token: {'c' * 32}, scopes: [mesh]}}\n"
    )
    assert security_problems(Settings(host="0.0.0.0", tokens_file=tokens)) == []
    tokens.write_text("tokens:\n  - {name: app, token: x, scopes: [root]}\n")
    (bad,) = security_problems(Settings(host="0.0.0.0", tokens_file=tokens))
    assert str(tokens) in bad and "tokens.0.scopes.0" in bad
    assert any("AUTOSCALE_MESH_TOKEN" in p for p in check_config(Settings(host="0.0.0.0")))  # autoscale up refuses


def test_a_service_bound_beyond_loopback_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    """The factory refuses before uvicorn binds anything, with the variables to set."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AUTOSCALE_HOST": "0.0.0.0",
        "AUTOSCALE_DATA_DIR": str(tmp_path),
        "AUTOSCALE_ZOO": json.dumps(["mobilenet_v1"]),
        "AUTOSCALE_PRELOAD_MODELS": "[]",
    }
    for role in ("edge", "telemetry"):
        res = subprocess.run(
            service_command(role, "127.0.0.1", free_port()),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode != 0, role
        assert "AUTOSCALE_CLIENT_TOKEN" in res.stderr and "AUTOSCALE_MESH_TOKEN" in res.stderr, res.stderr[-2000:]


# ----------------------------------------------------------------------------- schemathesis


@pytest.mark.slow
@pytest.mark.parametrize(("role", "token"), [("decider", "admin"), ("edge", "mesh"), ("telemetry", "admin")])
def test_schemathesis_finds_no_server_error_and_no_undocumented_status(
    secure_mesh: Mesh, role: str, token: str, tmp_path: Path
) -> None:
    """Every check of schemathesis (tests/schemathesis.toml) against the live service, authenticated with a
    token that reaches every route (admin implies client; the runner's routes need the mesh scope)."""
    report = tmp_path / "report.json"
    res = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(ROOT / "tests" / "schemathesis.toml"),
            "run",
            f"{secure_mesh.url(role)}/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKENS[token]}",
            "--workers",
            "1",
            "--seed",
            "7",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = (res.stdout + res.stderr)[-6000:]
    run = json.loads(report.read_text())
    assert run["complete"] and run["exit_code"] == 0 and res.returncode == 0, out
    assert run["failures"] == [] and run["errors"] == [], out  # server errors, undocumented statuses, every check
    ops = run["operations"]
    assert ops["tested"] == ops["total"] == len(ROUTES[role]) and run["test_cases"]["generated"] > 50, run
