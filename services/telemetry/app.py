"""Telemetry service: ``create_app(settings)`` is the uvicorn factory.

Endpoints: ``GET /state`` (TelemetrySnapshot, from memory), ``GET /sources`` (which source
serves each reading, measured or emulated, and what detection found), ``PUT /scenario``
(switch the emulated scenario at runtime), ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

Extra sources (tests, plug-ins) come either as the ``extra_sources`` argument or through
``AUTOSCALE_TELEMETRY_EXTRA_SOURCES=module:factory[,module:factory]``, where a factory is a
callable returning a ``Source`` or a list of them.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request

from services.common.auth import Authenticator, Scope, require
from services.common.config_files import builtin_scenarios, load_scenario
from services.common.errors import NotReady, error_responses, install_error_handlers
from services.common.heap import freeze_startup_heap
from services.common.limits import BodyLimit
from services.common.logging import configure_logging, log_event
from services.common.metrics import metrics_endpoint
from services.common.settings import Settings
from services.common.tracing import install_tracing
from services.core.errors import AutoScaleError
from services.core.scenarios import Scenario, ScenarioError, parse_scenario
from services.core.schemas import Liveness, Readiness, TelemetrySnapshot
from services.telemetry.config import TelemetryOptions
from services.telemetry.hub import Hub
from services.telemetry.schemas import ScenarioRequest, ScenarioSwitched, SourcesView
from services.telemetry.sources import DetectContext, Source, detect_all
from services.telemetry.sources.corunner import MESH_ID_ENV
from services.telemetry.sources.scenario import ScenarioSource, scenario_label

log = logging.getLogger("autoscale.telemetry")


class UnknownScenario(AutoScaleError):
    status = 422
    code = "unknown_scenario"


class InvalidScenario(AutoScaleError):
    status = 422
    code = "invalid_scenario"


def _requested_scenario(req: ScenarioRequest, scenario_file: Path | None) -> tuple[Scenario, str]:
    """The scenario a PUT /scenario names (built-in or beside the scenario file) or defines inline."""
    if req.name is not None:
        try:
            sc = load_scenario(req.name, scenario_file.parent if scenario_file else None)
        except ScenarioError:
            builtins = ", ".join(n.upper() for n in builtin_scenarios())
            where = f" (or a name in {scenario_file.parent})" if scenario_file else ""
            raise UnknownScenario(
                f"unknown scenario {req.name!r}; built-ins: {builtins}{where}", field="name"
            ) from None
        return sc, scenario_label(sc, req.name)
    try:
        sc = parse_scenario(req.scenario, "scenario")
    except ScenarioError as exc:
        field = f"scenario.{exc.field}" if exc.field else "scenario"
        raise InvalidScenario(f"{field}: {exc.reason}", field=field) from None
    return sc, scenario_label(sc, "inline")


def _load_extra(spec: str) -> list[Source]:
    out: list[Source] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        module, _, attr = item.partition(":")
        if not attr:
            raise ValueError(f"AUTOSCALE_TELEMETRY_EXTRA_SOURCES entry {item!r} must be 'module:factory'")
        made = getattr(importlib.import_module(module), attr)()
        out += list(made) if isinstance(made, (list, tuple)) else [made]
    return out


def build_hub(settings: Settings, options: TelemetryOptions, extra_sources: Sequence[Source] = ()) -> Hub:
    ctx = DetectContext(
        sys_root=options.sys_root,
        proc_root=options.proc_root,
        mesh_id=os.environ.get(MESH_ID_ENV, ""),
        edge_device=settings.edge_device,
        tool_path=options.tool_path or None,
    )
    sources, report = detect_all(ctx, options.disabled())
    sources += list(extra_sources) + _load_extra(options.extra_sources)
    scenario = ScenarioSource.from_settings(
        settings.scenario,
        settings.scenario_file,
        seed=settings.seed,
        edge_device=settings.edge_device,
        profiles_dir=settings.profiles_dir,
    )
    if any(n.startswith("power.") for s in sources if s.kind == "measured" for n in s.provides()):
        scenario.profile = None  # real power is measured here: no emulated phone power beside it
    for det in report:
        if det.found:
            log_event(log, "telemetry source detected", family=det.family, found=det.found)
        else:
            log_event(log, "telemetry source absent", family=det.family, reason=det.absent)
    return Hub(
        sources=sources,
        scenario=scenario,
        detections=report,
        refresh_s=settings.telemetry_refresh_s,
        read_timeout_s=options.read_timeout_s,
        stale_after_s=options.stale_threshold(settings.telemetry_refresh_s),
        prefer=options.prefer,
    )


async def _hub(request: Request) -> Hub:  # async: a sync dependency costs a threadpool hop
    return request.app.state.hub


HubDep = Annotated[Hub, Depends(_hub)]


def create_app(
    settings: Settings | None = None,
    *,
    options: TelemetryOptions | None = None,
    extra_sources: Sequence[Source] = (),
) -> FastAPI:
    settings = settings or Settings()
    options = options or TelemetryOptions()
    configure_logging(settings.log_level, "telemetry")
    auth = Authenticator.for_service(settings)  # refuses a non-loopback bind without tokens
    hub = build_hub(settings, options, extra_sources)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        freeze_startup_heap()  # last: what start-up built stays out of the collector's full passes
        log_event(
            log,
            "telemetry ready",
            scenario=hub.scenario.label,
            prefer=hub.prefer,
            active={k: v.name for k, v in hub.active().items()},
        )
        yield
        await hub.stop()

    app = FastAPI(title="AutoScale telemetry", lifespan=lifespan)
    app.state.hub = hub
    app.state.settings = settings
    app.state.auth = auth
    install_error_handlers(app)
    app.add_middleware(BodyLimit, default=settings.max_request_bytes)
    install_tracing(app, "telemetry", settings)
    metrics_endpoint(app)
    reads = APIRouter(dependencies=[require(Scope.client)], responses=error_responses(401, 403))

    @reads.get("/state", response_model=TelemetrySnapshot)
    async def state(h: HubDep) -> TelemetrySnapshot:
        return h.snapshot()

    @reads.get("/sources", response_model=SourcesView)
    async def sources(h: HubDep) -> SourcesView:
        return h.sources_view()

    app.include_router(reads)

    @app.get("/healthz", response_model=Liveness)
    async def healthz() -> Liveness:
        return Liveness()

    @app.get("/readyz", response_model=Readiness, responses=error_responses(503))
    async def readyz(h: HubDep) -> Readiness:
        if not h.ready():
            raise NotReady("telemetry is still taking its first readings")
        return Readiness()

    @app.put(
        "/scenario",
        response_model=ScenarioSwitched,
        dependencies=[require(Scope.admin)],
        responses=error_responses(401, 403, 413, 422),
    )
    async def put_scenario(req: ScenarioRequest, h: HubDep) -> ScenarioSwitched:
        if req.name is not None or req.scenario is not None:
            sc, label = _requested_scenario(req, settings.scenario_file)
            h.scenario.switch(sc, label, req.seed)
        if req.prefer is not None:
            h.prefer = req.prefer
        await h.refresh(h.scenario.name)  # the next /state already shows the new scenario
        h.export_metrics()
        log_event(log, "scenario switched", scenario=h.scenario.label, prefer=h.prefer)
        snap = h.snapshot()
        return ScenarioSwitched(scenario=snap.scenario, prefer=h.prefer, conditions=snap.conditions)

    return app
