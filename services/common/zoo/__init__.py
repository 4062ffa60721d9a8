"""The ten networks of the paper's Table III, generated as ONNX graphs (opset 17), and
``digits``, a small classifier with real trained weights (``digits.py``).

No download: Table III weights come from ``numpy.random.default_rng(seed)`` (He-scaled, with a
batch norm folded in from a synthetic probe batch - see ``layers.py``), so outputs are finite,
well-scaled and input-dependent (but their classes mean nothing); ``digits`` is trained at build
time on scikit-learn's bundled handwritten digits, and its accuracy is measured on a held-out
split (``labelled_set``) instead of quoted.
Each Table III graph reproduces the paper's CONV / FC / RC counts exactly as counted by
:mod:`services.common.features`, has the real input shape and MACs within 15 % of a
published figure (cited per model below).

API
---
``ZOO_NAMES``                          the ten Table III names, in Table III order
``BUILTIN_NAMES``                      every built-in: ``digits`` then the ten
``build(name, cache_dir) -> Path``     fp32 .onnx, cached as ``cache_dir/zoo/<name>-<sha12>.onnx``
                                       where the hash covers the builder sources + seed
``build_model(name, weights=True)``    the ModelProto in memory (``weights=False``: shape-only
                                       initializers, same nodes - what ``zoo_features`` uses)
``zoo_features(name)``                 Table I features without generating weights (memoised)
``zoo_cut_points(name)``               where the network can be partitioned (same graph walk, memoised)
``input_specs(name)``, ``output_specs(name)``, ``task(name)``, ``spec(name)``
``synthetic_inputs(name | specs, seed)``   a deterministic, valid feed (token ids < vocab)
``calibration_inputs(name | specs, n, seed)``  feeds for static INT8 calibration (real training
                                       images where the model has them, else synthetic)
``labelled_set(name)``                 the held-out (x, y) a trained built-in is measured on, or None
``available(name)``, ``available_builtins()``  whether a built-in's optional libraries are installed
                                       (``digits`` needs scikit-learn, the ``eval`` extra)
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx

from services.common.files import atomic_write
from services.common.zoo import bert, digits, inception, layers, mobilenet, resnet, ssd
from services.common.zoo.layers import GraphBuilder
from services.core.extras import installed, require
from services.core.schemas import CutPoint, ModelFeatures, TensorSpec

# Bump to force every cached zoo model to be rebuilt (e.g. after an onnx upgrade).
ZOO_FORMAT = "1"
SEED_BASE = 2020


@dataclass(frozen=True)
class ZooSpec:
    name: str
    builder: Callable[[GraphBuilder], None]
    modules: tuple[str, ...]  # source files (relative to this package) the graph depends on
    task: str
    workload: str  # Table III's workload column
    table3: tuple[int, int, int]  # (CONV, FC, RC) of Table III
    published_macs: int
    macs_reference: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    qos_ms: float  # paper Sec. V-B: 50 ms non-streaming vision, 100 ms MobileBERT
    # Trained built-ins only: the held-out (x, y) their accuracy is measured on, and real training
    # feeds for INT8 calibration (n, seed) -> feeds. None: published accuracy, synthetic calibration.
    labelled_set: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    calibration: Callable[[int, int], list[dict[str, np.ndarray]]] | None = None
    labelled_set_note: str = ""  # what the labelled set is, for the measured figures' reference
    deps: tuple[str, ...] = ()  # packages whose version changes the weights (part of the cache key)
    requires: tuple[str, ...] = ()  # optional modules the builder imports (services.core.extras names the extra)


def _img(side: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec(name="input", dtype="float32", shape=[1, 3, side, side]),)


_LOGITS = (TensorSpec(name="logits", dtype="float32", shape=[1, 1000]),)


def _det(anchors: int) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec(name="boxes", dtype="float32", shape=[1, anchors, ssd.BOX]),
        TensorSpec(name="scores", dtype="float32", shape=[1, anchors, ssd.NUM_CLASSES]),
    )


_CLS, _DET, _QA = "image_classification", "object_detection", "question_answering"
_MB = ("layers.py", "mobilenet.py")

_SPECS: tuple[ZooSpec, ...] = (
    ZooSpec(
        "inception_v1",
        inception.inception_v1,
        ("layers.py", "mobilenet.py", "inception.py"),
        _CLS,
        "Image Classification",
        (49, 1, 0),
        1_500_000_000,
        # GoogLeNet was designed for "a computational budget of 1.5 billion multiply-adds at
        # inference time" (Szegedy et al. 2015, Sec. 5; Table 1's ops column sums to ~1.5 G).
        "Szegedy et al. 2015 (GoogLeNet), Sec. 5 / Table 1: ~1.5 G multiply-adds",
        _img(224),
        _LOGITS,
        50.0,
    ),
    ZooSpec(
        "inception_v3",
        inception.inception_v3,
        ("layers.py", "mobilenet.py", "inception.py"),
        _CLS,
        "Image Classification",
        (94, 1, 0),
        5_710_000_000,
        # torchvision's model table lists Inception_V3 at 5.71 "GFLOPS", which torchvision
        # counts as multiply-accumulates (its ResNet-50 entry is 4.09).
        "torchvision model zoo, Inception_V3_Weights.IMAGENET1K_V1: 5.71 G multiply-adds at 299x299",
        _img(299),
        _LOGITS,
        50.0,
    ),
    ZooSpec(
        "mobilenet_v1",
        mobilenet.mobilenet_v1,
        _MB,
        _CLS,
        "Image Classification",
        (14, 1, 0),
        569_000_000,
        "Howard et al. 2017, Table 8 (1.0 MobileNet-224): 569 M mult-adds; TF-Slim mobilenet_v1.md: 569 M MACs",
        _img(224),
        _LOGITS,
        50.0,
    ),
    ZooSpec(
        "mobilenet_v2",
        mobilenet.mobilenet_v2,
        _MB,
        _CLS,
        "Image Classification",
        (35, 1, 0),
        300_000_000,
        "Sandler et al. 2018, Table 4: 300 M MAdds; TF-Slim mobilenet README (v2_1.0_224): 300 M MACs",
        _img(224),
        _LOGITS,
        50.0,
    ),
    ZooSpec(
        "mobilenet_v3",
        mobilenet.mobilenet_v3,
        _MB,
        _CLS,
        "Image Classification",
        (23, 20, 0),
        56_000_000,
        # v3-Small (see mobilenet.py for why Small): the paper's Table 3 gives 56 M, the
        # TF-Slim checkpoint table 66 M for the released "Small dm=1" graph.
        "Howard et al. 2019, Table 3 (MobileNetV3-Small 1.0): 56 M MAdds (TF-Slim README: 66 M)",
        _img(224),
        _LOGITS,
        50.0,
    ),
    ZooSpec(
        "resnet50",
        resnet.resnet50,
        ("layers.py", "mobilenet.py", "resnet.py"),
        _CLS,
        "Image Classification",
        (53, 1, 0),
        3_800_000_000,
        # He et al. report 3.8 x 10^9 "FLOPs" and define them as multiply-adds.
        "He et al. 2016, Table 1 (50-layer): 3.8 G multiply-adds",
        _img(224),
        _LOGITS,
        50.0,
    ),
    ZooSpec(
        "ssd_mobilenet_v1",
        ssd.ssd_mobilenet_v1,
        (*_MB, "ssd.py"),
        _DET,
        "Object Detection",
        (19, 1, 0),
        1_300_000_000,
        "Sandler et al. 2018, Table 6 (MobileNetV1 + SSDLite, 320x320): 1.3 B MAdds",
        _img(300),
        _det(3 * 19 * 19 + 6 * 10 * 10 + 6 * 5 * 5 + 6),
        50.0,
    ),
    ZooSpec(
        "ssd_mobilenet_v2",
        ssd.ssd_mobilenet_v2,
        (*_MB, "ssd.py"),
        _DET,
        "Object Detection",
        (52, 1, 0),
        800_000_000,
        "Sandler et al. 2018, Table 6 (MobileNetV2 + SSDLite, 320x320): 0.8 B MAdds",
        _img(300),
        _det(3 * 19 * 19 + 6 * (10 * 10 + 5 * 5 + 3 * 3 + 2 * 2) + 6),
        50.0,
    ),
    ZooSpec(
        "ssd_mobilenet_v3",
        ssd.ssd_mobilenet_v3,
        (*_MB, "ssd.py"),
        _DET,
        "Object Detection",
        (28, 20, 0),
        160_000_000,
        # Howard et al. 2019, Table 6 (SSDLite, 320x320): V3-Small† (the TF detection zoo's
        # ssd_mobilenet_v3_small_coco, 43 ms on Pixel 1) 0.16 B MAdds.
        "Howard et al. 2019, Table 6 (MobileNetV3-Small + SSDLite, 320x320): 0.16 B MAdds",
        _img(300),
        _det(3 * 19 * 19 + 6 * 10 * 10 + 6 * 5 * 5 + 6),
        50.0,
    ),
    ZooSpec(
        "mobilebert",
        bert.mobilebert,
        ("layers.py", "bert.py"),
        _QA,
        "Translation",
        (0, 1, 24),
        2_850_000_000,
        # Sun et al. 2020, GLUE results table, #FLOPS column: MobileBERT 5.7 B at sequence
        # length 128.  Their FLOPs are 2 x multiply-adds (BERT_BASE is listed at 22.5 B, twice
        # its ~11.2 G multiply-adds), so ~2.85 G multiply-adds.  (Not 4.7 G: 25 M weights x 128
        # tokens bounds the projections at ~2.7 G.)
        "Sun et al. 2020 (MobileBERT), GLUE table #FLOPS: 5.7 G FLOPs = 2.85 G multiply-adds at seq 128",
        (TensorSpec(name="input_ids", dtype="int64", shape=[1, bert.SEQ]),),
        (
            TensorSpec(name="start_logits", dtype="float32", shape=[1, bert.SEQ]),
            TensorSpec(name="end_logits", dtype="float32", shape=[1, bert.SEQ]),
        ),
        100.0,
    ),
)

_DIGITS = ZooSpec(
    "digits",
    digits.digits,
    ("layers.py", "digits.py"),
    _CLS,
    "Handwritten digits (not in Table III)",
    (0, 2, 0),
    digits.HIDDEN * digits.SIDE**2 + digits.CLASSES * digits.HIDDEN,
    "not a Table III network: its own graph, 64 x 64 + 64 x 10 multiply-adds (MLP on 8x8 digits)",
    (TensorSpec(name="input", dtype="float32", shape=[1, 1, digits.SIDE, digits.SIDE]),),
    (TensorSpec(name="logits", dtype="float32", shape=[1, digits.CLASSES]),),
    50.0,
    labelled_set=digits.held_out,
    calibration=digits.calibration,
    labelled_set_note=digits.HELD_OUT_NOTE,
    deps=("scikit-learn", "numpy"),
    requires=("sklearn",),
)

ZOO: dict[str, ZooSpec] = {s.name: s for s in (_DIGITS, *_SPECS)}
ZOO_NAMES: tuple[str, ...] = tuple(s.name for s in _SPECS)  # Table III: what the evaluation and benches cover
BUILTIN_NAMES: tuple[str, ...] = tuple(ZOO)
TOKEN_VOCAB = bert.VOCAB


def spec(name: str) -> ZooSpec:
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_NAMES)}") from None


def task(name: str) -> str:
    return spec(name).task


def input_specs(name: str) -> list[TensorSpec]:
    return [t.model_copy() for t in spec(name).inputs]


def output_specs(name: str) -> list[TensorSpec]:
    return [t.model_copy() for t in spec(name).outputs]


def seed(name: str) -> int:
    """Per-model weight seed: stable across runs, machines and Python versions."""
    return SEED_BASE + zlib.crc32(name.encode()) % 10_000


def available(name: str) -> bool:
    """Whether built-in ``name`` can be built and looked up here (its optional libraries are installed)."""
    return all(installed(m) for m in spec(name).requires)


def available_builtins() -> tuple[str, ...]:
    """The built-ins this installation can serve: every one, less those whose extra is missing."""
    return tuple(n for n in BUILTIN_NAMES if available(n))


@cache
def source_hash(name: str) -> str:
    """sha256 over the builder sources, the seed and the zoo format: the cache key.

    MissingExtra when the model's optional libraries are not installed: the key names their
    versions, so nothing about the built model can be found without them."""
    s = spec(name)
    require(f"built-in model {name!r}", *s.requires, field="model")
    key = f"{ZOO_FORMAT}|{name}|{seed(name)}|opset{layers.OPSET}|{s.task}|{s.workload}|{s.builder.__name__}"
    key += "".join(f"|{dep}{metadata.version(dep)}" for dep in s.deps)
    h = hashlib.sha256(key.encode())
    here = Path(__file__).parent
    for mod in s.modules:
        h.update(b"\0" + mod.encode() + b"\0" + (here / mod).read_bytes())
    return h.hexdigest()


def build_model(name: str, *, weights: bool = True) -> onnx.ModelProto:
    """Generate the graph in memory (deterministic for a given name)."""
    s = spec(name)
    b = GraphBuilder(name, seed(name), weights=weights)
    s.builder(b)
    model = b.model(
        doc=f"AutoScale zoo {name} ({s.workload}): {s.builder.__module__}.{s.builder.__name__}, "
        + ("trained weights (digits.py)" if s.labelled_set else f"synthetic weights, seed {seed(name)}")
    )
    onnx.helper.set_model_props(
        model,
        {"autoscale.zoo": name, "autoscale.seed": str(seed(name)), "autoscale.source_sha256": source_hash(name)},
    )
    return model


def model_path(name: str, cache_dir: Path) -> Path:
    return Path(cache_dir) / "zoo" / f"{name}-{source_hash(name)[:12]}.onnx"


def build(name: str, cache_dir: Path) -> Path:
    """Path of the fp32 model, generating it on first use; concurrent builders are safe
    (each writes a temp file and renames it atomically; the content is identical)."""
    path = model_path(name, cache_dir)
    if path.exists():
        return path
    data = build_model(name).SerializeToString()
    atomic_write(path, data)
    meta = {
        "name": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "source_sha256": source_hash(name),
        "seed": seed(name),
        "bytes": len(data),
        "features": zoo_features(name).model_dump(),
    }
    atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=2).encode())
    return path


def file_sha256(path: Path) -> str:
    """sha256 of a built model, from its sidecar when present (no re-hash of 100 MB)."""
    side = Path(path).with_suffix(".json")
    if side.exists():
        try:
            return str(json.loads(side.read_text())["sha256"])
        except (ValueError, KeyError):
            pass
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@cache
def _features(name: str) -> ModelFeatures:
    from services.common.features import extract_features

    return extract_features(build_model(name, weights=False))


def zoo_features(name: str) -> ModelFeatures:
    """Table I features from the real graph structure, without generating weights (< 0.5 s, memoised)."""
    return _features(name).model_copy()


@cache
def _cut_points(name: str) -> tuple[CutPoint, ...]:
    from services.common.features.partition import find_cut_points

    return tuple(find_cut_points(build_model(name, weights=False), zoo_features(name).input_bytes))


def zoo_cut_points(name: str) -> list[CutPoint]:
    """The network's cut points (``services.common.features.partition``), without generating weights."""
    return [c.model_copy(deep=True) for c in _cut_points(name)]


