"""The edge runner: the phone itself (Termux on a real phone).

Local CPU/GPU/DSP targets at every precision and DVFS step; no link.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.common.settings import Settings, get_settings
from services.core.schemas import Location
from services.runner.app import RunnerSpec, create_runner_app


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or get_settings()
    return create_runner_app(RunnerSpec(role=Location.edge, device=s.edge_device), s)
