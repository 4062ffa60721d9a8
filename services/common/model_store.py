"""On-disk registry of servable models: the zoo built-ins plus user uploads.

Layout under ``cache_dir``::

    zoo/<name>-<sha12>.onnx (+ .json)     built-ins, generated on first use (services.common.zoo)
    variants/<stem>-<precision>-<key>.onnx INT8 / FP16 variants (services.common.precision)
    user/<name>.onnx + user/<name>.json    uploads: the model and its ModelInfo

The decider and the runners may share one directory from separate processes, so nothing is
cached in memory that another process could change: user entries are read from disk on
each call, and every file is written to a temp file and renamed into place (``os.replace``)
- a reader sees the old file or the new one, never half of one.  Information about a
built-in never needs its weights (``zoo_features`` + ``input_specs``), so a decider starts
in well under a second even on an empty cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import threading
from collections.abc import Iterable
from pathlib import Path

from services.common import zoo as zoo_mod
from services.common.accuracy import LabelledSet, measure_accuracy, published_accuracies
from services.common.features import (
    DEFAULT_MAX_BYTES,
    ModelValidationError,
    extract_features,
    io_specs,
    load_and_validate,
)
from services.common.files import atomic_write
from services.common.precision import make_variant
from services.core.errors import AutoScaleError
from services.core.schemas import AccuracyEntry, ModelInfo, Precision

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
USER_TASK = "custom"


class UnknownModel(AutoScaleError, KeyError):
    """No model of that name is registered (a KeyError too, for dict-like callers)."""

    status = 404
    code = "unknown_model"

    def __init__(self, message: str, *, field: str | None = "model", **extra: object) -> None:
        super().__init__(message, field=field, **extra)


class ModelStore:
    """Registry of the models a mesh can serve (see the module docstring for the layout)."""

    def __init__(self, cache_dir: Path, zoo: Iterable[str] | None = None) -> None:
        """``zoo``: the built-ins to register (None = all ten of Table III)."""
        self.cache_dir = Path(cache_dir)
        self.user_dir = self.cache_dir / "user"
        self._zoo: tuple[str, ...] = tuple(dict.fromkeys(zoo_mod.ZOO_NAMES if zoo is None else zoo))
        for name in self._zoo:
            zoo_mod.spec(name)  # KeyError for an unknown built-in
        self._lock = threading.RLock()
        self._builtin_info: dict[str, ModelInfo] = {}

    # ------------------------------------------------------------------ queries
    def builtin(self, name: str) -> bool:
        return name in self._zoo

    def _user_json(self, name: str) -> Path:
        return self.user_dir / f"{name}.json"

    def _user_onnx(self, name: str) -> Path:
        return self.user_dir / f"{name}.onnx"

    def _user_names(self) -> list[str]:
        if not self.user_dir.is_dir():
            return []
        return sorted(
            p.stem
            for p in self.user_dir.glob("*.json")
            if NAME_RE.match(p.stem) and (self.user_dir / f"{p.stem}.onnx").exists()
        )

    def names(self) -> list[str]:
        """Built-ins (in the configured order) then user models (sorted)."""
        return [*self._zoo, *(n for n in self._user_names() if n not in self._zoo)]

    def has(self, name: str) -> bool:
        if name in self._zoo:
            return True
        return bool(NAME_RE.match(name)) and self._user_json(name).exists() and self._user_onnx(name).exists()

    def info(self, name: str) -> ModelInfo:
        """ModelInfo without building anything; KeyError when ``name`` is not registered."""
        if name in self._zoo:
            cached = self._builtin_info.get(name)
            if cached is not None:
                return cached.model_copy(deep=True)
            built = zoo_mod.model_path(name, self.cache_dir)
            info = ModelInfo(
                name=name,
                task=zoo_mod.task(name),
                inputs=zoo_mod.input_specs(name),
                outputs=zoo_mod.output_specs(name),
                features=zoo_mod.zoo_features(name),
                precisions=published_accuracies(name),
                sha256=zoo_mod.file_sha256(built) if built.exists() else "",
                builtin=True,
            )
            if info.sha256:  # final once built; before that another process may build it
                self._builtin_info[name] = info.model_copy(deep=True)
            return info
        if not self.has(name):
            raise UnknownModel(f"unknown model {name!r}")
        return ModelInfo.model_validate_json(self._user_json(name).read_text())

    def precisions(self, name: str) -> list[Precision]:
        """Every registered model can be served at every precision (variants are made lazily)."""
        if not self.has(name):
            raise UnknownModel(f"unknown model {name!r}")
        return list(Precision)

    # ------------------------------------------------------------------ files
    def path(self, name: str, precision: Precision | str = Precision.fp32) -> Path:
        """The .onnx to run: builds the zoo model / converts the variant on first use."""
        precision = Precision(precision)
        if not (name in self._zoo or self.has(name)):
            raise UnknownModel(f"unknown model {name!r}")
        # Runners share the cache: one process builds, the others wait and reuse the file
        # (onnxruntime's quantizer writes scratch files beside its input, so builds must not overlap).
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".build.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fp32 = zoo_mod.build(name, self.cache_dir) if name in self._zoo else self._user_onnx(name)
            return make_variant(fp32, precision, self.cache_dir)

    def ensure(self, name: str, precisions: Iterable[Precision | str] = (Precision.fp32,)) -> dict[Precision, Path]:
        """Eagerly build ``name`` at ``precisions`` (e.g. at runner start)."""
        return {Precision(p): self.path(name, p) for p in precisions}

    # ------------------------------------------------------------------ uploads
    def add(self, name: str, data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, overwrite: bool = False) -> ModelInfo:
        """Validate and register an uploaded ONNX model; nothing is written unless it is valid.

        Raises :class:`ModelValidationError` (``field="name"`` for a bad or clashing name,
        ``field="file"`` for the model itself)."""
        if not NAME_RE.match(name):
            raise ModelValidationError(
                "model name must match ^[a-z0-9][a-z0-9_.-]{0,63}$ (lower-case letters, digits, '_', '.', '-')",
                field="name",
            )
        if name.endswith((".json", ".onnx", ".tmp")):
            raise ModelValidationError("model name must not end in .json, .onnx or .tmp", field="name")
        if name in self._zoo or name in zoo_mod.ZOO:
            raise ModelValidationError(f"{name!r} is a built-in model name", field="name")
        with self._lock:
            if self.has(name) and not overwrite:
                raise ModelValidationError(f"a model named {name!r} already exists (use overwrite)", field="name")
            model = load_and_validate(data, max_bytes)
            inputs, outputs = io_specs(model)
            try:
                features = extract_features(model)
            except Exception as exc:
                raise ModelValidationError(f"could not analyse the graph: {exc}") from exc
            props = {p.key: p.value for p in model.metadata_props}
            sha = hashlib.sha256(data).hexdigest()
            kept: dict[Precision, AccuracyEntry] = {}
            if self.has(name):  # re-upload of the same bytes (e.g. a push to a runner) keeps known accuracies
                old = self.info(name)
                kept = old.precisions if old.sha256 == sha else {}
            info = ModelInfo(
                name=name,
                task=props.get("autoscale.task", USER_TASK),
                inputs=inputs,
                outputs=outputs,
                features=features,
                precisions=kept,
                sha256=sha,
                builtin=False,
            )
            atomic_write(self._user_onnx(name), data)
            atomic_write(self._user_json(name), info.model_dump_json(indent=2).encode())
            return info

    def set_accuracy(self, name: str, precision: Precision | str, entry: AccuracyEntry) -> ModelInfo:
        """Record an accuracy figure (e.g. a measured one) for a user model."""
        if name in self._zoo:
            raise ModelValidationError("built-in accuracies are the published figures", field="name")
        with self._lock:
            info = self.info(name)
            info.precisions[Precision(precision)] = entry
            atomic_write(self._user_json(name), info.model_dump_json(indent=2).encode())
            return info

    def measure(self, name: str, precision: Precision | str, labelled_set: LabelledSet) -> ModelInfo:
        """Measure top-1 of a user model's ``precision`` variant on a labelled set and record it."""
        entry = measure_accuracy(self.path(name, precision), precision, labelled_set)
        return self.set_accuracy(name, precision, entry)

    def remove(self, name: str) -> None:
        """Delete a user model and its cached variants."""
        if name in self._zoo:
            raise ModelValidationError(f"{name!r} is a built-in model and cannot be removed", field="name")
        with self._lock:
            if not self.has(name):
                raise UnknownModel(f"unknown model {name!r}")
            self._user_json(name).unlink(missing_ok=True)  # first: the entry disappears atomically
            self._user_onnx(name).unlink(missing_ok=True)
            variants = self.cache_dir / "variants"
            if variants.is_dir():
                for p in variants.glob(f"{name}-*"):
                    if re.fullmatch(rf"{re.escape(name)}-(fp16|int8)-[0-9a-f]{{12}}\.(onnx|json)", p.name):
                        p.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"ModelStore({str(self.cache_dir)!r}, zoo={list(self._zoo)!r})"
