"""The decider's app factory: wires the store, runners, telemetry cache and policies together."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from services.common.config_files import load_profile
from services.common.errors import error_body, install_error_handlers
from services.common.http import make_client
from services.common.logging import configure_logging, log_event
from services.common.metrics import metrics_endpoint
from services.common.model_store import ModelStore
from services.common.redis_embed import EmbeddedRedis
from services.common.settings import Settings, get_settings, redact_url
from services.core import costmodel
from services.core.policies import PolicySet
from services.core.schemas import Location
from services.decider.api import admin, catalog, health, infer
from services.decider.deps import Decider, ModelCatalog, require_admin
from services.decider.inference import InferenceService
from services.decider.qstore import QStore
from services.decider.runners import Runner, RunnerRegistry
from services.decider.telemetry_cache import TelemetryCache

log = logging.getLogger("autoscale.decider")


async def _redis_down(_: Request, exc: RedisError) -> JSONResponse:
    # Admin routes read Redis directly (the request path never does): say what is down.
    return JSONResponse(
        error_body("redis_unavailable", f"the Q-table store is unavailable: {type(exc).__name__}"), status_code=503
    )


def _runner_registry(s: Settings) -> RunnerRegistry:
    """A client per runner role, at the URL the settings give it."""
    return RunnerRegistry(
        runners={
            role: Runner(
                role=role,
                url=s.url(role.value),
                client=make_client(s.url(role.value), timeout_s=s.run_timeout_s, transport=s.http_transport),
            )
            for role in Location
        },
        refresh_s=s.runner_refresh_s,
        run_timeout_s=s.run_timeout_s,
    )


def _qstore(s: Settings, redis: aioredis.Redis, mesh: costmodel.Mesh) -> QStore:
    """The device's Q table; every action the profiles offer gets its slot in the packed records up
    front (in one layout, instead of growing the records as targets first appear)."""
    actions = [t.id for t in mesh.targets()]
    return QStore(
        redis, device=s.edge_device, learning_rate=s.learning_rate, discount=s.discount, seed=s.seed, actions=actions
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or get_settings()
    configure_logging(s.log_level, "decider")
    # Validate configuration up front so a bad profile name fails the start, not a request.
    mesh = costmodel.Mesh(
        edge=load_profile(s.edge_device, s.profiles_dir),
        peer=load_profile(s.peer_device, s.profiles_dir),
        cloud=load_profile(s.cloud_device, s.profiles_dir),
    )
    store = ModelStore(s.model_cache, s.zoo or None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedded: EmbeddedRedis | None = None
        url = s.redis_url.get_secret_value()
        if not url:
            embedded = EmbeddedRedis(s.data_dir / "redis").start()
            url = embedded.url
            log_event(log, "no REDIS_URL: started an embedded redis", url=url)
        redis = aioredis.Redis.from_url(url)
        qstore = _qstore(s, redis, mesh)
        await qstore.start()
        runners = _runner_registry(s)
        telemetry = TelemetryCache(
            make_client(s.url("telemetry"), timeout_s=2.0, transport=s.http_transport), s.telemetry_refresh_s
        )
        await runners.refresh()
        await telemetry.refresh()
        runners.start()
        telemetry.start()
        app.state.qstore = qstore
        app.state.policies = PolicySet(s, store=qstore, mesh=mesh)
        app.state.decider = Decider(
            settings=s,
            models=ModelCatalog(store),
            runners=runners,
            telemetry=telemetry,
            policies=app.state.policies,
            qstore=qstore,
            mesh=mesh,
            rng=random.Random(s.seed),
        )
        app.state.inference = InferenceService(app.state.decider)
        log_event(
            log,
            "decider started",
            redis=redact_url(url),
            runners={r.role.value: r.healthy for r in runners.runners.values()},
        )
        try:
            yield
        finally:
            await runners.stop()
            await telemetry.stop()
            await qstore.stop()
            for r in runners.runners.values():
                await r.client.aclose()
            await telemetry.client.aclose()
            await redis.aclose()
            if embedded:
                embedded.stop()

    app = FastAPI(
        title="AutoScale decider",
        description="Energy- and QoS-aware placement of DNN inference (AutoScale, MICRO 2020).",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.exception_handler(RedisError)(_redis_down)

    app.include_router(health.router)
    app.include_router(infer.router)
    app.include_router(catalog.router)
    app.include_router(admin.router, dependencies=[Depends(require_admin)], tags=["admin"])
    metrics_endpoint(app)
    return app
