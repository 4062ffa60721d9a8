"""PUT /policy/exploration: a trained policy can be told to exploit (and back), on the live decider."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from services.cli.launcher import Mesh


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.url("decider"), timeout=60.0, trust_env=False) as c:
        yield c


def test_exploration_is_set_and_restored(client: httpx.Client) -> None:
    r = client.put("/policy/exploration", json={"epsilon": 0.0})
    assert r.status_code == 200, r.text
    before = r.json()["previous"]
    assert r.json() == {"policy": "autoscale", "epsilon": 0.0, "previous": before}
    # Exploiting: every request is decided greedily (explored is false on each).
    for _ in range(5):
        body = client.post("/infer", json={"model": "mobilenet_v1", "synthetic": True}).json()
        assert body["explored"] is False
    back = client.put("/policy/exploration", json={"policy": "autoscale", "epsilon": before})
    assert back.status_code == 200 and back.json()["previous"] == 0.0


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"policy": "cloud", "epsilon": 0.0}, "not_exploring", "policy"),
        ({"epsilon": 1.5}, "validation_error", "epsilon"),
        ({"policy": "nope", "epsilon": 0.0}, "validation_error", "policy"),
    ],
)
def test_exploration_errors_name_the_field(
    client: httpx.Client, body: dict[str, object], code: str, field: str
) -> None:
    r = client.put("/policy/exploration", json=body)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == code and field in (err["field"] or "")
