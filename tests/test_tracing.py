"""Request ids and trace context from the client through the decider into a runner: in the
responses, in every service's log lines, and as linked OpenTelemetry spans at a real OTLP receiver.
Also the README's first request: a real held-out digit comes back as its class."""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest

from services.common.logging import JsonFormatter
from services.common.tracing import RequestContext, parse_traceparent, request_context
from services.common.zoo import digits
from services.core.schemas import InferResponse, OutputSummary
from tests.conftest import ObservedMesh, digit_body
from tests.otlp_receiver import ReceivedSpan

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def client(observed_mesh: ObservedMesh) -> httpx.Client:
    return httpx.Client(base_url=observed_mesh.mesh.url("decider"), timeout=60.0, trust_env=False)


# ----------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE_ID}-{CLIENT_SPAN}-01", (TRACE_ID, CLIENT_SPAN, True)),
        (f"00-{TRACE_ID}-{CLIENT_SPAN}-00", (TRACE_ID, CLIENT_SPAN, False)),
        (f"01-{TRACE_ID}-{CLIENT_SPAN}-01-future", (TRACE_ID, CLIENT_SPAN, True)),  # later versions may extend
        (f"00-{TRACE_ID}-{CLIENT_SPAN}-01-x", None),  # version 00 is exactly 55 characters
        (f"ff-{TRACE_ID}-{CLIENT_SPAN}-01", None),
        (f"00-{'0' * 32}-{CLIENT_SPAN}-01", None),
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),
        (f"00-{TRACE_ID.upper()}-{CLIENT_SPAN}-01", None),
        ("garbage", None),
    ],
)
def test_traceparent_parsing_follows_w3c(header: str, expected: tuple[str, str, bool] | None) -> None:
    assert parse_traceparent(header) == expected


def test_log_lines_carry_the_request_context() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    assert "request_id" not in json.loads(JsonFormatter().format(record))
    with request_context(RequestContext("req-9", TRACE_ID, CLIENT_SPAN, None)):
        line = json.loads(JsonFormatter().format(record))
    assert (line["request_id"], line["trace_id"], line["span_id"]) == ("req-9", TRACE_ID, CLIENT_SPAN)


# ----------------------------------------------------------------------------- through the mesh


def test_first_request_a_real_digit_comes_back_as_its_class(client: httpx.Client) -> None:
    """The README's first request: a held-out digit, top-1 = its label, accuracy measured."""
    hits = 0
    for index in range(10):
        resp = client.post("/infer", json=digit_body(index))
        assert resp.status_code == 200, resp.text
        body = InferResponse.model_validate(resp.json())
        assert body.accuracy_source == "measured"
        out = body.outputs[0]
        assert isinstance(out, OutputSummary)
        top = out.top_k
        assert top is not None and len(top) == 3
        hits += top[0][0] == digits.sample(index)[1]
    assert hits >= 9  # ~97 % measured on the held-out split, whatever target served each one


def test_accuracy_min_masks_on_measured_figures(client: httpx.Client) -> None:
    info = client.get("/models/digits").json()
    acc = {p: e["top1"] for p, e in info["precisions"].items()}
    assert {e["source"] for e in info["precisions"].values()} == {"measured"}
    floor = acc["int8"] + 0.01  # just above the measured INT8 figure, below FP32's
    assert floor <= acc["fp32"]
    for _ in range(12):
        resp = client.post("/infer", json={"model": "digits", "synthetic": True, "accuracy_min": floor})
        assert resp.status_code == 200, resp.text
        assert resp.json()["target"]["precision"] != "int8" and resp.json()["accuracy_met"]
    resp = client.post("/infer", json={"model": "digits", "synthetic": True, "accuracy_min": 99.9})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "accuracy_min"


def test_request_id_is_accepted_echoed_and_generated(client: httpx.Client) -> None:
    resp = client.post("/infer", json={"model": "digits", "synthetic": True}, headers={"X-Request-ID": "client-42"})
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == resp.json()["request_id"] == "client-42"
    resp = client.post("/infer", json={"model": "digits", "synthetic": True})
    rid = resp.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid) and resp.json()["request_id"] == rid
    assert re.fullmatch(r"[0-9a-f]{32}", resp.json()["trace_id"])  # a new trace, started here
    assert resp.headers["traceresponse"].split("-")[1] == resp.json()["trace_id"]
    # Every service answers with an id, not only /infer.
    assert re.fullmatch(r"[0-9a-f]{32}", client.get("/healthz").headers["x-request-id"])


def test_a_bad_request_id_is_a_clear_400(client: httpx.Client) -> None:
    for bad in ("has space", "x" * 129):
        resp = client.post("/infer", json={"model": "digits", "synthetic": True}, headers={"X-Request-ID": bad})
        assert resp.status_code == 400
        assert resp.json()["error"]["field"] == "X-Request-ID" and resp.json()["error"]["code"] == "invalid_header"


def test_an_invalid_traceparent_starts_a_new_trace(client: httpx.Client) -> None:
    resp = client.post("/infer", json={"model": "digits", "synthetic": True}, headers={"traceparent": "00-zz-01"})
    assert resp.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", resp.json()["trace_id"])


def _ancestors(spans: list[ReceivedSpan], span: ReceivedSpan) -> list[str]:
    parent = {s.span_id: s.parent_id for s in spans}
    out = [span.parent_id]
    while out[-1] in parent and len(out) < len(spans):
        out.append(parent[out[-1]])
    return out


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {[(s.service, s.name) for s in spans]}"
    return found[0]


def test_trace_context_reaches_the_runner_logs_and_spans(observed_mesh: ObservedMesh, client: httpx.Client) -> None:
    resp = client.post(
        "/infer",
        json=digit_body(3),
        headers={"X-Request-ID": "trace-me", "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"},
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["trace_id"] == TRACE_ID and body["request_id"] == "trace-me"
    runner = body["target"]["runner"]

    # Spans: the decider's server span continues the client's trace; decide, dispatch and learn
    # hang below it; the runner's server span continues from dispatch, and run below that.
    spans = observed_mesh.otlp.wait_for(TRACE_ID, {"decide", "dispatch", "learn", "run"})
    server = _one(spans, "POST /infer")
    assert server.service == "autoscale-decider" and server.parent_id == CLIENT_SPAN
    decide, dispatch = _one(spans, "decide"), _one(spans, "dispatch")
    assert decide.parent_id == dispatch.parent_id == server.span_id
    assert dispatch.attributes["target"] == body["target_id"]
    # learn runs after the response, as a background task (which the instrumentation wraps in a span)
    assert server.span_id in _ancestors(spans, _one(spans, "learn"))
    run_server = _one(spans, "POST /run")
    assert run_server.service == f"autoscale-{runner}_runner" and run_server.parent_id == dispatch.span_id
    run = _one(spans, "run")
    assert run.parent_id == run_server.span_id and run.attributes["model"] == "digits"

    # Logs: the decider's and the runner's lines of this request carry its id and trace.
    decider = [line for line in observed_mesh.log_lines("decider") if line.get("request_id") == "trace-me"]
    assert decider and all(line["trace_id"] == TRACE_ID for line in decider)
    assert any(line["msg"] == "infer" for line in decider)
    ran = [line for line in observed_mesh.log_lines(runner) if line.get("request_id") == "trace-me"]
    assert [line["msg"] for line in ran] == ["run"] and ran[0]["trace_id"] == TRACE_ID
    assert ran[0]["span_id"] == run_server.span_id  # the runner's own span, under the decider's dispatch
