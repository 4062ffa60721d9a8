"""Bounded input on the real services: oversized bodies (declared or chunked), tensor and ``.npz`` bombs
are answered 413/422 while a concurrent ``/infer`` stream keeps being served; a full runner answers
503 with ``Retry-After``; a client over its rate gets 429 with ``Retry-After``. (How fast the stream
stays is measured by ``bench/bench_limits.py``, not asserted here.)"""

from __future__ import annotations

import io
import json
import os
import select
import socket
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from numpy.lib import format as npy_format

from services.cli.launcher import Mesh, service_command
from services.common.limits import TokenBuckets
from services.common.redis_embed import free_port
from tests.conftest import ROOT, TOKENS, bearer, wait_until_ready
from tests.test_models_api import tiny_cnn

MiB = 1024 * 1024


# ----------------------------------------------------------------------------- helpers


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client got to send before the answer came


def raw_request(
    url: str, method: str, path: str, headers: dict[str, str], chunks: Iterable[bytes], length: int | None = None
) -> RawAnswer:
    """Send a body chunk by chunk on a plain socket (chunked unless ``length`` is declared) and stop as soon as
    the server answers: what a client sees when the server refuses a body before reading all of it."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{framing}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sent = 0
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head.encode())
        sock.settimeout(5)
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is there: stop sending
            frame = chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk)
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sent += len(chunk)
        sock.settimeout(30)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
        except ConnectionResetError:
            pass
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return RawAnswer(int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body, sent)


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def zeros(total: int, chunk: int = MiB) -> Iterator[bytes]:
    block = b"0" * chunk  # one buffer, sent again and again: the client holds 1 MiB, not ``total``
    for _ in range(total // chunk):
        yield block


@dataclass
class InferStream:
    """Synthetic ``/infer`` requests, one after another in a thread, for as long as the attacks last (bounded)."""

    url: str
    max_requests: int = 400
    max_s: float = 240.0
    results: list[tuple[int, float, float]] = field(default_factory=list)  # status, start, end
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> InferStream:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=120)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        body = {"model": "mobilenet_v1", "synthetic": True}
        with httpx.Client(timeout=60, trust_env=False, headers=bearer("client")) as client:
            while not self._stop.is_set() and len(self.results) < self.max_requests and time.monotonic() < deadline:
                t0 = time.monotonic()
                try:
                    status = client.post(f"{self.url}/infer", json=body).status_code
                except httpx.HTTPError:
                    status = 0
                self.results.append((status, t0, time.monotonic()))

    def served_after(self, t: float) -> int:
        return sum(1 for status, start, _ in self.results if start >= t and status == 200)

    def wait_served_after(self, t: float, timeout_s: float = 120.0) -> None:
        """Until a request started at or after ``t`` is answered (bounded; the stream may also end)."""
        deadline = time.monotonic() + timeout_s
        while self.served_after(t) == 0 and time.monotonic() < deadline and self._thread and self._thread.is_alive():
            time.sleep(0.05)


def _error(resp: httpx.Response | RawAnswer) -> dict[str, str]:
    body = resp.content if isinstance(resp, httpx.Response) else resp.body
    return dict(json.loads(body)["error"])


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120, trust_env=False) as c:
        yield c


# ----------------------------------------------------------------------------- bodies and tensors


def test_oversized_bodies_are_refused_before_they_are_read(secure_mesh: Mesh, http: httpx.Client) -> None:
    decider, edge = secure_mesh.url("decider"), secure_mesh.url("edge")
    auth = bearer("client") | {"content-type": "application/json"}
    with InferStream(decider) as stream:
        while not stream.results and stream._thread and stream._thread.is_alive():
            time.sleep(0.05)
        attacks_start = time.monotonic()
        # 50 MB of JSON to /infer, declared: answered from the headers alone
        declared = raw_request(decider, "POST", "/infer", auth, zeros(50 * MiB), length=50 * MiB)
        assert declared.status == 413 and declared.sent < 50 * MiB, declared
        err = _error(declared)
        assert err["code"] == "too_large" and "AUTOSCALE_MAX_INFER_BODY_BYTES" in err["message"], err
        # 300 MB chunked (no Content-Length) to the upload route: counted as it streams, refused at the limit
        upload = raw_request(
            decider, "POST", "/models?name=big&accuracy=50", bearer("admin"), zeros(300 * MiB), length=None
        )
        assert upload.status == 413 and _error(upload)["field"] == "file", upload
        assert upload.sent < 64 * MiB, f"sent {upload.sent} bytes: the body must be refused at the 4 MiB limit"
        # the same on a runner's push route and its /run
        push = raw_request(edge, "PUT", "/models/big", bearer("mesh"), zeros(300 * MiB), length=None)
        assert push.status == 413 and push.sent < 64 * MiB, push
        run = raw_request(edge, "POST", "/run", bearer("mesh"), zeros(300 * MiB), length=None)
        assert run.status == 413 and run.sent < 64 * MiB, run
        # a tensor whose declared shape alone is too big: refused before any decoding
        huge = {"dtype": "float32", "shape": [1, 3, 65536, 65536], "data_b64": "AAAA"}
        resp = http.post(f"{decider}/infer", json={"model": "mobilenet_v1", "input": huge}, headers=bearer("client"))
        assert resp.status_code == 413 and _error(resp)["field"] == "input.shape", resp.text
        stream.wait_served_after(attacks_start)
    assert stream.results and all(status == 200 for status, _, _ in stream.results), stream.results
    assert stream.served_after(attacks_start) > 0, "the decider must keep serving /infer during the attacks"
    # nothing was registered by the refused uploads
    assert "big" not in [m["name"] for m in http.get(f"{decider}/models", headers=bearer("client")).json()["models"]]


def _npz_member(name: str, header_shape: tuple[int, ...], dtype: str, payload: Iterable[bytes]) -> bytes:
    """An .npz whose member ``name`` has the given .npy header and body (which need not agree)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
            header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": header_shape}
            npy_format.write_array_header_1_0(f, header)
            for chunk in payload:
                f.write(chunk)
        with zf.open("y.npy", "w") as f:
            np.lib.format.write_array(f, np.zeros(4, np.int64))
    return buf.getvalue()


