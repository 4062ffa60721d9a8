"""The package's version, as installed (the V2 server metadata and the runner registry report it)."""

from __future__ import annotations

import importlib.metadata
from functools import lru_cache


@lru_cache(maxsize=1)
def package_version() -> str:
    try:
        return importlib.metadata.version("autoscale-mesh")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"
