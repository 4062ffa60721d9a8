"""The peer runner: the Wi-Fi Direct connected tablet (connected edge).

Its CPU/GPU/DSP, reached over an emulated Wi-Fi Direct link.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.common.settings import Settings, get_settings
from services.core.schemas import Location
from services.runner.app import RunnerSpec, create_runner_app


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or get_settings()
    return create_runner_app(RunnerSpec(role=Location.peer, device=s.peer_device), s)
