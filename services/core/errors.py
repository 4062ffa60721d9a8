"""The one exception root of AutoScale Mesh.

Every error raised on purpose derives from ``AutoScaleError``. It carries what an HTTP answer
needs (``status``, a stable ``code``, a ``message`` and optionally the ``field`` at fault), so one
handler (``services.common.errors``) turns any of them into the JSON error body; code that is not
serving HTTP (the simulator, the CLI) reads the same attributes.
"""

from __future__ import annotations


class AutoScaleError(Exception):
    """Root of the errors the mesh raises on purpose; subclasses set ``status`` and ``code``."""

    status: int = 500
    code: str = "error"

    def __init__(self, message: str, *, field: str | None = None, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def __str__(self) -> str:
        return self.message


class ConfigFileError(AutoScaleError, ValueError):
    """A YAML file (device profile, scenario) that cannot be used; names the file, the field and the reason."""

    status = 422
    code = "invalid_config_file"

    def __init__(self, file: str, field: str, reason: str) -> None:
        self.file, self.reason = file, reason
        super().__init__(f"{file}: {field or '<root>'}: {reason}", field=field)
