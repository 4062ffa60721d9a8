"""The mesh's floor for `make bench`: `/infer`'s two HTTP hops with no work at either end.

``front`` answers ``POST /infer`` by posting the body to ``back``'s ``/run`` and returning its answer;
``back`` answers ``/run`` with fixed JSON. Each is built like the decider and the runners: a FastAPI
app whose hot route is a ``FastPath`` behind the same middleware (request ids, body limit, auth),
served by the same uvicorn and HTTP protocol (``services.common.server``), the hop made with the
decider's own dispatch client (``PostClient``). No validation, decision, inference, metrics or
learning: what `/infer` costs over this floor is the work, and what this costs over the bare app
(``bench/bare_app.py``) is the second hop. Run with ``uvicorn --factory bench.floor_app:front``
(``FLOOR_BACK_URL`` names the back) and ``bench.floor_app:back``.
"""

from __future__ import annotations

import os
import re

from fastapi import FastAPI

from services.common.asgi import FastPath, FastRequest, FastRoute, Handler, Reply
from services.common.auth import Authenticator
from services.common.errors import install_error_handlers
from services.common.http import PostClient
from services.common.limits import BodyLimit
from services.common.settings import Settings
from services.common.tracing import install_tracing

FIXED = b'{"model":"tiny-cnn","policy":"floor","target_id":"edge/cpu/fp32","outputs":[]}'


def _app(path: str, handler: Handler) -> FastAPI:
    settings = Settings(host="127.0.0.1")
    app = FastAPI(title="mesh floor")
    app.state.auth = Authenticator.for_service(settings)
    install_error_handlers(app)
    app.add_middleware(FastPath, routes=[FastRoute("POST", re.compile(path), handler)])
    app.add_middleware(BodyLimit, default=settings.max_request_bytes, routes=[])
    install_tracing(app, "floor", settings)
    return app


def back() -> FastAPI:
    async def run(_: FastRequest) -> Reply:
        return Reply(200, FIXED)

    return _app("/run", run)


def front() -> FastAPI:
    client = PostClient(os.environ["FLOOR_BACK_URL"])

    async def infer(request: FastRequest) -> Reply:
        answer = await client.post("/run", request.body)
        return Reply(answer.status, answer.body)

    return _app("/infer", infer)