def labelled_set(name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The held-out (x, y) a trained built-in's accuracy is measured on; None for the others."""
    s = ZOO.get(name)
    return s.labelled_set() if s is not None and s.labelled_set is not None else None


def labelled_set_available(name: str) -> bool:
    """Whether ``name`` is a trained built-in with a held-out labelled set (no data is loaded)."""
    s = ZOO.get(name)
    return s is not None and s.labelled_set is not None


def calibration_inputs(model: str | Sequence[TensorSpec], n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` feeds for static INT8 calibration: real training images for a trained built-in
    (a quantiser calibrated on noise would clip real pixels), synthetic ones otherwise."""
    s = ZOO.get(model) if isinstance(model, str) else None
    if s is not None and s.calibration is not None:
        return s.calibration(n, seed)
    return [synthetic_inputs(model, seed + i) for i in range(n)]


def synthetic_inputs(model: str | Sequence[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """A deterministic feed: N(0, 1) for float inputs (normalised images), valid token ids
    (< vocabulary) for a zoo model's int64 inputs, small non-negative ints otherwise."""
    specs = input_specs(model) if isinstance(model, str) else list(model)
    int_high = TOKEN_VOCAB if isinstance(model, str) and model in ZOO else 2
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for t in specs:
        shape = [d if isinstance(d, int) else 1 for d in t.shape]
        if t.dtype in ("float32", "float16"):
            feed[t.name] = rng.standard_normal(shape).astype(t.dtype)
        else:
            feed[t.name] = rng.integers(0, int_high, size=shape).astype(t.dtype)
    return feed
