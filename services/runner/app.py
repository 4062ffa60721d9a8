"""The runner core shared by the edge, peer and cloud runners.

A runner really executes the network (ONNX Runtime or TVM) for its outputs. The latency and
energy it reports are those of the device it stands for: measured when this host *is* that device
(``AUTOSCALE_MEASURE_ON_HOST``), otherwise modelled from the device profile (eqs. 1-3) and labelled
so. Remote runners also emulate their link (Wi-Fi Direct or Wi-Fi) from the signal strength the
decider observed, since the phone's radio time is what eq. 4 charges.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import onnx
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import Field, TypeAdapter, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.config_files import load_profile
from services.common.engines import get_engine
from services.common.engines.base import Engine, LoadedModel
from services.common.errors import ApiError, NotReady, api_error_body, install_error_handlers, validation_error_body
from services.common.logging import configure_logging, log_event
from services.common.metrics import metrics_endpoint
from services.common.model_store import ModelStore, UnknownModel
from services.common.settings import Settings
from services.common.tensors import MissingInput, check_against, decode, synthetic
from services.core import costmodel
from services.core.errors import AutoScaleError
from services.core.profiles import DeviceProfile
from services.core.schemas import (
    AccuracyEntry,
    EnergySource,
    Liveness,
    Location,
    ModelInfo,
    OutputSummary,
    Precision,
    Readiness,
    RunRequest,
    RunResult,
    Target,
    TargetInfo,
)
from services.runner.metrics import RunnerMetrics

log = logging.getLogger("autoscale.runner")


@dataclass(frozen=True)
class RunnerSpec:
    """What makes one runner differ from another."""

    role: Location
    device: str  # device profile name


@dataclass
class RunnerState:
    spec: RunnerSpec
    settings: Settings
    profile: DeviceProfile
    edge_profile: DeviceProfile  # the phone: its radio defines the link a remote runner emulates
    store: ModelStore
    metrics: RunnerMetrics
    targets: dict[str, Target] = field(default_factory=dict)
    sessions: dict[tuple[str, Precision, str], LoadedModel] = field(default_factory=dict)
    load_locks: dict[tuple[str, Precision, str], asyncio.Lock] = field(default_factory=dict)
    engine_support: dict[tuple[str, Precision, str], bool] = field(default_factory=dict)
    _infos: dict[str, ModelInfo] | None = None
    _runnable: dict[str, list[str]] = field(default_factory=dict)
    _synthetic: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # One inference at a time: each engine session already uses every configured thread.
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))
    run_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_exec_s: dict[tuple[str, Precision, str], float] = field(default_factory=dict)
    ready: bool = False

    async def execute(
        self, key: tuple[str, Precision, str], session: LoadedModel, feeds: dict[str, np.ndarray], top_k: int
    ) -> tuple[list[OutputSummary], float]:
        """Run one inference, one at a time; returns the output summaries and the host execution time.

        A session whose last run took less than ``inline_run_max_ms`` runs on the event loop
        thread: handing a 10 ms inference to a worker thread and back costs ~0.3 ms of thread
        wake-ups on a small VM, a 3 % tax. Longer runs (and a session's first) go to the worker
        thread so that the loop keeps answering health checks meanwhile.
        """
        limit = self.settings.inline_run_max_ms / 1e3
        async with self.run_lock:
            t0 = time.perf_counter()
            last = self.last_exec_s.get(key)
            if last is not None and last < limit:
                outputs = session.summarize(feeds, top_k)
            else:
                outputs = await asyncio.get_running_loop().run_in_executor(
                    self.executor, session.summarize, feeds, top_k
                )
            host_exec_s = time.perf_counter() - t0
        self.last_exec_s[key] = host_exec_s
        return outputs, host_exec_s

    def engine_for(self, target_id: str) -> str:
        best = ""
        engine = "onnxruntime"
        for prefix, name in self.settings.engine_overrides.items():
            if target_id.startswith(prefix) and len(prefix) > len(best):
                best, engine = prefix, name
        return engine

    def infos(self) -> dict[str, ModelInfo]:
        """Model infos, read from the store once and again only after an upload."""
        if self._infos is None:
            self._infos = {n: self.store.info(n) for n in self.store.names()}
            self._runnable.clear()
        return self._infos

    def models_changed(self) -> None:
        self._infos = None
        self._runnable.clear()
        self._synthetic.clear()

    def runnable_models(self, target: Target) -> list[str]:
        """Models this target can execute: the device must support the model's layers and precision,
        and the target's engine its ops (ONNX Runtime runs every valid model; TVM does not).
        Memoised: /targets is polled and /run checks it on every request."""
        infos = self.infos()
        cached = self._runnable.get(target.id)
        if cached is None:
            cached = [
                name
                for name, info in infos.items()
                if target.precision in info.precisions
                and costmodel.supports(self.profile, target, info.features)
                and self.engine_runs(name, target)
            ]
            self._runnable[target.id] = cached
        return cached

    def synthetic_feeds(self, info: ModelInfo) -> dict[str, np.ndarray]:
        """Deterministic inputs, generated once per model (they are read-only for the engines)."""
        feeds = self._synthetic.get(info.name)
        if feeds is None:
            feeds = self._synthetic[info.name] = {spec.name: synthetic(spec) for spec in info.inputs}
        return feeds

    def engine_runs(self, name: str, target: Target) -> bool:
        if target.engine == "onnxruntime":
            return True
        key = (name, target.precision, target.engine)
        if key not in self.engine_support:
            path = self.store.path(name, target.precision)
            ok = get_engine(target.engine).supports(onnx.load(str(path), load_external_data=False), target.precision)
            if not ok.ok:
                log_event(log, "target not offered for model", model=name, target=target.id, reason=ok.reason)
            self.engine_support[key] = ok.ok
        return self.engine_support[key]


async def get_state(request: Request) -> RunnerState:  # async: a sync dependency costs a threadpool hop
    return request.app.state.runner


StateDep = Annotated[RunnerState, Depends(get_state)]


async def _session(state: RunnerState, model: str, target: Target) -> LoadedModel:
    """Load (once) the engine session of a model at a precision; build the file if needed."""
    key = (model, target.precision, target.engine)
    if key in state.sessions:
        return state.sessions[key]
    lock = state.load_locks.setdefault(key, asyncio.Lock())
    async with lock:
        if key not in state.sessions:
            engine: Engine = get_engine(target.engine)
            path = await asyncio.to_thread(state.store.path, model, target.precision)
            device = "cuda" if target.processor == "gpu" and "cuda" in engine.devices() else "cpu"
            state.sessions[key] = await asyncio.to_thread(
                engine.load, path, device=device, threads=state.settings.ort_threads
            )
            log_event(log, "session loaded", model=model, precision=str(target.precision), engine=target.engine)
    return state.sessions[key]


def _feeds(state: RunnerState, req: RunRequest, info: ModelInfo) -> dict[str, np.ndarray]:
    if req.synthetic or not req.inputs:
        if not req.synthetic:
            raise MissingInput("inputs is required unless synthetic is true", field="inputs")
        return state.synthetic_feeds(info)
    feeds: dict[str, np.ndarray] = {}
    for spec in info.inputs:
        payload = req.inputs.get(spec.name)
        if payload is None:
            raise MissingInput(f"inputs.{spec.name} is required by {info.name}", field=f"inputs.{spec.name}")
        check_against(payload, spec, f"inputs.{spec.name}")
        feeds[spec.name] = decode(payload, f"inputs.{spec.name}")
    return feeds


router = APIRouter()


class RunnerReadiness(Readiness):
    role: Location
    device: str = Field(description="device profile this runner stands for")


@router.get("/healthz", response_model=Liveness)
async def healthz() -> Liveness:
    return Liveness()


@router.get("/readyz", response_model=RunnerReadiness)
async def readyz(state: StateDep) -> RunnerReadiness:
    if not state.ready:
        raise NotReady("runner is still loading its models")
    return RunnerReadiness(role=state.spec.role, device=state.profile.name)


@router.get("/targets", response_model=list[TargetInfo])
async def targets(state: StateDep) -> list[TargetInfo]:
    return [
        TargetInfo(
            target=t,
            id=t.id,
            device=state.profile.name,
            frequency_ghz=costmodel.frequency_ghz(state.profile, t),
            engine_version=get_engine(t.engine).version,
            models=state.runnable_models(t),
        )
        for t in state.targets.values()
    ]


@router.get("/models", response_model=list[ModelInfo])
async def models(state: StateDep) -> list[ModelInfo]:
    return list(state.infos().values())


@router.put("/models/{name}", response_model=ModelInfo)
async def put_model(name: str, request: Request, state: StateDep) -> ModelInfo:
    """Receive a user model pushed by the decider: the ONNX bytes, then its accuracy entries."""
    data = await request.body()
    try:
        accuracy = TypeAdapter(dict[Precision, AccuracyEntry]).validate_json(request.headers.get("x-accuracy", "{}"))
        info = await asyncio.to_thread(
            state.store.add, name, data, max_bytes=state.settings.max_upload_bytes, overwrite=True
        )
        for precision, entry in accuracy.items():
            info = state.store.set_accuracy(name, precision, entry)
        state.models_changed()
        return info
    except ValidationError as exc:
        raise ApiError(
            422, "invalid_accuracy", f"x-accuracy header: {exc.errors()[0]['msg']}", field="x-accuracy"
        ) from exc


@router.post("/run", response_model=RunResult)
async def run(req: RunRequest, state: StateDep) -> RunResult:
    """Execute one inference (documents ``/run``; ``RunFastPath`` answers it)."""
    result = await _run(req, state)
    _record(state, result)
    return result


def _record(state: RunnerState, r: RunResult) -> None:
    state.metrics.record(r.target.id, r.host_exec_s, r.device_energy_j, r.energy_source)


class RunFastPath:
    """Pure ASGI middleware that answers ``POST /run`` itself; everything else goes on to the app.

    ``/run`` is every inference's path, and the framework around it (routing, dependency
    solving, body re-parsing, response-model validation, five middleware layers, Request and
    Response objects) costs about 1 ms per call on a 2-core VM, ~10 % of a MobileNet inference.
    Same body model and same error bodies as the APIRoute above, which stays registered for the
    OpenAPI schema; an unexpected exception still reaches the app's 500 handler.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/run" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state: RunnerState = scope["app"].state.runner
        result: RunResult | None = None
        try:
            req = RunRequest.model_validate_json(await _read_body(receive))
            result = await _run(req, state)
            status, payload = 200, result.model_dump_json().encode()
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
            status, payload = 422, json.dumps(validation_error_body(errors)).encode()
        except AutoScaleError as exc:
            status, payload = exc.status, json.dumps(api_error_body(exc)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        if result is not None:
            # After the response: right after an inference the CPU caches are cold and every
            # Python step costs several times more, so only what the client needs runs before.
            _record(state, result)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client_disconnected", "the client went away before sending the body", field="body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _run(req: RunRequest, state: RunnerState) -> RunResult:
    target = state.targets.get(req.target.id)
    if target is None:
        raise ApiError(
            404,
            "unknown_target",
            f"target {req.target.id} is not offered by the {state.spec.role} runner; see GET /targets",
            field="target",
        )
    info = state.infos().get(req.model)
    if info is None:
        raise UnknownModel(f"model {req.model!r} is not on this runner; known: {', '.join(state.infos())}")
    if req.model not in state.runnable_models(target):
        raise ApiError(422, "unsupported", f"target {target.id} cannot run {req.model}", field="target")
    feeds = _feeds(state, req, info)
    session = await _session(state, req.model, target)
    cond = req.conditions
    in_bytes = int(sum(a.nbytes for a in feeds.values()))

    tx_s = rx_s = 0.0
    if state.spec.role != Location.edge:
        out_guess = info.features.output_bytes
        tx_s, rx_s = costmodel.link_times(state.edge_profile, state.spec.role, in_bytes, out_guess, cond)
        if state.settings.emulate_link_delay:
            await asyncio.sleep(tx_s)

    # The modelled figures do not depend on the run: work out before it, while the caches are
    # warm (right after an inference every Python step costs several times more).
    measured = state.settings.measure_on_host
    if not measured:
        inference_s = costmodel.inference_time(state.profile, info.features, target, cond)
        energy_j = costmodel.device_energy(state.profile, target, inference_s, cond)

    with state.metrics.track(target.id):
        outputs, host_exec_s = await state.execute(
            (req.model, target.precision, target.engine), session, feeds, req.top_k
        )

    out_bytes = sum(math.prod(o.shape) * np.dtype(o.dtype).itemsize for o in outputs)
    if state.spec.role != Location.edge:
        tx_s, rx_s = costmodel.link_times(state.edge_profile, state.spec.role, in_bytes, out_bytes, cond)
        if state.settings.emulate_link_delay:
            await asyncio.sleep(rx_s)

    if measured:
        inference_s = host_exec_s
        energy_j = costmodel.device_energy(state.profile, target, inference_s, cond)
    latency_source: EnergySource = "measured" if measured else "modelled"
    # Built from values this function made: no need to validate them again.
    return RunResult.model_construct(
        model=req.model,
        target=target,
        device=state.profile.name,
        outputs=outputs,
        inference_s=inference_s,
        tx_s=tx_s,
        rx_s=rx_s,
        host_exec_s=host_exec_s,
        device_energy_j=energy_j,
        energy_source="modelled",  # no power sensor on the execution path yet: eqs. 1-3 from the profile
        latency_source=latency_source,
        input_bytes=in_bytes,
        output_bytes=out_bytes,
    )


def create_runner_app(spec: RunnerSpec, settings: Settings) -> FastAPI:
    configure_logging(settings.log_level, f"{spec.role}_runner")
    # Fail at start, with the reason, on a bad profile or engine configuration.
    profile = load_profile(spec.device, settings.profiles_dir)
    edge_profile = load_profile(settings.edge_device, settings.profiles_dir)
    for engine_name in settings.engine_overrides.values():
        get_engine(engine_name)  # raises on an unknown engine name
    store = ModelStore(settings.model_cache, settings.zoo or None)
    state = RunnerState(
        spec=spec,
        settings=settings,
        profile=profile,
        edge_profile=edge_profile,
        store=store,
        metrics=RunnerMetrics(spec.role.value),
    )
    state.targets = {
        t.id: t.model_copy(update={"engine": state.engine_for(t.id)}) for t in costmodel.targets_for(profile, spec.role)
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for name in settings.preload_models:
            if name not in state.infos():
                log_event(log, "preload skipped: unknown model", level=logging.WARNING, model=name)
                continue
            for target in state.targets.values():
                if name in state.runnable_models(target):
                    await _session(state, name, target)
        state.ready = True
        log_event(log, "runner ready", role=spec.role.value, device=profile.name, targets=len(state.targets))
        yield
        state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=f"AutoScale {spec.role.value} runner", lifespan=lifespan)
    app.state.runner = state
    install_error_handlers(app)
    app.add_middleware(RunFastPath)
    app.include_router(router)
    metrics_endpoint(app)
    return app
