"""Cut points: where a network can be split between two layers. Pure over the ONNX graph.

Walk the main graph's nodes in topological order; after each node, the *live* activations are the
ones produced so far (or graph inputs) that a later node still reads. Where at most
``max_tensors`` of them are live (initializers and what is computed from them alone don't count:
every part carries its own weights), the network can run up to there on one target and from there
on another, passing only those tensors. A position is a cut point when, in addition:

* at least one layer (CONV, FC or RC, counted as ``analysis`` counts them) lies on each side;
* it does not separate a depthwise conv from the pointwise conv it is counted with (one layer);
* no graph output is produced before it (a part's outputs are its boundary tensors or the
  network's outputs, not a mix);
* its tensors have dtypes the wire carries.

Positions with the same layers before them (activations, pooling, reshapes in between) are one
cut: the one with the fewest bytes crossing, the latest on a tie (after the activation, whose
output the INT8 variant keeps: ONNX Runtime's QDQ quantiser folds a ReLU or Clip into the
preceding conv's output). Of those, the *offered* cuts are the ones worth their bytes: walking
forward, a cut is kept only if fewer bytes cross it than every earlier kept one (running more
layers before a cut only pays if the tensor shrinks), at most ``BYTES_CAP_FACTOR`` x the input's
bytes (bounded request bodies), and at most ``max_cuts`` of them, spread over the network with the
smallest always kept. Graphs with control flow (If, Loop, Scan) have no cut points.
"""

from __future__ import annotations

import math

import onnx
from onnx import AttributeProto, TensorProto

from services.common.features.analysis import LayerInfo, classify
from services.common.features.graph import GraphIndex
from services.common.features.ops import FLOAT_TYPES, SPEC_DTYPES, WIRE_BYTES
from services.core.schemas import BoundaryTensor, CutPoint, LayerCounts

MAX_CUTS = 8
MAX_TENSORS = 2
BYTES_CAP_FACTOR = 4


def _has_subgraphs(model: onnx.ModelProto) -> bool:
    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute)


def _boundary(g: GraphIndex, name: str) -> BoundaryTensor | None:
    """The tensor as the wire carries it: float types as float32 (every precision's parts exchange
    FP32 boundaries), a symbolic dim as 1; None when its type or shape is unknown."""
    shape, elem = g.shape(name), g.types.get(name)
    if shape is None or elem is None:
        return None
    if elem in FLOAT_TYPES:
        dtype, per = "float32", 4
    elif elem in SPEC_DTYPES and elem != TensorProto.FLOAT16:
        dtype, per = SPEC_DTYPES[elem], WIRE_BYTES.get(elem, 4)
    else:
        return None
    dims = [1 if d is None else int(d) for d in shape]
    return BoundaryTensor.model_validate({"name": name, "dtype": dtype, "shape": dims, "bytes": math.prod(dims) * per})


def _live_positions(g: GraphIndex, model: onnx.ModelProto, max_tensors: int) -> list[tuple[int, list[str]]]:
    """(i, live tensors) after each node i (but the last) where at most ``max_tensors`` activations
    cross and none of them is a graph output."""
    nodes = g.nodes
    outputs = set(g.graph_outputs)
    last_use: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for x in n.input:
            if x:
                last_use[x] = i
    for o in outputs:
        last_use[o] = len(nodes)
    init = {t.name for t in model.graph.initializer}
    live = {vi.name for vi in model.graph.input if vi.name not in init and vi.name in last_use}
    found: list[tuple[int, list[str]]] = []
    for i, n in enumerate(nodes[:-1]):
        live.update(o for o in n.output if o and o in last_use and not g.is_const(o))
        live = {t for t in live if last_use[t] > i}
        if 0 < len(live) <= max_tensors and not live & outputs:
            found.append((i, sorted(live)))
    return found


# The layer type a MAC node's MACs belong to: a separable conv's pointwise half is its CONV layer's,
# projections and activation x activation products inside attention its RC layer's.
_MAC_TYPE = {"conv": "conv", "merged": "conv", "fc": "fc", "rc": "rc", "rc-part": "rc", "mac": "rc"}


