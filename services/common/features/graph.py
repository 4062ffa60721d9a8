"""The ONNX graph as the counting rules see it: shapes inferred on a weightless copy, constant
tensors, producers and consumers, typed attribute reads."""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterator

import onnx
from onnx import AttributeProto, TensorProto, helper

from services.common.features.ops import FLOAT_TYPES, MAC_OPS, NONDETERMINISTIC

Shape = list[int | None]


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph of its If/Loop/Scan nodes, recursively."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_graphs(g)


def numel(dims: Shape | list[int]) -> int:
    """Elements of a tensor of these dims; an unknown dim counts as 1 (the batch)."""
    return math.prod(1 if d is None else int(d) for d in dims)


def inp(node: onnx.NodeProto, i: int) -> str:
    """The node's ``i``-th input name ("" when absent: optional inputs may be left out)."""
    return node.input[i] if len(node.input) > i else ""


# ----------------------------------------------------------------------------- attributes


def _attribute(node: onnx.NodeProto, name: str, kind: int) -> AttributeProto | None:
    """The node's attribute ``name``, checked to be of type ``kind`` (None when absent)."""
    for a in node.attribute:
        if a.name == name:
            if a.type != kind:
                # onnx.checker rejects such a graph before an upload is analysed; the zoo never has one.
                raise ValueError(
                    f"{node.op_type} node {node.name!r}: attribute {name!r} is "
                    f"{AttributeProto.AttributeType.Name(a.type)}, expected {AttributeProto.AttributeType.Name(kind)}"
                )
            return a
    return None


def attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    a = _attribute(node, name, AttributeProto.INT)
    return default if a is None else a.i


def attr_ints(node: onnx.NodeProto, name: str) -> list[int]:
    """An INTS attribute; empty when absent."""
    a = _attribute(node, name, AttributeProto.INTS)
    return [] if a is None else list(a.ints)


def attr_str(node: onnx.NodeProto, name: str, default: str) -> str:
    a = _attribute(node, name, AttributeProto.STRING)
    return default if a is None else a.s.decode()


def attr_tensor(node: onnx.NodeProto, name: str) -> TensorProto | None:
    a = _attribute(node, name, AttributeProto.TENSOR)
    return None if a is None else a.t


# ----------------------------------------------------------------------------- shape inference


def _has_data(t: TensorProto) -> bool:
    return bool(
        t.raw_data or t.float_data or t.int32_data or t.int64_data or t.double_data or t.uint64_data or t.string_data
    ) or any(d == 0 for d in t.dims)


def _dims_of(tp: onnx.TypeProto) -> Shape | None:
    if not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tp.tensor_type.shape.dim]