def test_npz_bombs_are_refused_from_their_headers(secure_mesh: Mesh, http: httpx.Client) -> None:
    decider = secure_mesh.url("decider")
    up = http.post(
        f"{decider}/models", params={"name": "npz-target", "accuracy": 50}, content=tiny_cnn(), headers=bearer("admin")
    )
    assert up.status_code == 201, up.text
    before = http.get(f"{decider}/models/npz-target", headers=bearer("client")).json()["precisions"]
    zero = b"\0" * MiB
    bombs = {
        # 256 MiB of zeros in well under a MiB: a real bomb, over the 4 MiB limit once expanded
        "bomb": (_npz_member("x", (64 * MiB,), "float32", (zero for _ in range(256))), 413, "too_large"),
        # a header that claims 8 GiB over a few bytes (numpy would allocate the claim before reading)
        "lie": (_npz_member("x", (2**31,), "float32", [zero[:64]]), 422, "invalid_labelled_set"),
        "objects": (_npz_member("x", (4,), "O", [zero[:64]]), 422, "invalid_labelled_set"),
    }
    assert len(bombs["bomb"][0]) < 2 * MiB
    url = f"{decider}/models/npz-target/accuracy"
    with InferStream(decider) as stream:
        while not stream.results and stream._thread and stream._thread.is_alive():
            time.sleep(0.05)
        attacks_start = time.monotonic()
        for name, (body, status, code) in bombs.items():
            resp = http.post(url, content=body, headers=bearer("admin"))
            assert resp.status_code == status, (name, resp.text)
            assert _error(resp)["code"] == code and _error(resp)["field"] == "labelled_set", (name, resp.text)
        stream.wait_served_after(attacks_start)  # the refusals can be quicker than one inference on a busy host
    assert stream.results and all(status == 200 for status, _, _ in stream.results), stream.results
    assert stream.served_after(attacks_start) > 0
    assert http.get(f"{decider}/models/npz-target", headers=bearer("client")).json()["precisions"] == before


