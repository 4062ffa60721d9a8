"""The decider's app factory: wires the store, runners, telemetry cache and policies together."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from services.common.asgi import FastPath
from services.common.auth import Authenticator, Scope, client_key, is_loopback, require
from services.common.config_files import load_mesh
from services.common.errors import error_body, error_responses, install_error_handlers
from services.common.heap import freeze_startup_heap
from services.common.http import PostClient, make_client
from services.common.limits import BodyLimit, RateLimit, RouteLimit, TokenBuckets, infer_body_limit, rate_limit_rps
from services.common.logging import configure_logging, log_event
from services.common.metrics import metrics_endpoint
from services.common.model_store import ModelStore
from services.common.redis_embed import EmbeddedRedis
from services.common.settings import Settings, get_settings, redact_url
from services.common.tracing import install_tracing
from services.core import costmodel
from services.core.policies import PolicySet
from services.core.schemas import Location
from services.decider.api import admin, health, infer, v2
from services.decider.api import catalog as catalog_api
from services.decider.decision_log import DecisionLog
from services.decider.deps import Decider, ModelCatalog
from services.decider.inference import InferenceService
from services.decider.metrics import decider_metrics
from services.decider.outliers import EjectionPolicy, OutlierDetector
from services.decider.qstore import QStore
from services.decider.registry import RegistryWatcher, static_urls, sync_models
from services.decider.runners import ClientsFor, Replica, RunnerRegistry
from services.decider.telemetry_cache import TelemetryCache

log = logging.getLogger("autoscale.decider")


async def _redis_down(_: Request, exc: RedisError) -> JSONResponse:
    # Admin routes read Redis directly (the request path never does): say what is down.
    return JSONResponse(
        error_body("redis_unavailable", f"the Q-table store is unavailable: {type(exc).__name__}"), status_code=503
    )


def _runner_registry(s: Settings, token: str, catalog: ModelCatalog) -> tuple[RunnerRegistry, ClientsFor]:
    """The replicas listed by URL (``registry.static_urls``), and how a replica's clients are made: pooled,
    sending the mesh token. A replica that comes up is sent the uploaded models it lacks."""

    def clients_for(url: str) -> tuple[httpx.AsyncClient, PostClient]:
        probes = make_client(url, timeout_s=s.run_timeout_s, transport=s.http_transport, token=token)
        return probes, PostClient(url, token=token)

    runners = RunnerRegistry(
        refresh_s=s.runner_refresh_s,
        run_timeout_s=s.run_timeout_s,
        outliers=OutlierDetector(
            EjectionPolicy(
                consecutive=s.eject_consecutive_failures,
                base_s=s.eject_base_s,
                max_s=s.eject_max_s,
                max_ejected_share=s.eject_max_percent / 100,
            )
        ),
    )
    runners.on_ready = partial(sync_models, catalog, runners)
    decider_metrics.init_runners([role.value for role in Location])
    for role, url in static_urls(s).items():
        client, runs = clients_for(url)
        runners.add(Replica(id=role.value, role=role, url=url, client=client, runs=runs, static=True))
    return runners, clients_for


async def _watch_registry(
    s: Settings,
    mesh: costmodel.Mesh,
    redis: aioredis.Redis,
    runners: RunnerRegistry,
    clients_for: ClientsFor,
) -> RegistryWatcher | None:
    """With the registry on, list the replicas that register themselves (besides those listed by URL):
    each role's must stand for the device this decider's cost model has for it."""
    if not s.runner_registry:
        return None
    profiles = {Location.edge: mesh.edge.name, Location.peer: mesh.peer.name, Location.cloud: mesh.cloud.name}
    watcher = RegistryWatcher(redis, runners, clients_for, profiles, scan_s=s.runner_refresh_s)
    await watcher.start()
    return watcher


def _telemetry_cache(s: Settings, token: str) -> TelemetryCache:
    """The telemetry snapshot, refreshed in the background with the mesh token; stale after a few refreshes."""
    return TelemetryCache(
        make_client(s.url("telemetry"), timeout_s=2.0, transport=s.http_transport, token=token),
        s.telemetry_refresh_s,
        stale_after_s=s.telemetry_refresh_s * s.telemetry_stale_intervals,
    )


def _decision_log(s: Settings) -> DecisionLog | None:
    if s.decision_log is None:
        return None
    dlog = DecisionLog(s.decision_log, max_bytes=s.decision_log_max_bytes, backups=s.decision_log_backups)
    dlog.start()
    log_event(
        log,
        "decision log on",
        path=str(s.decision_log),
        max_bytes=s.decision_log_max_bytes,
        backups=s.decision_log_backups,
    )
    return dlog


async def _close(
    watcher: RegistryWatcher | None,
    runners: RunnerRegistry,
    telemetry: TelemetryCache,
    qstore: QStore,
    redis: aioredis.Redis,
    decision_log: DecisionLog | None,
) -> None:
    """Stop the background work, close the clients; write what the decision log still has queued."""
    if watcher is not None:
        await watcher.stop()
    await runners.stop()
    await telemetry.stop()
    await qstore.stop()
    if decision_log is not None:
        await asyncio.to_thread(decision_log.stop)
    await runners.close()
    await telemetry.client.aclose()
    await redis.aclose()


def _qstore(s: Settings, redis: aioredis.Redis, mesh: costmodel.Mesh) -> QStore:
    """The device's Q table; every action the profiles offer gets its slot in the packed records up
    front (in one layout, instead of growing the records as targets first appear)."""
    actions = [t.id for t in mesh.targets()]
    # Its write-behind buffer rides out Redis outages (see ``qstore.writer``).
    return QStore(
        redis,
        device=s.edge_device,
        learning_rate=s.learning_rate,
        discount=s.discount,
        seed=s.seed,
        actions=actions,
        queue_max=s.qtable_buffer_max,
        retry_max_wait_s=s.qtable_retry_max_s,
        replay_window_s=s.qtable_replay_window_s,
        flush_interval_s=s.qtable_flush_interval_ms / 1e3,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or get_settings()
    configure_logging(s.log_level, "decider")
    # Validate configuration up front so a bad profile name fails the start, not a request.
    mesh = load_mesh(s.edge_device, s.peer_device, s.cloud_device, s.profiles_dir)
    catalog = ModelCatalog(ModelStore(s.model_cache, s.zoo or None))
    auth = Authenticator.for_service(s)  # refuses a non-loopback bind without tokens

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedded: EmbeddedRedis | None = None
        url = s.redis_url.get_secret_value()
        if not url:
            embedded = EmbeddedRedis(s.data_dir / "redis").start()
            url = embedded.url
            log_event(log, "no REDIS_URL: started an embedded redis", url=url)
        # A socket timeout: a hung (not dead) Redis must fail a call, which the writer then retries.
        redis = aioredis.Redis.from_url(url, socket_timeout=s.redis_timeout_s, socket_connect_timeout=2.0)
        qstore = _qstore(s, redis, mesh)
        await qstore.start()
        runners, clients_for = _runner_registry(s, auth.mesh_token(), catalog)
        telemetry = _telemetry_cache(s, auth.mesh_token())
        await runners.refresh()
        watcher = await _watch_registry(s, mesh, redis, runners, clients_for)
        await telemetry.refresh()
        runners.start()
        telemetry.start()
        await asyncio.to_thread(catalog.reload)  # off the loop: measuring a trained built-in may take seconds
        decision_log = _decision_log(s)
        app.state.qstore = qstore
        app.state.policies = PolicySet(s, store=qstore, mesh=mesh)
        app.state.decider = Decider(
            settings=s,
            models=catalog,
            runners=runners,
            telemetry=telemetry,
            policies=app.state.policies,
            qstore=qstore,
            mesh=mesh,
            rng=random.Random(s.seed),
            decision_log=decision_log,
        )
        app.state.inference = InferenceService(app.state.decider)
        freeze_startup_heap()  # last: what start-up built stays out of the collector's full passes
        log_event(
            log,
            "decider started",
            redis=redact_url(url),
            registry="on" if watcher is not None else "off",
            runners={r.id: r.healthy for r in runners.replicas.values()},
        )
        try:
            yield
        finally:
            await _close(watcher, runners, telemetry, qstore, redis, decision_log)
            if embedded:
                embedded.stop()

    app = FastAPI(
        title="AutoScale decider",
        description="Energy- and QoS-aware placement of DNN inference (AutoScale, MICRO 2020).",
        lifespan=lifespan,
    )
    app.state.auth = auth
    install_error_handlers(app)
    app.exception_handler(RedisError)(_redis_down)
    # Outermost first: tracing (every answer gets its request id), body limits, the rate limit, then the
    # ASGI fast path that answers every inference, native or Open Inference Protocol (the last
    # middleware added is the outermost).
    app.add_middleware(FastPath, routes=[infer.INFER_FAST, v2.V2_INFER_FAST])
    _limit_requests(app, s, catalog)
    install_tracing(app, "decider", s)
    _include_routers(app)
    return app


def _include_routers(app: FastAPI) -> None:
    """Every route, each router with the scope it needs (``services.common.auth``)."""
    app.include_router(health.router)
    app.include_router(infer.router)
    app.include_router(v2.router)
    v2.install_v2_errors(app)
    app.include_router(catalog_api.router)
    admin_errors = error_responses(401, 403, 429, 503)
    app.include_router(admin.router, dependencies=[require(Scope.admin)], responses=admin_errors, tags=["admin"])
    metrics_endpoint(app)


def _limit_requests(app: FastAPI, s: Settings, catalog: ModelCatalog) -> None:
    """Body limits per route (outermost), then the per-client rate limit (``services.common.limits``)."""
    rps = rate_limit_rps(s.rate_limit_rps, is_loopback(s.host))
    if rps > 0:
        app.add_middleware(
            RateLimit,
            buckets=TokenBuckets(rps, s.rate_limit_burst),
            client_key=lambda scope: client_key(app.state.auth, scope),
        )

    def infer_limit() -> int:
        return infer_body_limit(catalog.largest_input_bytes(), s.max_infer_body_bytes, s.max_request_bytes)

    upload = s.max_upload_bytes
    app.add_middleware(
        BodyLimit,
        default=s.max_request_bytes,
        routes=[
            RouteLimit.of("POST", "/infer", infer_limit, "AUTOSCALE_MAX_INFER_BODY_BYTES"),
            RouteLimit.of("POST", v2.V2_INFER_PATH, infer_limit, "AUTOSCALE_MAX_INFER_BODY_BYTES"),
            RouteLimit.of("POST", "/models", upload, "AUTOSCALE_MAX_UPLOAD_BYTES", field="file"),
            RouteLimit.of("POST", "/models/[^/]+/accuracy", upload, "AUTOSCALE_MAX_UPLOAD_BYTES", "labelled_set"),
            RouteLimit.of("POST", "/qtable/(import|transfer)", upload, "AUTOSCALE_MAX_UPLOAD_BYTES"),
        ],
    )