def _cumulative(nodes: list[onnx.NodeProto], infos: dict[int, LayerInfo]) -> list[LayerCounts]:
    """Layer counts and MACs of nodes[0..i], for every i."""
    out: list[LayerCounts] = []
    layers = {"conv": 0, "fc": 0, "rc": 0}
    macs = {"conv": 0, "fc": 0, "rc": 0}
    for n in nodes:
        info = infos.get(id(n))
        if info is not None:
            macs[_MAC_TYPE.get(info.kind, "rc")] += info.macs
            if info.kind in layers:
                layers[info.kind] += 1
        out.append(
            LayerCounts(
                **layers,
                macs=sum(macs.values()),
                conv_macs=macs["conv"],
                fc_macs=macs["fc"],
                rc_macs=macs["rc"],
            )
        )
    return out


def _layers(c: LayerCounts) -> int:
    return c.conv + c.fc + c.rc


def _next_mac_kind(nodes: list[onnx.NodeProto], infos: dict[int, LayerInfo], i: int) -> str | None:
    for n in nodes[i + 1 :]:
        info = infos.get(id(n))
        if info is not None:
            return info.kind
    return None


def all_cut_points(model: onnx.ModelProto, max_tensors: int = MAX_TENSORS) -> list[CutPoint]:
    """Every cut point of ``model`` (one per stretch of layers, rules in the module docstring)."""
    if _has_subgraphs(model):
        return []
    g, infos = classify(model)
    nodes = g.nodes
    cum = _cumulative(nodes, infos)
    mac_nodes = [0] * len(nodes)  # MAC nodes in nodes[0..i]: positions with equal counts are one cut
    for i, n in enumerate(nodes):
        mac_nodes[i] = (mac_nodes[i - 1] if i else 0) + (id(n) in infos)
    total = cum[-1] if cum else LayerCounts()
    by_layers: dict[int, CutPoint] = {}  # MAC nodes before the cut -> the cheapest position
    for i, live in _live_positions(g, model, max_tensors):
        before = cum[i]
        after = LayerCounts(**{k: v - getattr(before, k) for k, v in total.model_dump().items()})
        if not _layers(before) or not _layers(after) or _next_mac_kind(nodes, infos, i) == "merged":
            continue
        tensors = [_boundary(g, t) for t in live]
        if any(t is None for t in tensors):
            continue
        bts = [t for t in tensors if t is not None]
        name = "+".join(t.name for t in bts)
        cut = CutPoint(name=name, tensors=bts, bytes=sum(t.bytes for t in bts), before=before, after=after)
        key = mac_nodes[i]
        best = by_layers.get(key)
        if best is None or cut.bytes <= best.bytes:
            by_layers[key] = cut
    return [by_layers[k] for k in sorted(by_layers)]


def offered_cut_points(cuts: list[CutPoint], input_bytes: int, max_cuts: int = MAX_CUTS) -> list[CutPoint]:
    """The cuts worth offering (module docstring): each smaller than every earlier one, within the
    byte cap, at most ``max_cuts`` spread along the network (the smallest always kept)."""
    cap = BYTES_CAP_FACTOR * max(input_bytes, 1)
    front: list[CutPoint] = []
    for c in cuts:
        if c.bytes <= cap and (not front or c.bytes < front[-1].bytes):
            front.append(c)
    if len(front) <= max_cuts:
        return front
    picks = {round(k * (len(front) - 1) / (max_cuts - 1)) for k in range(max_cuts)}
    return [front[k] for k in sorted(picks)]


def find_cut_points(model: onnx.ModelProto, input_bytes: int, max_cuts: int = MAX_CUTS) -> list[CutPoint]:
    """The cut points a model offers (``ModelInfo.cut_points``), in order along the network."""
    return offered_cut_points(all_cut_points(model), input_bytes, max_cuts)
