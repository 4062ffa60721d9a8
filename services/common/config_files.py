"""Reading the YAML-backed configuration: device profiles and scenarios, built-in or the user's.

The models and their validation live in the pure core (``services.core.profiles`` and
``services.core.scenarios``); this module finds the files, reads them and caches the parsed
result per (path, mtime), so an edited file is reloaded.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from services.core.costmodel import Mesh
from services.core.errors import ConfigFileError
from services.core.profiles import DeviceProfile, ProfileError, parse_profile
from services.core.scenarios import Scenario, ScenarioError, parse_scenario

PROFILES_DIR = Path(__file__).with_name("profiles")
SCENARIOS_DIR = Path(__file__).with_name("scenarios")


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


# ----------------------------------------------------------------------------- device profiles


@lru_cache(maxsize=64)
def _load_profile_path(path: Path, mtime_ns: int) -> DeviceProfile:  # mtime in the key: edits reload
    return parse_profile(read_yaml(path, ProfileError), str(path))


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path, extra_dir: Path | None = None) -> DeviceProfile:
    """A profile by built-in name (``mi8pro``), by name in ``extra_dir`` (which overrides the
    built-ins), or by file path."""
    text = str(name_or_path)
    path = find_file(name_or_path, PROFILES_DIR, extra_dir, [text])
    if path is not None:
        return _load_profile_path(path.resolve(), path.stat().st_mtime_ns)
    raise ProfileError(text, "", f"no such profile file; built-in profiles are {builtin_profiles()}")


def load_mesh(edge: str | Path, peer: str | Path, cloud: str | Path, extra_dir: Path | None = None) -> Mesh:
    """The three device profiles a decider models (the phone, the peer, the cloud) as one ``Mesh``."""
    return Mesh(
        edge=load_profile(edge, extra_dir), peer=load_profile(peer, extra_dir), cloud=load_profile(cloud, extra_dir)
    )


# ----------------------------------------------------------------------------- scenarios


@lru_cache(maxsize=64)
def _load_scenario_path(path: Path, mtime_ns: int) -> Scenario:
    return parse_scenario(read_yaml(path, ScenarioError), str(path))


def builtin_scenarios() -> list[str]:
    """Names of the Table IV scenarios shipped with the package (s1..s5, d1..d4)."""
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str | Path, extra_dir: Path | None = None) -> Scenario:
    """A scenario by built-in name (``S1``/``s1``, case-insensitive), by name in ``extra_dir``,
    or by file path."""
    text = str(name_or_path)
    path = find_file(name_or_path, SCENARIOS_DIR, extra_dir, [text.lower(), text])
    if path is not None:
        return _load_scenario_path(path.resolve(), path.stat().st_mtime_ns)
    raise ScenarioError(text, "", f"no such scenario file; built-in scenarios are {builtin_scenarios()}")
