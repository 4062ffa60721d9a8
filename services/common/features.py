"""Table I's NN features (# CONV / FC / RC layers, MACs) extracted from any ONNX graph.

The paper (Kim & Wu, MICRO 2020, Table III) counts layers "from the TensorFlow NN
implementations".  TensorFlow has layer objects that ONNX does not (SeparableConv2D,
a Dense applied to pooled features, a Transformer layer), so the extractor maps ONNX
nodes back to layers with the rules below.  They are applied identically to the zoo and to
user uploads; every number of Table III is reproduced by them (see tests/test_zoo.py).

Counting rules
--------------
CONV
    Every ``Conv`` / ``ConvInteger`` / ``QLinearConv`` / ``ConvTranspose`` node (plus the
    com.microsoft ``NhwcConv``/``FusedConv``) is one CONV layer, except:

    * depthwise-separable pairs count once: a depthwise conv (``group > 1`` with one
      input channel per group) whose output reaches exactly one pointwise (1x1, group 1)
      conv through element-wise / normalisation / (de)quantisation nodes only is merged with
      it - this is TensorFlow's ``SeparableConv2D`` (and TF-Slim's ``separable_conv2d``),
      one layer in the TF implementation.  MobileNet v1 is then 1 + 13 = 14 and MobileNet v2
      35 layers, exactly Table III's numbers;
    * a conv whose kernel covers its whole, unpadded input and yields a 1x1 output is a
      fully-connected layer written as a convolution (TF-Slim writes every classifier head
      this way) and counts as FC.

FC
    A *linear layer* is a ``Gemm`` (or com.microsoft ``QGemm``), a FC-like conv (above),
    or a ``MatMul``-family node (``MatMul``, ``MatMulInteger``, ``QLinearMatMul``,
    ``FusedMatMul``, ``MatMulIntegerToFloat``, ``DynamicQuantizeMatMul``, ``MatMulNBits``,
    2-operand ``Einsum``) with one constant operand (an initializer, a ``Constant`` or
    anything computed only from those, e.g. ``DequantizeLinear(int8 weight)``).  Every
    linear layer is one FC layer, except that in a graph containing attention (below)
    a linear layer applied per token (output rank >= 3) belongs to the attention block it
    sits in - embedding projections, Q/K/V/output projections and feed-forward sublayers are
    parts of a Transformer layer, not separate layers - unless it is a *head*: a linear
    layer from which a graph output is reachable without crossing another MAC node.
    MatMuls between two activations (attention scores) contribute MACs but are not layers.

RC
    Every ``LSTM`` / ``GRU`` / ``RNN`` node (and com.microsoft ``DynamicQuantizeLSTM``) is one
    RC layer, every fused attention node (com.microsoft ``Attention``,
    ``MultiHeadAttention``, ``GroupQueryAttention``, ``PackedAttention``, ai.onnx
    ``Attention``) is one, and so is every *attention core*: a ``Softmax`` fed - through
    element-wise / reshape ops only - by a MatMul of two activations (Q·Kᵀ).  Heads computed
    in one batched MatMul count once, so one Transformer layer = one RC layer (MobileBERT: 24).

MACs
    Conv: output elements x (C_in/group x kernel); ConvTranspose: input elements x
    (C_out/group x kernel); Gemm / MatMul (batched, broadcast): output elements x K;
    LSTM / GRU / RNN: seq x batch x directions x gates·H x (input + H) - the gate
    matrix-vector products over the whole sequence; fused attention: projections (if any)
    + Q·Kᵀ + P·V.  Element-wise ops, pooling and normalisation are not counted.
    Symbolic / unknown dims (the batch) are taken as 1.  Control-flow sub-graphs are walked
    once (a Loop's trip count is unknown).

params counts the elements of every initializer / ``Constant`` tensor except INT64/BOOL
ones (shapes, indices) and scalars.  input_bytes / output_bytes are the bytes of the graph
inputs / outputs as sent on the wire, FP32-equivalent: float tensors count 4 bytes per
element (an FP16 variant still takes float32 I/O), int64 8, int32 4, 8-bit types 1.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto, helper

from services.core.errors import AutoScaleError
from services.core.schemas import ErrorDetail, ModelFeatures, TensorSpec

DEFAULT_MAX_BYTES = 200 * 1024 * 1024

# ----------------------------------------------------------------------------- errors


class ModelValidationError(AutoScaleError, ValueError):
    """A model upload that cannot be served; ``field`` names the offending request field."""

    status = 422
    code = "invalid_model"

    def __init__(self, message: str, field: str | None = "file") -> None:
        super().__init__(message, field=field or "file")

    def detail(self, code: str | None = None) -> ErrorDetail:
        return ErrorDetail(code=code or self.code, message=self.message, field=self.field)


class ModelTooLarge(ModelValidationError):
    """An upload over the configured byte limit."""

    status = 413


# ----------------------------------------------------------------------------- op tables

CONV_OPS = {"Conv", "ConvInteger", "QLinearConv", "NhwcConv", "FusedConv"}
CONV_T_OPS = {"ConvTranspose"}
GEMM_OPS = {"Gemm", "QGemm"}
# op -> indices of its two data operands
MATMUL_OPS: dict[str, tuple[int, int]] = {
    "MatMul": (0, 1),
    "MatMulInteger": (0, 1),
    "QLinearMatMul": (0, 3),
    "FusedMatMul": (0, 1),
    "MatMulIntegerToFloat": (0, 1),
    "DynamicQuantizeMatMul": (0, 1),
    "MatMulNBits": (0, 1),
    "Einsum": (0, 1),
}
RNN_OPS = {"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"}
ATTENTION_OPS = {
    "Attention",
    "MultiHeadAttention",
    "GroupQueryAttention",
    "PackedAttention",
    "PackedMultiHeadAttention",
    "DecoderMaskedMultiHeadAttention",
    "DecoderMaskedSelfAttention",
}
MAC_OPS = CONV_OPS | CONV_T_OPS | GEMM_OPS | set(MATMUL_OPS) | RNN_OPS | ATTENTION_OPS

# Ops a depthwise output may cross on its way to "its" pointwise conv (activation, BN,
# squeeze-excite scaling, QDQ pairs).  Pooling is deliberately absent: it ends a path.
_PASS_THROUGH = {
    "Relu",
    "Clip",
    "LeakyRelu",
    "PRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Selu",
    "Celu",
    "Mish",
    "Gelu",
    "FastGelu",
    "Softplus",
    "BatchNormalization",
    "Identity",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Max",
    "Min",
    "QuantizeLinear",
    "DequantizeLinear",
    "Cast",
    "Dropout",
}
# Ops allowed between Q·Kᵀ and the Softmax of an attention core (scaling, masking, reshapes).
_SCORE_PATH = _PASS_THROUGH | {"Where", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Expand"}

_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
_WIRE_BYTES = {
    TensorProto.INT64: 8,
    TensorProto.UINT64: 8,
    TensorProto.INT32: 4,
    TensorProto.UINT32: 4,
    TensorProto.INT16: 2,
    TensorProto.UINT16: 2,
    TensorProto.INT8: 1,
    TensorProto.UINT8: 1,
    TensorProto.BOOL: 1,
}
_SPEC_DTYPES = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.INT64: "int64",
    TensorProto.INT32: "int32",
    TensorProto.UINT8: "uint8",
    TensorProto.INT8: "int8",
}

Shape = list[int | None]

# ----------------------------------------------------------------------------- analysis types


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


# ----------------------------------------------------------------------------- helpers


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph of its If/Loop/Scan nodes, recursively."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_graphs(g)


def _has_data(t: TensorProto) -> bool:
    return bool(
        t.raw_data or t.float_data or t.int32_data or t.int64_data or t.double_data or t.uint64_data or t.string_data
    ) or any(d == 0 for d in t.dims)


def _numel(dims: Shape | list[int]) -> int:
    return math.prod(1 if d is None else int(d) for d in dims)


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
            and (_numel(list(t.dims)) <= 64 or (t.data_type not in _FLOAT_TYPES and _numel(list(t.dims)) <= 100_000))
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

        return SymbolicShapeInference.infer_shapes(light, auto_merge=True, guess_output_rank=True)
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


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


# ----------------------------------------------------------------------------- the analysis


class _Graph:
    """Indexes of the (inferred) graph the counting rules need."""

    def __init__(self, model: onnx.ModelProto) -> None:
        light = _light_model(model)
        inferred = _infer(light)
        self.shapes: dict[str, Shape] = {}
        self.types: dict[str, int] = {}
        _collect_shapes(inferred, self.shapes, self.types)
        self.const: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        for g in iter_graphs(model.graph):
            for t in g.initializer:
                self.shapes[t.name] = list(t.dims)
                self.types[t.name] = t.data_type
                self.const.add(t.name)
            for s in g.sparse_initializer:
                self.shapes[s.values.name] = list(s.dims)
                self.const.add(s.values.name)
        for g in iter_graphs(inferred.graph):
            self.nodes.extend(g.node)
        if any(n.op_type in MAC_OPS and not self.shapes.get(n.output[0]) for n in self.nodes):
            ort = _ort_infer(light)
            if ort is not None:
                _collect_shapes(ort, self.shapes, self.types)
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.nodes:
            for o in n.output:
                if o:
                    self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
            if n.op_type == "Constant":
                self.const.update(o for o in n.output if o)
                value = _attr(n, "value")
                if isinstance(value, TensorProto):
                    self.shapes.setdefault(n.output[0], list(value.dims))
                    self.types.setdefault(n.output[0], value.data_type)
            elif n.op_type not in _NONDETERMINISTIC and n.input and all(i == "" or i in self.const for i in n.input):
                # folded at load time by every runtime: e.g. DequantizeLinear(int8 weight)
                self.const.update(o for o in n.output if o)
        self.graph_outputs = [o.name for o in model.graph.output]

    def shape(self, name: str) -> Shape | None:
        return self.shapes.get(name) if name else None

    def is_const(self, name: str) -> bool:
        return name in self.const


def _inp(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _conv_macs(g: _Graph, n: onnx.NodeProto) -> int:
    w = g.shape(_inp(n, 3 if n.op_type == "QLinearConv" else 1))
    if n.op_type in CONV_T_OPS:
        x = g.shape(_inp(n, 0))
        return _numel(x) * _numel(w[1:]) if x and w else 0
    y = g.shape(n.output[0])
    return _numel(y) * _numel(w[1:]) if y and w else 0


def _einsum_macs(g: _Graph, n: onnx.NodeProto) -> int:
    raw = _attr(n, "equation", b"")
    eq = raw.decode() if isinstance(raw, bytes) else str(raw)
    lhs = eq.replace(" ", "").split("->")[0].split(",")
    if len(lhs) != len(n.input) or any("..." in t for t in lhs):
        return 0
    sizes: dict[str, int] = {}
    for term, name in zip(lhs, n.input, strict=True):
        s = g.shape(name)
        if s is None or len(s) != len(term):
            return 0
        for letter, d in zip(term, s, strict=True):
            sizes[letter] = max(sizes.get(letter, 1), d or 1)
    return math.prod(sizes.values())


def _matmul_macs(g: _Graph, n: onnx.NodeProto) -> int:
    if n.op_type == "Einsum":
        return _einsum_macs(g, n)
    y = g.shape(n.output[0])
    if y is None:
        return 0
    if n.op_type == "MatMulNBits":
        return _numel(y) * int(_attr(n, "K", 0))  # type: ignore[arg-type]
    a = g.shape(_inp(n, MATMUL_OPS[n.op_type][0]))
    if not a:
        return 0
    k = a[-2] if (n.op_type == "FusedMatMul" and _attr(n, "transA", 0) and len(a) >= 2) else a[-1]
    return _numel(y) * (k or 1)


def _gemm_macs(g: _Graph, n: onnx.NodeProto) -> int:
    a, y = g.shape(_inp(n, 0)), g.shape(n.output[0])
    if not a or not y or len(a) != 2:
        return 0
    k = a[0] if _attr(n, "transA", 0) else a[1]
    return _numel(y) * (k or 1)


def _rnn_macs(g: _Graph, n: onnx.NodeProto) -> int:
    x, w, r = g.shape(_inp(n, 0)), g.shape(_inp(n, 1)), g.shape(_inp(n, 2))
    if not x or not w or not r or len(x) != 3 or len(w) != 3:
        return 0
    layout = int(_attr(n, "layout", 0))  # type: ignore[arg-type]
    seq, batch = (x[0], x[1]) if layout == 0 else (x[1], x[0])
    dirs, gates_h, inp = w
    hidden = r[2]
    return (seq or 1) * (batch or 1) * (dirs or 1) * (gates_h or 1) * ((inp or 1) + (hidden or 1))


def _attention_macs(g: _Graph, n: onnx.NodeProto) -> int:
    q = g.shape(_inp(n, 0))
    if not q:
        return 0
    if n.op_type == "Attention" and n.domain == "com.microsoft":
        w = g.shape(_inp(n, 1))
        if not w or len(q) != 3:
            return 0
        b, s, hin = (d or 1 for d in q)
        sizes = _attr(n, "qkv_hidden_sizes") or [(w[1] or 3) // 3] * 3
        hq, _hk, hv = (int(v) for v in sizes)  # type: ignore[union-attr]
        return b * s * hin * (w[1] or 1) + b * s * s * hq + b * s * s * hv
    if n.op_type == "Attention":  # ai.onnx (opset 23): Q, K, V already projected
        k, v = g.shape(_inp(n, 1)), g.shape(_inp(n, 2))
        if len(q) == 4 and k and v and len(k) == 4 and len(v) == 4:
            b, hq, s, d = (x or 1 for x in q)
            return b * hq * s * (k[2] or 1) * (d + (v[3] or 1))
        if len(q) == 3 and k and v:
            b, s, dq = (x or 1 for x in q)
            length = k[1] or 1
            hq = int(_attr(n, "q_num_heads", 1) or 1)  # type: ignore[arg-type]
            hkv = int(_attr(n, "kv_num_heads", 1) or 1)  # type: ignore[arg-type]
            dv = (v[-1] or 1) // hkv * hq
            return b * s * length * (dq + dv)
        return 0
    # MultiHeadAttention / GroupQueryAttention / Packed*: no projections inside
    b, s, d = (x or 1 for x in q[:3]) if len(q) >= 3 else (1, q[0] or 1, q[-1] or 1)
    k = g.shape(_inp(n, 1))
    length = (k[1] or s) if k and len(k) == 3 else s
    return 2 * b * s * length * d


def _is_linear(g: _Graph, n: onnx.NodeProto) -> bool:
    if n.op_type in GEMM_OPS:
        return True
    if n.op_type == "MatMulNBits":
        return True
    if n.op_type in MATMUL_OPS:
        ia, ib = MATMUL_OPS[n.op_type]
        operands = [_inp(n, ia), _inp(n, ib)]
        return any(g.is_const(o) for o in operands if o)
    return False


def _conv_kernel(g: _Graph, n: onnx.NodeProto) -> Shape | None:
    w = g.shape(_inp(n, 3 if n.op_type == "QLinearConv" else 1))
    return w[2:] if w and len(w) >= 3 else None


def _is_fc_like_conv(g: _Graph, n: onnx.NodeProto) -> bool:
    """Kernel spans the whole unpadded input and the output is 1x1: a dense layer."""
    if int(_attr(n, "group", 1)) != 1:  # type: ignore[arg-type]
        return False
    x, y, kernel = g.shape(_inp(n, 0)), g.shape(n.output[0]), _conv_kernel(g, n)
    if not x or not y or kernel is None or len(x) < 3:
        return False
    pads = _attr(n, "pads") or []
    auto_pad = _attr(n, "auto_pad", b"NOTSET")
    padded = any(int(p) for p in pads)  # type: ignore[union-attr]
    if padded or auto_pad not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        return False
    spatial_in, spatial_out = x[2:], y[2:]
    return (
        len(spatial_in) == len(kernel)
        and all(a is not None and a == k for a, k in zip(spatial_in, kernel, strict=True))
        and all(o == 1 for o in spatial_out)
    )


def _is_depthwise(g: _Graph, n: onnx.NodeProto) -> bool:
    w = g.shape(_inp(n, 3 if n.op_type == "QLinearConv" else 1))
    return int(_attr(n, "group", 1)) > 1 and bool(w) and len(w) >= 2 and w[1] == 1  # type: ignore[arg-type]


def _is_pointwise(g: _Graph, n: onnx.NodeProto) -> bool:
    kernel = _conv_kernel(g, n)
    group = int(_attr(n, "group", 1))  # type: ignore[arg-type]
    return group == 1 and kernel is not None and all(k == 1 for k in kernel)


def _reached_layers(g: _Graph, start: str) -> list[onnx.NodeProto]:
    """MAC nodes reachable from ``start`` through pass-through ops only."""
    seen: set[str] = set()
    found: dict[str, onnx.NodeProto] = {}
    queue = deque([start])
    while queue:
        t = queue.popleft()
        for c in g.consumers.get(t, []):
            if c.name in seen and c.name:
                continue
            seen.add(c.name)
            if c.op_type in MAC_OPS:
                found[c.name or id(c).__str__()] = c
            elif c.op_type in _PASS_THROUGH:
                queue.extend(o for o in c.output if o)
    return list(found.values())


def _is_attention_core(g: _Graph, softmax: onnx.NodeProto) -> bool:
    """Softmax over a MatMul of two activations, maybe through scaling / masking / reshapes."""
    queue = deque([(_inp(softmax, 0), 0)])
    seen: set[str] = set()
    while queue:
        t, depth = queue.popleft()
        if not t or t in seen or depth > 8 or g.is_const(t):
            continue
        seen.add(t)
        p = g.producer.get(t)
        if p is None:
            continue
        if p.op_type in MATMUL_OPS:
            ia, ib = MATMUL_OPS[p.op_type]
            return not any(g.is_const(o) for o in (_inp(p, ia), _inp(p, ib)) if o)
        if p.op_type in _SCORE_PATH:
            queue.extend((i, depth + 1) for i in p.input)
    return False


def _head_nodes(g: _Graph) -> set[int]:
    """MAC nodes from which a graph output is reachable without crossing another MAC node."""
    heads: set[int] = set()
    seen: set[str] = set()
    queue = deque(g.graph_outputs)
    while queue:
        t = queue.popleft()
        if t in seen:
            continue
        seen.add(t)
        p = g.producer.get(t)
        if p is None:
            continue
        if p.op_type in MAC_OPS:
            heads.add(id(p))
        else:
            queue.extend(i for i in p.input if i)
    return heads


def _batch_size(g: _Graph, model: onnx.ModelProto) -> int:
    """Leading dim of the first graph input (symbolic -> 1): the number of samples."""
    init_names = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name not in init_names:
            shape = g.shape(vi.name)
            return int(shape[0] or 1) if shape else 1
    return 1


def _wire_bytes(g: _Graph, names: list[str]) -> int:
    total = 0
    for name in names:
        shape = g.shape(name)
        elem = g.types.get(name, TensorProto.FLOAT)
        per = 4 if elem in _FLOAT_TYPES else _WIRE_BYTES.get(elem, 4)
        total += (_numel(shape) if shape is not None else 1) * per
    return total


def _params(model: onnx.ModelProto) -> int:
    total = 0
    for graph in iter_graphs(model.graph):
        tensors = list(graph.initializer)
        for n in graph.node:
            if n.op_type == "Constant":
                v = _attr(n, "value")
                if isinstance(v, TensorProto):
                    tensors.append(v)
        for t in tensors:
            if t.data_type in (TensorProto.INT64, TensorProto.BOOL, TensorProto.STRING):
                continue
            n_el = _numel(list(t.dims))
            if n_el > 1:
                total += n_el
        for s in graph.sparse_initializer:
            total += _numel(list(s.values.dims))
    return total


def analyze(model: onnx.ModelProto) -> GraphAnalysis:
    """Apply the counting rules of this module; per-node detail in ``layers``."""
    g = _Graph(model)
    out = GraphAnalysis()
    infos: dict[int, LayerInfo] = {}
    linear: list[onnx.NodeProto] = []
    convs: list[onnx.NodeProto] = []
    has_attention = False

    for n in g.nodes:
        op = n.op_type
        if op in CONV_OPS or op in CONV_T_OPS:
            macs = _conv_macs(g, n)
            if op in CONV_OPS and _is_fc_like_conv(g, n):
                infos[id(n)] = LayerInfo(n.name, op, "fc", macs, "conv over its whole input = dense layer")
                linear.append(n)
            else:
                infos[id(n)] = LayerInfo(n.name, op, "conv", macs)
                convs.append(n)
        elif op in GEMM_OPS or op in MATMUL_OPS:
            macs = _gemm_macs(g, n) if op in GEMM_OPS else _matmul_macs(g, n)
            if _is_linear(g, n):
                infos[id(n)] = LayerInfo(n.name, op, "fc", macs)
                linear.append(n)
            else:
                infos[id(n)] = LayerInfo(n.name, op, "mac", macs, "activation x activation")
        elif op in RNN_OPS:
            infos[id(n)] = LayerInfo(n.name, op, "rc", _rnn_macs(g, n))
        elif op in ATTENTION_OPS:
            infos[id(n)] = LayerInfo(n.name, op, "rc", _attention_macs(g, n))
            has_attention = True
        elif op == "Softmax" and _is_attention_core(g, n):
            infos[id(n)] = LayerInfo(n.name, op, "rc", 0, "attention core (softmax over Q·Kᵀ)")
            has_attention = True

    # depthwise-separable pairs: the pointwise half is folded into its depthwise conv
    merged: set[int] = set()
    for n in convs:
        if n.op_type not in CONV_OPS or not _is_depthwise(g, n):
            continue
        reached = _reached_layers(g, n.output[0])
        if len(reached) == 1:
            pw = reached[0]
            if id(pw) in infos and infos[id(pw)].kind == "conv" and id(pw) not in merged and _is_pointwise(g, pw):
                merged.add(id(pw))
                infos[id(pw)].kind = "merged"
                infos[id(pw)].note = f"pointwise half of separable conv {n.name}"

    # per-token linear layers inside attention blocks belong to the RC layer
    if has_attention:
        heads = _head_nodes(g)
        batch = _batch_size(g, model)
        for n in linear:
            y = g.shape(n.output[0])
            # [B, S, H] - or [B*S, H] as TF's Dense/tensordot exports it - is per token
            per_token = y is not None and (len(y) >= 3 or (len(y) == 2 and (y[0] or 1) > batch))
            if per_token and id(n) not in heads:
                infos[id(n)].kind = "rc-part"
                infos[id(n)].note = "projection inside an attention block"

    for info in infos.values():
        out.macs += info.macs
        if info.kind == "conv":
            out.conv += 1
        elif info.kind == "fc":
            out.fc += 1
        elif info.kind == "rc":
            out.rc += 1
    out.layers = list(infos.values())
    out.params = _params(model)
    init_names = {t.name for t in model.graph.initializer}
    out.input_bytes = _wire_bytes(g, [i.name for i in model.graph.input if i.name not in init_names])
    out.output_bytes = _wire_bytes(g, g.graph_outputs)
    return out


def extract_features(model: onnx.ModelProto) -> ModelFeatures:
    """Table I's NN-related features of ``model`` (see the module docstring for the rules)."""
    return analyze(model).features()


