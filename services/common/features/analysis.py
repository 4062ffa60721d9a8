"""Counting: apply the layer and MAC rules to every node and add the graph's I/O and weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

from services.common.features.graph import GraphIndex, attr_tensor, iter_graphs, numel
from services.common.features.layers import (
    head_nodes,
    is_attention_core,
    is_depthwise,
    is_fc_like_conv,
    is_linear,
    is_pointwise,
    reached_layers,
)
from services.common.features.macs import attention_macs, conv_macs, gemm_macs, matmul_macs, rnn_macs
from services.common.features.ops import (
    ATTENTION_OPS,
    CONV_OPS,
    CONV_T_OPS,
    FLOAT_TYPES,
    GEMM_OPS,
    MATMUL_OPS,
    RNN_OPS,
    WIRE_BYTES,
)
from services.core.schemas import ModelFeatures


@dataclass
class LayerInfo:
    """One MAC-carrying node and how it was counted."""

    node: str
    op: str
    # conv | fc | rc, or counted in MACs only: mac (activation x activation), merged (pointwise
    # half of a separable conv), rc-part (projection inside an attention block)
    kind: str
    macs: int
    note: str = ""


@dataclass
class GraphAnalysis:
    conv: int = 0
    fc: int = 0
    rc: int = 0
    macs: int = 0
    params: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    layers: list[LayerInfo] = field(default_factory=list)

    def features(self) -> ModelFeatures:
        return ModelFeatures(
            conv=self.conv,
            fc=self.fc,
            rc=self.rc,
            macs=self.macs,
            params=self.params,
            input_bytes=self.input_bytes,
            output_bytes=self.output_bytes,
        )


@dataclass
class _Layers:
    """The first pass's verdicts, keyed by ``id`` of the node (names may be empty or repeated)."""

    infos: dict[int, LayerInfo] = field(default_factory=dict)
    linear: list[onnx.NodeProto] = field(default_factory=list)
    convs: list[onnx.NodeProto] = field(default_factory=list)
    has_attention: bool = False


def _classify(g: GraphIndex) -> _Layers:
    """Every MAC node's kind and MACs, before separable pairs and attention blocks are folded."""
    out = _Layers()
    for n in g.nodes:
        op = n.op_type
        if op in CONV_OPS or op in CONV_T_OPS:
            macs = conv_macs(g, n)
            if op in CONV_OPS and is_fc_like_conv(g, n):
                out.infos[id(n)] = LayerInfo(n.name, op, "fc", macs, "conv over its whole input = dense layer")
                out.linear.append(n)
            else:
                out.infos[id(n)] = LayerInfo(n.name, op, "conv", macs)
                out.convs.append(n)
        elif op in GEMM_OPS or op in MATMUL_OPS:
            macs = gemm_macs(g, n) if op in GEMM_OPS else matmul_macs(g, n)
            if is_linear(g, n):
                out.infos[id(n)] = LayerInfo(n.name, op, "fc", macs)
                out.linear.append(n)
            else:
                out.infos[id(n)] = LayerInfo(n.name, op, "mac", macs, "activation x activation")
        elif op in RNN_OPS:
            out.infos[id(n)] = LayerInfo(n.name, op, "rc", rnn_macs(g, n))
        elif op in ATTENTION_OPS:
            out.infos[id(n)] = LayerInfo(n.name, op, "rc", attention_macs(g, n))
            out.has_attention = True
        elif op == "Softmax" and is_attention_core(g, n):
            out.infos[id(n)] = LayerInfo(n.name, op, "rc", 0, "attention core (softmax over Q·Kᵀ)")
            out.has_attention = True
    return out


def _merge_separable(g: GraphIndex, layers: _Layers) -> None:
    """Depthwise-separable pairs: the pointwise half is folded into its depthwise conv."""
    infos = layers.infos
    merged: set[int] = set()
    for n in layers.convs:
        if n.op_type not in CONV_OPS or not is_depthwise(g, n):
            continue
        reached = reached_layers(g, n.output[0])
        if len(reached) == 1:
            pw = reached[0]
            if id(pw) in infos and infos[id(pw)].kind == "conv" and id(pw) not in merged and is_pointwise(g, pw):
                merged.add(id(pw))
                infos[id(pw)].kind = "merged"
                infos[id(pw)].note = f"pointwise half of separable conv {n.name}"


def _fold_attention_projections(g: GraphIndex, layers: _Layers, batch: int) -> None:
    """Per-token linear layers inside attention blocks belong to the RC layer."""
    heads = head_nodes(g)
    for n in layers.linear:
        y = g.shape(n.output[0])
        # [B, S, H] - or [B*S, H] as TF's Dense/tensordot exports it - is per token
        per_token = y is not None and (len(y) >= 3 or (len(y) == 2 and (y[0] or 1) > batch))
        if per_token and id(n) not in heads:
            layers.infos[id(n)].kind = "rc-part"
            layers.infos[id(n)].note = "projection inside an attention block"


def _batch_size(g: GraphIndex, model: onnx.ModelProto) -> int:
    """Leading dim of the first graph input (symbolic -> 1): the number of samples."""
    init_names = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name not in init_names:
            shape = g.shape(vi.name)
            return int(shape[0] or 1) if shape else 1
    return 1


def _wire_bytes(g: GraphIndex, names: list[str]) -> int:
    total = 0
    for name in names:
        shape = g.shape(name)
        elem = g.types.get(name, TensorProto.FLOAT)
        per = 4 if elem in FLOAT_TYPES else WIRE_BYTES.get(elem, 4)
        total += (numel(shape) if shape is not None else 1) * per
    return total


def _params(model: onnx.ModelProto) -> int:
    total = 0
    for graph in iter_graphs(model.graph):
        tensors = list(graph.initializer)
        for n in graph.node:
            if n.op_type == "Constant":
                v = attr_tensor(n, "value")
                if v is not None:
                    tensors.append(v)
        for t in tensors:
            if t.data_type in (TensorProto.INT64, TensorProto.BOOL, TensorProto.STRING):
                continue
            n_el = numel(list(t.dims))
            if n_el > 1:
                total += n_el
        for s in graph.sparse_initializer:
            total += numel(list(s.values.dims))
    return total


def analyze(model: onnx.ModelProto) -> GraphAnalysis:
    """Apply the counting rules of this package; per-node detail in ``layers``."""
    g = GraphIndex(model)
    layers = _classify(g)
    _merge_separable(g, layers)
    if layers.has_attention:
        _fold_attention_projections(g, layers, _batch_size(g, model))
    out = GraphAnalysis()
    for info in layers.infos.values():
        out.macs += info.macs
        if info.kind == "conv":
            out.conv += 1
        elif info.kind == "fc":
            out.fc += 1
        elif info.kind == "rc":
            out.rc += 1
    out.layers = list(layers.infos.values())
    out.params = _params(model)
    init_names = {t.name for t in model.graph.initializer}
    out.input_bytes = _wire_bytes(g, [i.name for i in model.graph.input if i.name not in init_names])
    out.output_bytes = _wire_bytes(g, g.graph_outputs)
    return out


def extract_features(model: onnx.ModelProto) -> ModelFeatures:
    """Table I's NN-related features of ``model`` (see the package docstring for the rules)."""
    return analyze(model).features()
