"""What the YAML-backed models (device profiles, scenarios) share: strict parsing and one error shape."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigFileError(ValueError):
    """A file that cannot be used; the message names the file, the field and the reason."""

    def __init__(self, file: str, field: str, reason: str):
        self.file, self.field, self.reason = file, field, reason
        super().__init__(f"{file}: {field or '<root>'}: {reason}")


class StrictModel(BaseModel):
    # Unknown keys are typos until proven otherwise: refuse them rather than ignore a setting.
    model_config = ConfigDict(extra="forbid", frozen=True)
