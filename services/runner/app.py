"""The runner core shared by the edge, peer and cloud runners.

A runner really executes the network (ONNX Runtime or TVM) for its outputs. The latency and
energy it reports are those of the device it stands for: measured when this host *is* that device
(``AUTOSCALE_MEASURE_ON_HOST``), otherwise modelled from the device profile (eqs. 1-3) and labelled
so. Remote runners also emulate their link (Wi-Fi Direct or Wi-Fi) from the signal strength the
decider observed, since the phone's radio time is what eq. 4 charges.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated

import numpy as np
import onnx
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi import Path as PathParam
from pydantic import Field, TypeAdapter, ValidationError

from services.common.asgi import FastPath, FastRequest, FastRoute, Reply, error_reply, model_reply
from services.common.auth import Authenticator, require
from services.common.auth import Scope as AuthScope
from services.common.config_files import load_profile
from services.common.energy_counter import EnergyCounter
from services.common.engines import get_engine
from services.common.engines.base import Engine, LoadedModel
from services.common.errors import ApiError, NotReady, error_responses, install_error_handlers
from services.common.heap import freeze_startup_heap
from services.common.limits import BodyLimit, InFlightLimit, RouteLimit, infer_body_limit
from services.common.logging import configure_logging, log_event
from services.common.metrics import metrics_endpoint
from services.common.model_store import NAME_RE, ModelStore, UnknownModel, require_servable
from services.common.openapi import raw_body
from services.common.settings import Settings
from services.common.tensors import (
    MissingInput,
    UnknownOutput,
    check_against,
    decode,
    encode_output,
    input_bytes,
    synthetic,
)
from services.common.tracing import install_tracing, span
from services.core import costmodel
from services.core.errors import AutoScaleError
from services.core.profiles import DeviceProfile
from services.core.schemas import (
    AccuracyEntry,
    EnergySource,
    Liveness,
    Location,
    ModelInfo,
    Output,
    OutputSummary,
    Partition,
    Precision,
    Processor,
    Readiness,
    RunRequest,
    RunResult,
    Target,
    TargetInfo,
)
from services.runner.metrics import RunnerMetrics
from services.runner.partition import PartSessions, as_run, effective, part_info, part_key
from services.runner.registration import Registration, start_registration

log = logging.getLogger("autoscale.runner")
# A network smaller than this runs on one intra-op thread: waking a second one costs more than it
# saves (tiny-cnn, 27 k MACs: 6.4 µs a run on one thread, 12.0 µs on two; in the runner under load
# the wake-ups were most of its CPU per /run).
PARALLEL_MIN_MACS = 1_000_000


@dataclass(frozen=True)
class RunnerSpec:
    """What makes one runner differ from another."""

    role: Location
    device: str  # device profile name


# A session, its load lock, engine support and last run time are keyed by the model's content
# (its sha256; a built-in's name, which never changes bytes), the precision, the engine and the part
# of the model (``partition.part_key``): a model re-pushed under its name with new bytes gets a new
# session, and nothing of the old one is reused.
SessionKey = tuple[str, Precision, str, str]


def session_key(info: ModelInfo, target: Target, part: Partition | None = None) -> SessionKey:
    content = info.name if info.builtin or not info.sha256 else info.sha256
    return (content, target.precision, target.engine, part_key(part))


@dataclass
class RunnerState:
    spec: RunnerSpec
    settings: Settings
    profile: DeviceProfile
    edge_profile: DeviceProfile  # the phone: its radio defines the link a remote runner emulates
    store: ModelStore
    metrics: RunnerMetrics
    in_flight: InFlightLimit
    targets: dict[str, Target] = field(default_factory=dict)
    sessions: dict[SessionKey, LoadedModel] = field(default_factory=dict)
    load_locks: dict[SessionKey, asyncio.Lock] = field(default_factory=dict)
    engine_support: dict[SessionKey, bool] = field(default_factory=dict)
    _infos: dict[str, ModelInfo] | None = None
    _body_limit: int = 0
    _runnable: dict[str, list[str]] = field(default_factory=dict)
    _synthetic: dict[tuple[str, ...], dict[str, np.ndarray]] = field(default_factory=dict)
    session_devices: dict[SessionKey, str] = field(default_factory=dict)  # "cpu" or "cuda", per session
    energy_counter: EnergyCounter | None = None
    # One inference at a time: each engine session already uses every configured thread.
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))
    run_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_exec_s: dict[SessionKey, float] = field(default_factory=dict)
    part_sessions: PartSessions = field(default_factory=PartSessions)
    ready: bool = False
    registration: Registration | None = None  # None: static mode (no registry, or no Redis)

    async def execute(
        self, key: SessionKey, session: LoadedModel, feeds: dict[str, np.ndarray], req: RunRequest
    ) -> tuple[list[np.ndarray] | list[OutputSummary], float]:
        """Run one inference, one at a time: the output tensors (in ``session.output_names``
        order), or their summaries when ``req`` asks for those, and the host execution time.

        A session whose last run took less than ``inline_run_max_ms`` runs on the event loop
        thread: handing a 10 ms inference to a worker thread and back costs ~0.3 ms of thread
        wake-ups on a small VM, a 3 % tax. Longer runs (and a session's first) go to the worker
        thread so that the loop keeps answering health checks meanwhile.
        """
        limit = self.settings.inline_run_max_ms / 1e3

        def work() -> list[np.ndarray] | list[OutputSummary]:
            if req.output_format == "summary":
                return session.summarize(feeds, req.top_k)
            return session.run(feeds)

        async with self.run_lock:
            t0 = time.perf_counter()
            last = self.last_exec_s.get(key)
            if last is not None and last < limit:
                outputs = work()
            else:
                outputs = await asyncio.get_running_loop().run_in_executor(self.executor, work)
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
        """Model infos, read from the store once and again only after an upload (sessions of
        content no model has any more are dropped then)."""
        if self._infos is None:
            infos = self._infos = {n: self.store.info(n) for n in self.store.names()}
            self._runnable.clear()
            current = {session_key(i, t)[0] for i in infos.values() for t in self.targets.values()}
            for keyed in (self.sessions, self.load_locks, self.engine_support, self.last_exec_s, self.session_devices):
                for key in [k for k in keyed if k[0] not in current]:
                    del keyed[key]
            self._body_limit = infer_body_limit(
                max((max([input_bytes(i), *(c.bytes for c in i.cut_points)]) for i in infos.values()), default=0),
                self.settings.max_infer_body_bytes,
                self.settings.max_request_bytes,
            )
        return self._infos

    def run_body_limit(self) -> int:
        """``POST /run``'s body limit (``limits.infer_body_limit`` of the models this runner holds)."""
        self.infos()
        return self._body_limit

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

    def target_infos(self) -> list[TargetInfo]:
        """What ``GET /targets`` answers (and the registry record carries)."""
        return [
            TargetInfo(
                target=t,
                id=t.id,
                device=self.profile.name,
                frequency_ghz=costmodel.frequency_ghz(self.profile, t),
                engine_version=get_engine(t.engine).version,
                models=self.runnable_models(t),
            )
            for t in self.targets.values()
        ]

    def synthetic_feeds(self, info: ModelInfo) -> dict[str, np.ndarray]:
        """Deterministic inputs, generated once per model (they are read-only for the engines)."""
        key = (info.name, *(spec.name for spec in info.inputs))  # a part's inputs are its boundary tensors
        feeds = self._synthetic.get(key)
        if feeds is None:
            feeds = self._synthetic[key] = {spec.name: synthetic(spec) for spec in info.inputs}
        return feeds

    def engine_runs(self, name: str, target: Target) -> bool:
        if target.engine == "onnxruntime":
            return True
        key = session_key(self.infos()[name], target)
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


async def _session(state: RunnerState, info: ModelInfo, target: Target, part: Partition | None = None) -> LoadedModel:
    """Load (once) the engine session of a model (or of one part of it) at a precision; build the file if needed."""
    key = session_key(info, target, part)
    model = info.name
    if part is not None:
        for old in state.part_sessions.used(key):  # bounded: a model's parts are many copies of its weights
            for keyed in (state.sessions, state.load_locks, state.last_exec_s):
                keyed.pop(old, None)  # type: ignore[call-overload]  # keys are SessionKeys
    if key in state.sessions:
        return state.sessions[key]
    lock = state.load_locks.setdefault(key, asyncio.Lock())
    async with lock:
        if key not in state.sessions:
            engine: Engine = get_engine(target.engine)
            if part is None:
                path = await asyncio.to_thread(state.store.path, model, target.precision)
            else:
                path = await asyncio.to_thread(state.store.part, model, target.precision, part)
            device = "cuda" if target.processor == "gpu" and "cuda" in engine.devices() else "cpu"
            threads = state.settings.ort_threads if info.features.macs >= PARALLEL_MIN_MACS else 1
            state.sessions[key] = await asyncio.to_thread(engine.load, path, device=device, threads=threads)
            state.session_devices[key] = device
            log_event(
                log, "session loaded", model=model, precision=str(target.precision), engine=target.engine, part=key[3]
            )
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
    registered: bool = Field(
        description="listed in the runner registry (false: static mode, the deciders list it by its URL setting)"
    )


@router.get("/healthz", response_model=Liveness)
async def healthz() -> Liveness:
    return Liveness()


@router.get("/readyz", response_model=RunnerReadiness, responses=error_responses(503))
async def readyz(state: StateDep) -> RunnerReadiness:
    if not state.ready:
        raise NotReady("runner is still loading its models")
    reg = state.registration
    if reg is not None and not reg.registered:  # the deciders cannot find it yet
        raise NotReady(f"runner not registered: {reg.status}")
    return RunnerReadiness(role=state.spec.role, device=state.profile.name, registered=reg is not None)


reads = APIRouter(dependencies=[require(AuthScope.client)], responses=error_responses(401, 403))
mesh_only = APIRouter(dependencies=[require(AuthScope.mesh)], responses=error_responses(401, 403, 413, 422))


@reads.get("/targets", response_model=list[TargetInfo])
async def targets(state: StateDep) -> list[TargetInfo]:
    return state.target_infos()


@reads.get("/models", response_model=list[ModelInfo])
async def models(state: StateDep) -> list[ModelInfo]:
    return list(state.infos().values())


@mesh_only.put(
    "/models/{name}",
    response_model=ModelInfo,
    responses=error_responses(409),
    openapi_extra=raw_body("the ONNX file the decider validated"),
)
async def put_model(
    name: Annotated[str, PathParam(pattern=NAME_RE.pattern)],
    request: Request,
    state: StateDep,
    x_model_sha256: str = Header(
        pattern="^[0-9a-f]{64}$", description="sha256 of the body: the hash the decider validated (422 if it differs)"
    ),
    x_accuracy: str = Header("{}", description="the model's accuracy entries by precision (JSON)"),
) -> ModelInfo:
    """Receive a user model pushed by the decider: the ONNX bytes, then its accuracy entries.

    Mesh scope only. The body must hash to ``X-Model-SHA256`` and run on ONNX Runtime; it is stored
    by content, so a name re-pushed with new bytes gets a new file and a new session."""
    try:
        accuracy = TypeAdapter(dict[Precision, AccuracyEntry]).validate_json(x_accuracy)
    except ValidationError as exc:
        raise ApiError(
            422, "invalid_accuracy", f"x-accuracy header: {exc.errors()[0]['msg']}", field="x-accuracy"
        ) from exc
    data = await request.body()
    info = await asyncio.to_thread(
        state.store.add,
        name,
        data,
        max_bytes=state.settings.max_upload_bytes,
        overwrite=True,
        expected_sha256=x_model_sha256,
        accept=require_servable,
    )
    for precision, entry in accuracy.items():
        info = state.store.set_accuracy(name, precision, entry)
    state.models_changed()
    log_event(log, "model received", model=name, sha256=info.sha256)
    return info


@mesh_only.post("/run", response_model=RunResult, responses=error_responses(404, 503))
async def run(req: RunRequest, state: StateDep) -> RunResult:
    """Execute one inference (documents ``/run``; the fast path, ``RUN_FAST``, answers it). 503 + ``Retry-After``
    when the runner already holds ``AUTOSCALE_RUNNER_MAX_IN_FLIGHT`` runs."""
    result = await _run(req, state)
    _record(state, result)
    return result


def _record(state: RunnerState, r: RunResult) -> None:
    state.metrics.record(r.target.id, r.host_exec_s, r.device_energy_j, r.energy_source)
    if log.isEnabledFor(logging.DEBUG):  # the line carries the caller's request id and trace (tracing)
        log_event(
            log, "run", logging.DEBUG, model=r.model, target=r.target.id, host_exec_ms=round(r.host_exec_s * 1e3, 3)
        )


async def _run_fast(request: FastRequest) -> Reply:
    """``POST /run`` on the fast path (same body model and error bodies as the route above);
    metrics are recorded once the response is sent."""
    state: RunnerState = request.app.state.runner
    try:
        req = RunRequest.model_validate_json(request.body)
    except ValidationError as exc:  # the client's body only: a ValidationError past this point is ours, a 500
        return error_reply(exc)
    try:
        result = await _run(req, state)
    except AutoScaleError as exc:
        return error_reply(exc)
    return model_reply(result, after=partial(_record, state, result))


RUN_FAST = FastRoute("POST", re.compile("/run"), _run_fast, needs=AuthScope.mesh)


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
    part = effective(req.partition)
    if part is not None:  # a sub-graph, served as a model of its own (services.runner.partition)
        info, req = part_info(info, part), as_run(req, part)
    with state.in_flight.slot():
        return await _execute(req, state, info, target, part)


async def _execute(
    req: RunRequest, state: RunnerState, info: ModelInfo, target: Target, part: Partition | None = None
) -> RunResult:
    feeds = _feeds(state, req, info)
    key = session_key(info, target, part)
    session = await _session(state, info, target, part)
    wanted = _wanted_outputs(req, session.output_names)
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
    measured = state.settings.measure_on_host and _host_executes(target, state.session_devices.get(key, "cpu"))
    if not measured:
        inference_s = costmodel.inference_time(state.profile, info.features, target, cond)
        energy_j = costmodel.device_energy(state.profile, target, inference_s, cond)
    counter = state.energy_counter if measured else None
    uj_before = counter.read_uj() if counter else 0.0

    with state.metrics.track(target.id), span("run", model=req.model, target=target.id):
        produced, host_exec_s = await state.execute(key, session, feeds, req)
    energy_source: EnergySource = "modelled"

    outputs = _select(produced, session.output_names, wanted)
    out_bytes = sum(math.prod(o.shape) * np.dtype(o.dtype).itemsize for o in outputs)
    if state.spec.role != Location.edge:
        tx_s, rx_s = costmodel.link_times(state.edge_profile, state.spec.role, in_bytes, out_bytes, cond)
        if state.settings.emulate_link_delay:
            await asyncio.sleep(rx_s)

    if measured:
        inference_s = host_exec_s
        if counter is not None:
            # The inference's own energy: what the counter rose by, less the idle power it would have drawn anyway.
            idle_w = state.profile.processors[target.processor].idle_w
            energy_j = max(counter.joules_between(uj_before, counter.read_uj()) - idle_w * host_exec_s, 0.0)
            energy_source = "measured"
        else:
            energy_j = costmodel.device_energy(state.profile, target, inference_s, cond)
    latency_source: EnergySource = "measured" if measured else "modelled"
    # Validated, though every value is made here: pydantic-core's validating constructor is the faster one
    # (2.4 µs against model_construct's 5.1 µs, measured), and it keeps the answer's numbers finite.
    return RunResult(
        model=req.model,
        target=target,
        device=state.profile.name,
        outputs=outputs,
        inference_s=inference_s,
        tx_s=tx_s,
        rx_s=rx_s,
        host_exec_s=host_exec_s,
        device_energy_j=energy_j,
        energy_source=energy_source,
        latency_source=latency_source,
        input_bytes=in_bytes,
        output_bytes=out_bytes,
    )


def _wanted_outputs(req: RunRequest, names: list[str]) -> list[int]:
    """Indices (in ``names``) of the outputs to return; 422 naming ``outputs`` for an unknown name."""
    if req.outputs is None:
        return list(range(len(names)))
    for name in req.outputs:
        if name not in names:
            raise UnknownOutput(
                f"{req.model} has no output named {name!r}; its outputs: {', '.join(names)}", field="outputs"
            )
    return [names.index(n) for n in req.outputs]


def _select(produced: list[np.ndarray] | list[OutputSummary], names: list[str], wanted: list[int]) -> list[Output]:
    """The wanted outputs, in the requested order: summaries as they are, tensors encoded (base64)."""
    return [
        o if isinstance(o, OutputSummary) else encode_output(names[i], o) for i, o in ((i, produced[i]) for i in wanted)
    ]


def _host_executes(target: Target, device: str) -> bool:
    """Whether running ``target`` here really runs on its processor, so that the host's time is its latency:
    a CPU target always; a GPU target only on a GPU execution provider; never a DSP (no DSP provider here)."""
    if target.processor == Processor.cpu:
        return True
    return target.processor == Processor.gpu and device != "cpu"


def create_runner_app(spec: RunnerSpec, settings: Settings) -> FastAPI:
    configure_logging(settings.log_level, f"{spec.role}_runner")
    # Fail at start, with the reason, on a bad profile or engine configuration.
    profile = load_profile(spec.device, settings.profiles_dir)
    edge_profile = load_profile(settings.edge_device, settings.profiles_dir)
    for engine_name in settings.engine_overrides.values():
        get_engine(engine_name)  # raises on an unknown engine name
    store = ModelStore(settings.model_cache, settings.zoo or None)
    auth = Authenticator.for_service(settings)  # refuses a non-loopback bind without tokens
    state = RunnerState(
        spec=spec,
        settings=settings,
        profile=profile,
        edge_profile=edge_profile,
        store=store,
        metrics=RunnerMetrics(spec.role.value),
        in_flight=InFlightLimit(settings.runner_max_in_flight, f"the {spec.role.value} runner"),
        energy_counter=EnergyCounter(settings.energy_counter) if settings.energy_counter else None,
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
                    await _session(state, state.infos()[name], target)
        state.ready = True
        freeze_startup_heap()  # last: what start-up built stays out of the collector's full passes
        log_event(log, "runner ready", role=spec.role.value, device=profile.name, targets=len(state.targets))
        state.registration = start_registration(
            settings, spec.role, profile.name, state.target_infos, lambda: list(state.infos())
        )
        yield
        if state.registration is not None:
            await state.registration.stop()
        state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=f"AutoScale {spec.role.value} runner", lifespan=lifespan)
    app.state.runner = state
    app.state.auth = auth
    install_error_handlers(app)
    app.add_middleware(FastPath, routes=[RUN_FAST])
    app.add_middleware(  # outside the fast path: nothing behind it holds more than a route's limit
        BodyLimit,
        default=settings.max_request_bytes,
        routes=[
            RouteLimit.of("POST", "/run", state.run_body_limit, "AUTOSCALE_MAX_INFER_BODY_BYTES"),
            RouteLimit.of("PUT", "/models/[^/]+", settings.max_upload_bytes, "AUTOSCALE_MAX_UPLOAD_BYTES", "file"),
        ],
    )
    install_tracing(app, f"{spec.role.value}_runner", settings)  # outermost: every answer gets its request id
    app.include_router(router)
    app.include_router(reads)
    app.include_router(mesh_only)
    metrics_endpoint(app)
    return app