# ----------------------------------------------------------------------------- I/O specs


def _spec(vi: onnx.ValueInfoProto, role: str) -> TensorSpec:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or tt.elem_type not in _SPEC_DTYPES:
        kind = TensorProto.DataType.Name(tt.elem_type) if vi.type.HasField("tensor_type") else "non-tensor"
        raise ModelValidationError(
            f"{role} {vi.name!r} has type {kind}; supported: {', '.join(sorted(set(_SPEC_DTYPES.values())))}"
        )
    if not tt.HasField("shape"):
        raise ModelValidationError(f"{role} {vi.name!r} has no declared shape (rank is required)")
    shape: list[int | str] = []
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        else:
            shape.append(d.dim_param or ("batch" if i == 0 else f"d{i}"))
    return TensorSpec(name=vi.name, dtype=_SPEC_DTYPES[tt.elem_type], shape=shape)  # type: ignore[arg-type]


def io_specs(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Declared graph inputs (initializers excluded) and outputs as wire ``TensorSpec``s."""
    init_names = {t.name for t in model.graph.initializer}
    inputs = [_spec(vi, "input") for vi in model.graph.input if vi.name not in init_names]
    outputs = [_spec(vi, "output") for vi in model.graph.output]
    return inputs, outputs


# ----------------------------------------------------------------------------- validation

_EXTERNAL = TensorProto.EXTERNAL


def _external_tensors(model: onnx.ModelProto) -> list[str]:
    names: list[str] = []
    for graph in iter_graphs(model.graph):
        names += [t.name for t in graph.initializer if t.data_location == _EXTERNAL]
        names += [s.values.name for s in graph.sparse_initializer if s.values.data_location == _EXTERNAL]
        for n in graph.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR and a.t.data_location == _EXTERNAL:
                    names.append(a.t.name or n.name)
    return names


def load_and_validate(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> onnx.ModelProto:
    """Parse and check an uploaded ONNX file; raises :class:`ModelValidationError`.

    Rejected: empty or oversized payloads, bytes that are not an ONNX ModelProto, tensors
    stored as external data (a single self-contained file is the upload unit, and external
    paths would let an upload point at files on the server), graphs failing
    ``onnx.checker``, graphs without inputs/outputs, and I/O dtypes the wire cannot carry.
    """
    size = len(data)
    if size == 0:
        raise ModelValidationError("the uploaded model is empty")
    if size > max_bytes:
        raise ModelTooLarge(f"the model is {size} bytes, over the {max_bytes}-byte limit")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:
        raise ModelValidationError(f"not an ONNX model: protobuf decoding failed ({exc})") from exc
    if not model.HasField("graph") or not model.graph.node:
        raise ModelValidationError("not an ONNX model: no graph with nodes")
    external = _external_tensors(model)
    if external:
        shown = ", ".join(external[:5]) + (" ..." if len(external) > 5 else "")
        raise ModelValidationError(
            f"tensors stored as external data are not supported ({shown}); embed the weights in the .onnx file"
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        msg = re.sub(r"\s+", " ", str(exc)).strip()
        raise ModelValidationError(f"onnx.checker rejected the model: {msg[:500]}") from exc
    init_names = {t.name for t in model.graph.initializer}
    if not [i for i in model.graph.input if i.name not in init_names]:
        raise ModelValidationError("the graph has no inputs")
    if not model.graph.output:
        raise ModelValidationError("the graph has no outputs")
    io_specs(model)  # raises on unsupported I/O dtypes
    return model
