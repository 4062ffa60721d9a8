"""On-disk registry of servable models: the zoo built-ins plus user uploads.

Layout under ``cache_dir``::

    zoo/<name>-<sha12>.onnx (+ .json)     built-ins, generated on first use (services.common.zoo)
    variants/<stem>-<precision>-<key>.onnx INT8 / FP16 variants (services.common.precision)
    parts/<stem>-<key>.onnx                sub-graphs between cut points (services.common.partition_files)
    user/blobs/<sha256>.onnx               uploads, content-addressed: a file is never rewritten
    user/<name>.json                       an upload's ModelInfo; its sha256 names the blob

The decider and the runners may share one directory from separate processes, so nothing is
cached in memory that another process could change: user entries are read from disk on
each call, and every file is written to a temp file and renamed into place (``os.replace``)
- a reader sees the old file or the new one, never half of one. Because blobs are named by their
content, re-pointing a name at new bytes never changes a file a runner has loaded: its session
(keyed by the hash) stays what it was until it loads the new one.  Information about a
built-in never needs its weights (``zoo_features`` + ``input_specs``), so a decider starts
in well under a second even on an empty cache - except a *trained* built-in (``digits``): its
accuracy is measured on its held-out split per precision, which needs the model and its
variants (built once, ~2.3 s of CPU with the imports; the figures are then read from
``zoo/<name>-<sha12>.accuracy.json``).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import onnx
import onnxconverter_common
import onnxruntime
from pydantic import BaseModel, ValidationError

from services.common import zoo as zoo_mod
from services.common.accuracy import LabelledSet, measure_accuracy, published_accuracies
from services.common.features import (
    DEFAULT_MAX_BYTES,
    ModelValidationError,
    extract_features,
    io_specs,
    load_and_validate,
)
from services.common.features.partition import find_cut_points
from services.common.files import atomic_write
from services.common.partition_files import part_file
from services.common.precision import VARIANT_FORMAT, make_variant
from services.core.errors import AutoScaleError
from services.core.schemas import AccuracyEntry, ModelInfo, Partition, Precision

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
USER_TASK = "custom"


class UnknownModel(AutoScaleError, KeyError):
    """No model of that name is registered (a KeyError too, for dict-like callers)."""

    status = 404
    code = "unknown_model"

    def __init__(self, message: str, *, field: str | None = "model", **extra: object) -> None:
        super().__init__(message, field=field, **extra)


class _MeasuredAccuracy(BaseModel):
    """Sidecar of a trained built-in: its measured accuracy per precision, and what it was measured with."""

    key: str  # the converters' versions: a new quantiser makes new variants, measured again
    precisions: dict[Precision, AccuracyEntry]


def _measurement_key() -> str:
    # The modules' own versions, not the distributions': the GPU build is the distribution
    # onnxruntime-gpu, whose module is onnxruntime all the same.
    versions = f"onnxruntime{onnxruntime.__version__}-onnxconverter-common{onnxconverter_common.__version__}"
    return f"{VARIANT_FORMAT}|{versions}-onnx{onnx.__version__}"


class NameClash(ModelValidationError):
    """A name a built-in or another upload already has (409, as the decider's own clash check)."""

    status = 409
    code = "name_clash"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="name")


class Sha256Mismatch(ModelValidationError):
    """A pushed model whose bytes are not the ones the decider validated (``X-Model-SHA256``)."""

    code = "sha256_mismatch"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="x-model-sha256")


class UnsupportedModel(ModelValidationError):
    """A valid ONNX file that ONNX Runtime, every runner's default engine, cannot run (e.g. a custom op)."""

    code = "unsupported_op"


def require_servable(model: onnx.ModelProto) -> None:
    """Refuse a model every runner could not serve (the decider on upload, a runner on a push)."""
    from services.common.engines import get_engine

    support = get_engine("onnxruntime").supports(model, Precision.fp32)
    if not support.ok:
        raise UnsupportedModel(f"the model cannot be served: {support.reason}")


