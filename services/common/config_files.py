"""What the YAML-backed models (device profiles, scenarios) share: strict parsing and one error shape."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict


class ConfigFileError(ValueError):
    """A file that cannot be used; the message names the file, the field and the reason."""

    def __init__(self, file: str, field: str, reason: str):
        self.file, self.field, self.reason = file, field, reason
        super().__init__(f"{file}: {field or '<root>'}: {reason}")


class StrictModel(BaseModel):
    # Unknown keys are typos until proven otherwise: refuse them rather than ignore a setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


def read_yaml(path: Path, error: type[ConfigFileError] = ConfigFileError) -> object:
    """Parse a YAML file; unreadable or invalid files raise ``error`` naming the file."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise error(str(path), "", f"not valid YAML: {exc}") from None


def find_file(name_or_path: str | Path, builtin_dir: Path, extra_dir: Path | None, stems: list[str]) -> Path | None:
    """A file given by path, or by name (``stems``: the name's spellings) in ``extra_dir`` (which
    overrides the built-ins) then ``builtin_dir``; None when there is none."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text:
        candidates = [Path(name_or_path)]
    else:
        dirs = ([Path(extra_dir)] if extra_dir is not None else []) + [builtin_dir]
        candidates = [d / f"{stem}{ext}" for d in dirs for stem in stems for ext in (".yaml", ".yml")]
    return next((p for p in candidates if p.is_file()), None)