def _concrete_input(vi: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """Copy of a graph input with symbolic / unknown dims fixed to 1 (batch = 1)."""
    out = onnx.ValueInfoProto()
    out.CopyFrom(vi)
    if out.type.HasField("tensor_type") and out.type.tensor_type.HasField("shape"):
        for d in out.type.tensor_type.shape.dim:
            if not (d.HasField("dim_value") and d.dim_value > 0):
                d.Clear()
                d.dim_value = 1
    return out


def _toposorted(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes in dependency order (ONNX requires it, but a hand-edited graph may not comply)."""
    nodes = list(graph.node)
    produced = {o for n in nodes for o in n.output if o}
    ready: set[str] = set()
    for n in nodes:  # the common case: already sorted, one linear pass
        if any(i and i in produced and i not in ready for i in n.input):
            break
        ready.update(o for o in n.output if o)
    else:
        return nodes
    # Kahn's algorithm, stable with respect to the file order
    waiting_on: dict[int, int] = {}
    consumers: dict[str, list[int]] = defaultdict(list)
    for idx, n in enumerate(nodes):
        deps = {i for i in n.input if i and i in produced}
        waiting_on[idx] = len(deps)
        for i in deps:
            consumers[i].append(idx)
    queue = deque(idx for idx, count in waiting_on.items() if count == 0)
    order: list[int] = []
    while queue:
        idx = queue.popleft()
        order.append(idx)
        for o in nodes[idx].output:
            for c in consumers.get(o, []):
                waiting_on[c] -= 1
                if waiting_on[c] == 0:
                    queue.append(c)
    seen = set(order)
    return [nodes[i] for i in order] + [n for i, n in enumerate(nodes) if i not in seen]  # cycles: as found


def _light_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Same graph with bulky weights turned into typed inputs, so shape inference is cheap.

    Small and integer tensors keep their data (Reshape targets, Resize scales, ...):
    data propagation needs them.  Skeleton zoo graphs (dims without data) work too.
    """
    g = model.graph
    init_names = {t.name for t in g.initializer} | {s.values.name for s in g.sparse_initializer}
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    lg = light.graph
    lg.name = g.name
    lg.node.extend(_toposorted(g))
    lg.output.extend(g.output)
    lg.input.extend(_concrete_input(vi) for vi in g.input if vi.name not in init_names)
    for t in g.initializer:
        keep = (
            t.data_location != TensorProto.EXTERNAL
            and _has_data(t)
            and (numel(list(t.dims)) <= 64 or (t.data_type not in FLOAT_TYPES and numel(list(t.dims)) <= 100_000))
        )
        if keep:
            lg.initializer.append(t)
        else:
            lg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    for s in g.sparse_initializer:
        lg.input.append(helper.make_tensor_value_info(s.values.name, s.values.data_type, list(s.dims)))
    return light


def _infer(light: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:
        return light


def _ort_infer(light: onnx.ModelProto) -> onnx.ModelProto | None:
    """ONNX Runtime's symbolic inference knows com.microsoft ops; used only when ONNX's is blind."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred: onnx.ModelProto = SymbolicShapeInference.infer_shapes(light, auto_merge=True, guess_output_rank=True)
        return inferred
    except Exception:
        return None


def _collect_shapes(model: onnx.ModelProto, shapes: dict[str, Shape], types: dict[str, int]) -> None:
    for g in iter_graphs(model.graph):
        for vi in [*g.input, *g.output, *g.value_info]:
            dims = _dims_of(vi.type)
            if dims is not None and vi.name not in shapes:
                shapes[vi.name] = dims
            if vi.type.HasField("tensor_type"):
                types.setdefault(vi.name, vi.type.tensor_type.elem_type)


# ----------------------------------------------------------------------------- the index


class GraphIndex:
    """Indexes of the (inferred) graph the counting rules need: shapes, element types, constant
    tensors, every node of every subgraph, producers and consumers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        light = _light_model(model)
        inferred = _infer(light)
        self.shapes: dict[str, Shape] = {}
        self.types: dict[str, int] = {}
        _collect_shapes(inferred, self.shapes, self.types)
        self.const: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self._add_initializers(model)
        for g in iter_graphs(inferred.graph):
            self.nodes.extend(g.node)
        if any(n.op_type in MAC_OPS and not self.shapes.get(n.output[0]) for n in self.nodes):
            ort = _ort_infer(light)
            if ort is not None:
                _collect_shapes(ort, self.shapes, self.types)
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self._index_nodes()
        self.graph_outputs = [o.name for o in model.graph.output]

    def _add_initializers(self, model: onnx.ModelProto) -> None:
        for g in iter_graphs(model.graph):
            for t in g.initializer:
                self.shapes[t.name] = list(t.dims)
                self.types[t.name] = t.data_type
                self.const.add(t.name)
            for s in g.sparse_initializer:
                self.shapes[s.values.name] = list(s.dims)
                self.const.add(s.values.name)

    def _index_nodes(self) -> None:
        for n in self.nodes:
            for o in n.output:
                if o:
                    self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
            if n.op_type == "Constant":
                self.const.update(o for o in n.output if o)
                value = attr_tensor(n, "value")
                if value is not None:
                    self.shapes.setdefault(n.output[0], list(value.dims))
                    self.types.setdefault(n.output[0], value.data_type)
            elif n.op_type not in NONDETERMINISTIC and n.input and all(i == "" or i in self.const for i in n.input):
                # folded at load time by every runtime: e.g. DequantizeLinear(int8 weight)
                self.const.update(o for o in n.output if o)

    def shape(self, name: str) -> Shape | None:
        return self.shapes.get(name) if name else None

    def is_const(self, name: str) -> bool:
        return name in self.const