class ModelStore:
    """Registry of the models a mesh can serve (see the module docstring for the layout)."""

    def __init__(self, cache_dir: Path, zoo: Iterable[str] | None = None) -> None:
        """``zoo``: the built-ins to register (None = every built-in this installation can serve:
        ``digits`` and Table III's ten, less ``digits`` without scikit-learn). A listed built-in
        whose extra is missing is a MissingExtra naming it, so a service refuses to start."""
        self.cache_dir = Path(cache_dir)
        self.user_dir = self.cache_dir / "user"
        self._zoo: tuple[str, ...] = tuple(dict.fromkeys(zoo_mod.available_builtins() if zoo is None else zoo))
        for name in self._zoo:
            zoo_mod.spec(name)  # KeyError for an unknown built-in
            zoo_mod.source_hash(name)  # MissingExtra for a built-in whose optional libraries are not installed
        self._lock = threading.RLock()
        self._builtin_info: dict[str, ModelInfo] = {}

    # ------------------------------------------------------------------ queries
    def builtin(self, name: str) -> bool:
        return name in self._zoo

    def _user_json(self, name: str) -> Path:
        return self.user_dir / f"{name}.json"

    def _blob(self, sha256: str) -> Path:
        return self.user_dir / "blobs" / f"{sha256}.onnx"

    def _user_onnx(self, name: str) -> Path | None:
        """The file an upload's entry points at (None: no such entry, or its file is gone)."""
        try:
            sha = ModelInfo.model_validate_json(self._user_json(name).read_bytes()).sha256
        except (OSError, ValueError):
            return None
        blob = self._blob(sha)
        if blob.exists():
            return blob
        legacy = self.user_dir / f"{name}.onnx"  # the layout before content addressing
        return legacy if legacy.exists() else None

    def _user_names(self) -> list[str]:
        if not self.user_dir.is_dir():
            return []
        return sorted(p.stem for p in self.user_dir.glob("*.json") if NAME_RE.match(p.stem) and self.has(p.stem))

    def names(self) -> list[str]:
        """Built-ins (in the configured order) then user models (sorted)."""
        return [*self._zoo, *(n for n in self._user_names() if n not in self._zoo)]

    def has(self, name: str) -> bool:
        if name in self._zoo:
            return True
        return bool(NAME_RE.match(name)) and self._user_onnx(name) is not None

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
                precisions=self._trained_accuracy(name)
                if zoo_mod.spec(name).labelled_set
                else published_accuracies(name),
                sha256=zoo_mod.file_sha256(built) if built.exists() else "",
                builtin=True,
                cut_points=zoo_mod.zoo_cut_points(name),
            )
            if info.sha256:  # final once built; before that another process may build it
                self._builtin_info[name] = info.model_copy(deep=True)
            return info
        if not self.has(name):
            raise UnknownModel(f"unknown model {name!r}")
        return ModelInfo.model_validate_json(self._user_json(name).read_text())

    def _trained_accuracy(self, name: str) -> dict[Precision, AccuracyEntry]:
        """Top-1 of a trained built-in per precision, measured on its held-out split (builds the
        model and its variants on first use), cached next to the model."""
        side = zoo_mod.model_path(name, self.cache_dir).with_suffix(".accuracy.json")
        key = _measurement_key()
        if side.exists():
            try:
                cached = _MeasuredAccuracy.model_validate_json(side.read_bytes())
                if cached.key == key and set(cached.precisions) == set(Precision):
                    return cached.precisions
            except ValidationError:
                pass  # unreadable: measure again
        labelled = zoo_mod.labelled_set(name)
        if labelled is None:
            raise UnknownModel(f"{name!r} is not a trained built-in")
        note = zoo_mod.spec(name).labelled_set_note
        measured = {p: measure_accuracy(self.path(name, p), p, labelled, note) for p in Precision}
        # Deterministic: two processes measuring at once write the same bytes, atomically.
        atomic_write(side, _MeasuredAccuracy(key=key, precisions=measured).model_dump_json(indent=2).encode())
        return measured

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
            if fp32 is None:  # removed since the check above
                raise UnknownModel(f"unknown model {name!r}")
            return make_variant(fp32, precision, self.cache_dir)

    def part(self, name: str, precision: Precision | str, partition: Partition) -> Path:
        """The .onnx of one part of ``name`` at ``precision`` (``services.common.partition_files``):
        cut from the variant on first use, then cached per (model file, cut, precision)."""
        src = self.path(name, precision)
        return part_file(src, self.info(name).cut_points, partition, self.cache_dir)

    def ensure(self, name: str, precisions: Iterable[Precision | str] = (Precision.fp32,)) -> dict[Precision, Path]:
        """Eagerly build ``name`` at ``precisions`` (e.g. at runner start)."""
        return {Precision(p): self.path(name, p) for p in precisions}

    # ------------------------------------------------------------------ uploads
    def add(
        self,
        name: str,
        data: bytes,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        overwrite: bool = False,
        expected_sha256: str | None = None,
        accept: Callable[[onnx.ModelProto], None] | None = None,
    ) -> ModelInfo:
        """Validate and register an uploaded ONNX model; nothing is written unless it is valid.

        ``expected_sha256``: the hash the sender validated (a push); other bytes raise
        :class:`Sha256Mismatch`. ``accept``: a further check of the parsed model (e.g.
        :func:`require_servable`). Raises :class:`ModelValidationError` (``field="name"`` for a
        bad or clashing name, ``field="file"`` for the model itself)."""
        if not NAME_RE.match(name):
            raise ModelValidationError(
                "model name must match ^[a-z0-9][a-z0-9_.-]{0,63}$ (lower-case letters, digits, '_', '.', '-')",
                field="name",
            )
        if name.endswith((".json", ".onnx", ".tmp")):
            raise ModelValidationError("model name must not end in .json, .onnx or .tmp", field="name")
        if name in self._zoo or name in zoo_mod.ZOO:
            raise NameClash(f"{name!r} is a built-in model name")
        sha = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and not hmac.compare_digest(sha, expected_sha256.strip().lower()):
            raise Sha256Mismatch(f"the body's sha256 is {sha}, not the {expected_sha256!r} the sender validated")
        with self._lock:
            if self.has(name) and not overwrite:
                raise NameClash(f"a model named {name!r} already exists (use overwrite)")
            model = load_and_validate(data, max_bytes)
            if accept is not None:
                accept(model)
            inputs, outputs = io_specs(model)
            try:
                features = extract_features(model)
                cut_points = find_cut_points(model, features.input_bytes)
            except Exception as exc:
                raise ModelValidationError(f"could not analyse the graph: {exc}") from exc
            props = {p.key: p.value for p in model.metadata_props}
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
                cut_points=cut_points,
            )
            blob = self._blob(sha)
            if not blob.exists():  # content-addressed: an existing blob already holds these bytes
                atomic_write(blob, data)
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
        """Delete a user model, and its file and cached variants unless another name has the same bytes."""
        if name in self._zoo:
            raise ModelValidationError(f"{name!r} is a built-in model and cannot be removed", field="name")
        with self._lock:
            if not self.has(name):
                raise UnknownModel(f"unknown model {name!r}")
            sha = self.info(name).sha256
            self._user_json(name).unlink(missing_ok=True)  # first: the entry disappears atomically
            (self.user_dir / f"{name}.onnx").unlink(missing_ok=True)  # the legacy layout's file
            if any(self.info(n).sha256 == sha for n in self._user_names()):
                return
            self._blob(sha).unlink(missing_ok=True)
            for p in (self.cache_dir / "parts").glob(f"{sha}*.onnx"):  # parts of the file and of its variants
                p.unlink(missing_ok=True)
            variants = self.cache_dir / "variants"
            if variants.is_dir():
                for p in variants.glob(f"{sha}-*"):
                    if re.fullmatch(rf"{sha}-(fp16|int8)-[0-9a-f]{{12}}\.(onnx|json)", p.name):
                        p.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"ModelStore({str(self.cache_dir)!r}, zoo={list(self._zoo)!r})"
