"""Sub-graphs of a model between two cut points, cut with ONNX's own tooling and cached on disk.

``part_file(src, cuts, partition, cache_dir)`` returns an .onnx holding the nodes of ``src`` (an FP32
model or one of its INT8 / FP16 variants) from the boundary tensors of ``partition.start`` (or the
model's inputs) to those of ``partition.end`` (or its outputs), extracted by
``onnx.utils.Extractor`` after ONNX shape inference has typed the boundaries. Variants are cut at
the FP32 model's boundary names (``services.common.features.partition`` picks tensors the INT8
quantiser keeps); a variant without one of them cannot be cut there (``PartitionError`` naming the
field). Every part exchanges float32 boundaries, whatever its precision: an FP16 part gets a
``Cast`` at each float16 boundary (as ``keep_io_types`` does for the whole FP16 variant), so parts
of different precisions chain, and the wire carries one dtype per cut.

Files live under ``cache_dir/parts/<source stem>-<key>.onnx``, the key covering the source file's
sha256, the boundary names and ``PART_FORMAT``; each is written to a temp file and renamed into place,
so processes sharing the cache never see half a file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from services.common.files import atomic_write
from services.core.partition import PartitionError, check_partition
from services.core.schemas import CutPoint, Partition

PART_FORMAT = "1"  # bump when the recipe below changes: cached parts are then cut again


def _sha256(path: Path) -> str:
    from services.common.zoo import file_sha256

    return file_sha256(path)


def boundary_names(
    model: onnx.ModelProto, cuts: Sequence[CutPoint], partition: Partition
) -> tuple[list[str], list[str]]:
    """The sub-graph's input and output tensor names (422 naming the field for an unknown cut)."""
    check_partition(cuts, partition)
    by_name = {c.name: c for c in cuts}
    init = {t.name for t in model.graph.initializer}
    if partition.start is None:
        inputs = [i.name for i in model.graph.input if i.name not in init]
    else:
        inputs = [t.name for t in by_name[partition.start].tensors]
    if partition.end is None:
        outputs = [o.name for o in model.graph.output]
    else:
        outputs = [t.name for t in by_name[partition.end].tensors]
    return inputs, outputs


def part_path(src: Path, cuts: Sequence[CutPoint], partition: Partition, cache_dir: Path) -> Path:
    """Where the part of ``src`` lives (whether or not it exists yet)."""
    bounds = "|".join(
        f"{p}:{'+'.join(t.name for t in c.tensors)}"
        for p, c in (("start", _cut(cuts, partition.start)), ("end", _cut(cuts, partition.end)))
        if c is not None
    )
    key = hashlib.sha256(f"{PART_FORMAT}|{_sha256(src)}|{bounds}".encode()).hexdigest()[:12]
    return Path(cache_dir) / "parts" / f"{Path(src).stem}-{key}.onnx"


def _cut(cuts: Sequence[CutPoint], name: str | None) -> CutPoint | None:
    return None if name is None else next((c for c in cuts if c.name == name), None)


def part_file(src: Path, cuts: Sequence[CutPoint], partition: Partition, cache_dir: Path) -> Path:
    """The sub-graph file of ``src`` for ``partition``, extracted on first use (see the module docstring)."""
    check_partition(cuts, partition)
    dst = part_path(src, cuts, partition, cache_dir)
    if dst.exists():
        return dst
    model = _typed_model(Path(src))
    inputs, outputs = boundary_names(model, cuts, partition)
    produced = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    for field, names in (("partition.start", inputs), ("partition.end", outputs)):
        missing = [n for n in names if n not in produced]
        if missing:
            raise PartitionError(
                f"this variant ({Path(src).name}) has no tensor {missing[0]!r}: it cannot be cut there", field=field
            )
    sub = onnx.utils.Extractor(model).extract_model(inputs, outputs)
    sub.graph.name = f"{model.graph.name} [{partition.start or 'inputs'}, {partition.end or 'outputs'})"
    onnx.helper.set_model_props(sub, {p.key: p.value for p in model.metadata_props})
    _float32_boundaries(sub)
    onnx.checker.check_model(sub)
    atomic_write(dst, sub.SerializeToString())
    return dst


_TYPED: dict[Path, onnx.ModelProto] = {}  # the last model typed: a runner cuts one model at several cuts in a row


def _typed_model(src: Path) -> onnx.ModelProto:
    """``src`` loaded, with ONNX shape inference's types on every tensor (what the Extractor needs
    at the boundaries); the last one is kept, the loading and inference cost seconds on 100 MB."""
    hit = _TYPED.get(src)
    if hit is not None:
        return hit
    model = onnx.shape_inference.infer_shapes(onnx.load(str(src)))
    _TYPED.clear()
    _TYPED[src] = model
    return model


def _float32_boundaries(model: onnx.ModelProto) -> None:
    """Cast float16 graph inputs and outputs of a sub-graph to float32 at its edges, in place."""
    g = model.graph
    casts_in: list[onnx.NodeProto] = []
    for vi in g.input:
        tt = vi.type.tensor_type
        if tt.elem_type != TensorProto.FLOAT16:
            continue
        inner = f"{vi.name}__fp16"
        for n in g.node:
            for k, x in enumerate(n.input):
                if x == vi.name:
                    n.input[k] = inner
        casts_in.append(helper.make_node("Cast", [vi.name], [inner], to=TensorProto.FLOAT16, name=f"{inner}_cast"))
        tt.elem_type = TensorProto.FLOAT
    for vi in g.output:
        tt = vi.type.tensor_type
        if tt.elem_type != TensorProto.FLOAT16:
            continue
        inner = f"{vi.name}__fp16"
        for n in g.node:
            for k, x in enumerate(n.output):
                if x == vi.name:
                    n.output[k] = inner
            for k, x in enumerate(n.input):
                if x == vi.name:
                    n.input[k] = inner
        g.node.append(helper.make_node("Cast", [inner], [vi.name], to=TensorProto.FLOAT, name=f"{inner}_cast"))
        tt.elem_type = TensorProto.FLOAT
    if casts_in:
        nodes = [*casts_in, *g.node]
        del g.node[:]
        g.node.extend(nodes)
    stale = {vi.name for vi in (*g.input, *g.output)}
    keep = [vi for vi in g.value_info if vi.name not in stale]
    del g.value_info[:]
    g.value_info.extend(keep)
