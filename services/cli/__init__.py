"""The ``autoscale`` command line: ``up`` (the launcher), one service in the foreground, models, tune, evaluate."""

from services.cli.main import app

__all__ = ["app"]
