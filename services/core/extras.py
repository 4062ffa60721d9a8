"""Optional dependency groups ("extras") and the error for a feature whose extra is not installed.

The serving core (``pip install autoscale-mesh``) runs the decider, the runners and telemetry on ONNX
Runtime. Some features need more, declared as extras in ``pyproject.toml``: the prediction-based
comparator policies and the trained ``digits`` built-in need scikit-learn (``eval``, which also
carries matplotlib for ``autoscale evaluate``), the TVM engine needs ``tvm``. SciPy is in the core:
the default learner needs it. Each such
feature imports its library lazily and calls ``require`` first, so a process without the extra
starts and serves everything else, and asking for the feature is a 503 naming the extra to install.
"""

from __future__ import annotations

import importlib.util
from functools import cache

from services.core.errors import AutoScaleError

# Top-level module -> (the distribution that provides it, the extra that installs it).
EXTRA_OF: dict[str, tuple[str, str]] = {
    "sklearn": ("scikit-learn", "eval"),
    "matplotlib": ("matplotlib", "eval"),
    "tvm": ("apache-tvm", "tvm"),
}


class MissingExtra(AutoScaleError, ImportError):
    """A feature needs a library this installation lacks (an ImportError too, for import-style callers)."""

    status = 503
    code = "missing_extra"

    def __init__(self, what: str, module: str, *, field: str | None = None) -> None:
        dist, extra = EXTRA_OF.get(module, (module, module))
        # The error body carries the extra's name too ("install": "eval"), for clients that act on it.
        super().__init__(
            f"{what} needs {dist}, which is not installed here: install the '{extra}' extra "
            f"(pip install 'autoscale-mesh[{extra}]', or an image built with it)",
            field=field,
            install=extra,
        )


@cache
def installed(module: str) -> bool:
    """Whether ``module`` is installed here; looked up without importing it (a request must not wait
    for scikit-learn's import on the event loop), then remembered."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec
        return False


def require(what: str, *modules: str, field: str | None = None) -> None:
    """Raise ``MissingExtra`` naming the extra of the first of ``modules`` that does not import."""
    for module in modules:
        if not installed(module):
            raise MissingExtra(what, module, field=field)
