"""The decision log and offline replay: traffic through a live mesh with the log on, replayed by
``autoscale qtable replay`` into a table that the decider imports; the log's schema, size cap,
back-pressure and the replay's errors."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from services.cli.main import app as cli
from services.core.decision_log import DecisionRecord
from services.core.policies.qlearning import VISITS_MAX
from services.core.state import StateBins
from services.decider.decision_log import DecisionLog
from tests.conftest import ObservedMesh, digit_body

N_REQUESTS = 40


def _record(**changes: Any) -> dict[str, Any]:
    """A valid version-1 record as JSON data, with ``changes`` applied."""
    data: dict[str, Any] = {
        "v": 1,
        "ts": "2026-01-01T12:00:00Z",
        "request_id": "r1",
        "device": "mi8pro",
        "model": "digits",
        "policy": "autoscale",
        "state": {"index": 36, "bins": StateBins.from_index(36).as_dict(), "raw": {"macs": 4736.0}},
        "candidates": {"edge/cpu/fp32@0": 97.2, "cloud/gpu/fp32": 97.2},
        "action": "cloud/gpu/fp32",
        "outcome": {
            "latency_s": 0.01,
            "energy_j": 0.02,
            "accuracy": 97.2,
            "latency_source": "modelled",
            "energy_source": "modelled",
            "accuracy_source": "measured",
        },
        "reward": -20.0,
        "qos_ms": 50.0,
    }
    data.update(changes)
    return data


# ----------------------------------------------------------------------------- schema and writer


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"v": 2}, "v"),
        ({"action": "edge/dsp/int8"}, "action"),
        ({"reward": float("nan")}, "reward"),
        ({"candidates": {"edge/cpu/fp32@0": 97.2, "nowhere": 1.0}}, "candidates"),
        ({"state": {"index": 36, "bins": StateBins.from_index(37).as_dict(), "raw": {}}}, "state.bins"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_record_refuses_what_replay_could_not_use(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field.split(".")[-1]):
        DecisionRecord.model_validate_json(json.dumps(_record(**changes)))


def test_the_log_rotates_and_stays_under_its_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    line_bytes = len(DecisionRecord.model_validate(_record()).model_dump_json()) + 1
    dlog = DecisionLog(path, max_bytes=10 * line_bytes, backups=2)
    dlog.start()
    record = DecisionRecord.model_validate(_record())
    for i in range(100):
        dlog.write(record.model_copy(update={"request_id": f"r{i}"}))
    dlog.stop()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["decisions.jsonl", "decisions.jsonl.1", "decisions.jsonl.2"]
    assert sum(f.stat().st_size for f in files) <= 3 * 10 * line_bytes
    kept = [DecisionRecord.model_validate_json(line).request_id for f in reversed(files) for line in f.open()]
    assert kept == [f"r{i}" for i in range(100 - len(kept), 100)]  # the newest, in order; older ones deleted
    assert dlog.queued == 100 and dlog.dropped == 0


def test_a_full_buffer_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    dlog = DecisionLog(tmp_path / "d.jsonl", max_bytes=1 << 20, backups=1, max_pending=2)
    record = DecisionRecord.model_validate(_record())
    for _ in range(5):  # the writer thread is not started: nothing drains the buffer
        dlog.write(record)
    assert (dlog.queued, dlog.dropped) == (2, 3)
    dlog.start()
    dlog.stop()
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 2


def test_replay_names_the_line_of_a_malformed_record(tmp_path: Path) -> None:
    log = tmp_path / "d.jsonl"
    log.write_text(json.dumps(_record()) + "\n" + json.dumps(_record(action="edge/dsp/int8")) + "\n")
    out = tmp_path / "t.json"
    result = CliRunner().invoke(cli, ["qtable", "replay", str(log), "--out", str(out)])
    assert result.exit_code == 2 and f"{log}:2: action" in result.output and not out.exists()
    result = CliRunner().invoke(cli, ["qtable", "replay", str(log), "--out", str(out), "--skip-invalid"])
    assert result.exit_code == 0 and "1 updates" in result.output
    assert json.loads(out.read_text())["states"]["36"]["cloud/gpu/fp32"]["n"] == 1
    log.write_text("{not json\n")
    result = CliRunner().invoke(cli, ["qtable", "replay", str(log), "--out", str(out)])
    assert result.exit_code == 2 and ":1: not JSON" in result.output


def test_replay_needs_a_destination(tmp_path: Path) -> None:
    log = tmp_path / "d.jsonl"
    log.write_text(json.dumps(_record()) + "\n")
    result = CliRunner().invoke(cli, ["qtable", "replay", str(log)])
    assert result.exit_code == 2 and "--out" in result.output


# ----------------------------------------------------------------------------- through the mesh


def _wait(what: str, check: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def table_differences(a: dict[str, Any], b: dict[str, Any], tol: float = 5e-3) -> list[str]:
    """Where two exported tables differ: entries, visits, or values beyond ``tol``. The default
    (prior) learner's predictions come from a memo on a grid of conditions, so the decider, whose
    memo also saw its own decisions' contexts, can differ from a replay by that grid's rounding
    (measured up to 1.5e-3 in log latency here)."""
    out = [f"state {s}: only in one" for s in a.keys() ^ b.keys()]
    for s in a.keys() & b.keys():
        out += [f"{s}/{x}: only in one" for x in a[s].keys() ^ b[s].keys()]
        for x in a[s].keys() & b[s].keys():
            if a[s][x]["n"] != b[s][x]["n"] or abs(a[s][x]["q"] - b[s][x]["q"]) > tol:
                out.append(f"{s}/{x}: {a[s][x]} != {b[s][x]}")
    return out


def test_traffic_replayed_offline_reproduces_the_live_table(observed_mesh: ObservedMesh, tmp_path: Path) -> None:
    mesh = observed_mesh.mesh
    client = httpx.Client(base_url=mesh.url("decider"), timeout=60.0, trust_env=False)
    assert client.post("/qtable/reset").status_code == 200
    version0 = client.get("/qtable/stats").json()["version"]
    ids = [f"replay-{i}" for i in range(N_REQUESTS)]
    for i, rid in enumerate(ids):  # sequential: each update lands before the next decision, as offline
        body = digit_body(i % 7) if i % 2 else {"model": "digits", "synthetic": True, "accuracy_min": 90.0}
        assert client.post("/infer", json=body, headers={"X-Request-ID": rid}).status_code == 200

    def logged() -> list[str]:
        lines = observed_mesh.decision_log.read_text().splitlines() if observed_mesh.decision_log.exists() else []
        ours = [line for line in lines if json.loads(line)["request_id"] in set(ids)]
        return ours if len(ours) == N_REQUESTS else []

    lines = _wait("the decision log", logged)
    # every update in Redis: the write counter moved once per request since the reset (visit counts saturate)
    _wait(
        "the Q updates to land in Redis", lambda: client.get("/qtable/stats").json()["version"] == version0 + N_REQUESTS
    )
    live = client.get("/qtable/export").json()
    records = [DecisionRecord.model_validate_json(line) for line in lines]
    assert [r.request_id for r in records] == ids  # one line per inference, in order
    assert all(r.device == "mi8pro" and r.policy == "autoscale" and r.ts <= datetime.now(UTC) for r in records)
    assert records[0].accuracy_min == 90.0 and records[0].outcome.accuracy_source == "measured"

    # Replay this traffic offline, with the deployment's learner settings (its environment).
    log = tmp_path / "traffic.jsonl"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "replayed.json"
    env = mesh.settings.child_env() | {"REDIS_URL": mesh.redis_url}
    result = CliRunner().invoke(cli, ["qtable", "replay", str(log), "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert f"replayed {N_REQUESTS} lines: {N_REQUESTS} updates" in result.output
    replayed = json.loads(out.read_text())

    # The decider learned these requests from an empty table, in this order: offline, the same learner
    # (the prior, with the deployment's profiles) gives the same table, up to its memo's grid.
    diff = table_differences(replayed["states"], live["states"])
    assert not diff, diff

    # Import the replayed table: the decider now holds exactly what replaying produced.
    assert client.post("/qtable/reset").status_code == 200
    imported = client.post("/qtable/import", content=out.read_bytes())
    assert imported.status_code == 200, imported.text
    assert client.get("/qtable/export").json()["states"] == replayed["states"]

    # A visited state/action has one visit per logged inference that took it (up to the packed rows' VISITS_MAX).
    visits = Counter((r.state.index, r.action) for r in records)
    (state, action), n = visits.most_common(1)[0]
    assert replayed["states"][str(state)][action]["n"] == min(n, VISITS_MAX)

    # The same table straight into Redis (--redis), no HTTP involved.
    assert client.post("/qtable/reset").status_code == 200
    result = CliRunner().invoke(cli, ["qtable", "replay", str(log), "--redis"], env=env)
    assert result.exit_code == 0 and "imported into Redis" in result.output, result.output
    assert _wait(
        "the decider to see the import",
        lambda: client.get("/qtable/export").json()["states"] == replayed["states"],
    )
