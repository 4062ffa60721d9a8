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
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.config_files import builtin_scenarios, load_scenario
from services.common.errors import ApiError, error_body, install_error_handlers
from services.common.logging import configure_logging, log_event
from services.common.metrics import metrics_endpoint
from services.common.settings import Settings
from services.core.scenarios import ScenarioError, parse_scenario
from services.core.schemas import TelemetrySnapshot
from services.telemetry.config import Prefer, TelemetryOptions
from services.telemetry.hub import Hub
from services.telemetry.sources import DetectContext, Source, detect_all
from services.telemetry.sources.corunner import MESH_ID_ENV
from services.telemetry.sources.scenario import ScenarioSource, scenario_label

log = logging.getLogger("autoscale.telemetry")


class ScenarioRequest(BaseModel):
    """``PUT /scenario``: a built-in or file scenario by ``name``, or an inline ``scenario``
    (same schema as a scenario file: name, kind, conditions with constants/gaussians/traces)."""

    model_config = ConfigDict(extra="forbid")

    # A name, never a path: an HTTP client must not make the service open arbitrary files.
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_]{1,64}$",
        description="S1..S5, D1..D4 (case-insensitive), or a scenario next to AUTOSCALE_SCENARIO_FILE",
    )
    scenario: dict[str, Any] | None = Field(None, description="an inline scenario definition")
    prefer: Prefer | None = Field(None, description="measured | emulated (see AUTOSCALE_TELEMETRY_PREFER)")
    seed: int | None = Field(None, description="seed of the Gaussian draws (default: the service seed)")

    @model_validator(mode="after")
    def _one_of(self) -> ScenarioRequest:
        if self.name is not None and self.scenario is not None:
            raise ValueError("give either name or scenario, not both")
        if self.name is None and self.scenario is None and self.prefer is None:
            raise ValueError("give name, scenario or prefer")
        return self


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
    return request.app.state.hub  # type: ignore[no-any-return]


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
    hub = build_hub(settings, options, extra_sources)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await hub.start()
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
    install_error_handlers(app)
    metrics_endpoint(app)

    async def _admin(request: Request) -> None:
        token = settings.admin_token
        if token and request.headers.get("authorization", "") != f"Bearer {token}":
            raise ApiError(401, "unauthorized", "admin endpoint: send Authorization: Bearer <AUTOSCALE_ADMIN_TOKEN>")

    @app.get("/state", response_model=TelemetrySnapshot)
    async def state(h: HubDep) -> TelemetrySnapshot:
        return h.snapshot()

    @app.get("/sources")
    async def sources(h: HubDep) -> dict[str, Any]:
        return h.sources_view()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=None)
    async def readyz(h: HubDep) -> dict[str, str] | JSONResponse:
        if h.ready():
            return {"status": "ready"}
        return JSONResponse(error_body("not_ready", "telemetry is still taking its first readings"), status_code=503)

    @app.put("/scenario", dependencies=[Depends(_admin)])
    async def put_scenario(req: ScenarioRequest, h: HubDep) -> dict[str, Any]:
        if req.name is not None or req.scenario is not None:
            try:
                if req.name is not None:
                    sc = load_scenario(req.name, settings.scenario_file.parent if settings.scenario_file else None)
                    label = scenario_label(sc, req.name)
                else:
                    sc = parse_scenario(req.scenario, "scenario")
                    label = scenario_label(sc, "inline")
            except ScenarioError as exc:
                if req.name is not None:
                    raise ApiError(
                        422,
                        "unknown_scenario",
                        f"unknown scenario {req.name!r}; built-ins: {', '.join(n.upper() for n in builtin_scenarios())}"
                        + (f" (or a name in {settings.scenario_file.parent})" if settings.scenario_file else ""),
                        field="name",
                    ) from None
                field = f"scenario.{exc.field}" if exc.field else "scenario"
                raise ApiError(422, "invalid_scenario", f"{field}: {exc.reason}", field=field) from None
            h.scenario.switch(sc, label, req.seed)
        if req.prefer is not None:
            h.prefer = req.prefer
        await h.refresh(h.scenario.name)  # the next /state already shows the new scenario
        h.export_metrics()
        log_event(log, "scenario switched", scenario=h.scenario.label, prefer=h.prefer)
        snap = h.snapshot()
        return {"scenario": snap.scenario, "prefer": h.prefer, "conditions": snap.conditions.model_dump()}

    return app