# ----------------------------------------------------------------------------- capacity and rate


def test_a_full_runner_answers_503_with_retry_after(secure_mesh: Mesh, http: httpx.Client) -> None:
    """The secured mesh's runners take two runs at once (AUTOSCALE_RUNNER_MAX_IN_FLIGHT=2); eight concurrent
    runs of MobileBERT (~70 ms each, in the worker thread) find it full."""
    edge = secure_mesh.url("edge")
    targets = http.get(f"{edge}/targets", headers=bearer("mesh")).json()
    target = next(
        t["target"]
        for t in targets
        if "mobilebert" in (t["models"] or [])
        and t["target"]["processor"] == "cpu"
        and t["target"]["precision"] == "fp32"
    )
    body = {"model": "mobilebert", "synthetic": True, "target": target}

    def one(_: int) -> httpx.Response:
        with httpx.Client(timeout=120, trust_env=False) as c:
            return c.post(f"{edge}/run", json=body, headers=bearer("mesh"))

    statuses: list[int] = []
    busy: list[httpx.Response] = []
    for _ in range(5):  # bounded: a round where no two runs overlap is possible on a loaded machine
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(8)))
        statuses += [a.status_code for a in answers]
        busy += [a for a in answers if a.status_code == 503]
        if busy:
            break
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    assert busy, "eight concurrent runs never found the runner full"
    assert busy[0].headers["retry-after"] == "1" and _error(busy[0])["code"] == "busy"


def test_token_buckets_refill_at_the_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # empty: the next token is 1 / rate away
    assert buckets.take("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0


def test_a_client_over_its_rate_gets_429_with_retry_after(tmp_path: Path) -> None:
    """A decider on its own (no runners needed for the catalog), 0.1 request/s per client, bursts of 2."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": "alice", "token": TOKENS["client"], "scopes": ["client"]},
                    {"name": "bob", "token": "bob-token-for-tests-0001", "scopes": ["client"]},
                ]
            }
        )
    )
    port, dead = free_port(), free_port()
    env = dict(os.environ) | {
        "AUTOSCALE_DATA_DIR": str(tmp_path),
        "AUTOSCALE_ZOO": json.dumps(["mobilenet_v1"]),
        "AUTOSCALE_TOKENS_FILE": str(tokens),
        "AUTOSCALE_RATE_LIMIT_RPS": "0.1",
        "AUTOSCALE_RATE_LIMIT_BURST": "2",
        "AUTOSCALE_EDGE_URL": f"http://127.0.0.1:{dead}",
        "AUTOSCALE_PEER_URL": f"http://127.0.0.1:{dead}",
        "AUTOSCALE_CLOUD_URL": f"http://127.0.0.1:{dead}",
        "AUTOSCALE_TELEMETRY_URL": f"http://127.0.0.1:{dead}",
    }
    env.pop("REDIS_URL", None)
    log_path = tmp_path / "decider.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            service_command("decider", "127.0.0.1", port),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False) as c:
            wait_until_ready(c, "/healthz", proc, log_path, "decider")
            alice = [c.get("/models", headers=bearer("client")) for _ in range(3)]
            assert [r.status_code for r in alice] == [200, 200, 429], [r.text for r in alice]
            assert int(alice[2].headers["retry-after"]) >= 1 and _error(alice[2])["code"] == "rate_limited"
            bob = c.get("/models", headers={"authorization": "Bearer bob-token-for-tests-0001"})
            assert bob.status_code == 200, bob.text  # each client has its own bucket
            assert all(c.get("/healthz").status_code == 200 for _ in range(5))  # probes are never limited
    finally:
        proc.terminate()
        proc.wait(timeout=30)
