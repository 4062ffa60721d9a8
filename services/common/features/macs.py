"""Multiply-accumulates per MAC-carrying node (the rules are in the package docstring)."""

from __future__ import annotations

import math

import onnx

from services.common.features.graph import GraphIndex, attr_int, attr_ints, attr_str, inp, numel
from services.common.features.ops import CONV_T_OPS, MATMUL_OPS


def conv_macs(g: GraphIndex, n: onnx.NodeProto) -> int:
    w = g.shape(inp(n, 3 if n.op_type == "QLinearConv" else 1))
    if n.op_type in CONV_T_OPS:
        x = g.shape(inp(n, 0))
        return numel(x) * numel(w[1:]) if x and w else 0
    y = g.shape(n.output[0])
    return numel(y) * numel(w[1:]) if y and w else 0


def _einsum_macs(g: GraphIndex, n: onnx.NodeProto) -> int:
    eq = attr_str(n, "equation", "")
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


def matmul_macs(g: GraphIndex, n: onnx.NodeProto) -> int:
    if n.op_type == "Einsum":
        return _einsum_macs(g, n)
    y = g.shape(n.output[0])
    if y is None:
        return 0
    if n.op_type == "MatMulNBits":
        return numel(y) * attr_int(n, "K", 0)
    a = g.shape(inp(n, MATMUL_OPS[n.op_type][0]))
    if not a:
        return 0
    k = a[-2] if (n.op_type == "FusedMatMul" and attr_int(n, "transA", 0) and len(a) >= 2) else a[-1]
    return numel(y) * (k or 1)


def gemm_macs(g: GraphIndex, n: onnx.NodeProto) -> int:
    a, y = g.shape(inp(n, 0)), g.shape(n.output[0])
    if not a or not y or len(a) != 2:
        return 0
    k = a[0] if attr_int(n, "transA", 0) else a[1]
    return numel(y) * (k or 1)


def rnn_macs(g: GraphIndex, n: onnx.NodeProto) -> int:
    x, w, r = g.shape(inp(n, 0)), g.shape(inp(n, 1)), g.shape(inp(n, 2))
    if not x or not w or not r or len(x) != 3 or len(w) != 3:
        return 0
    seq, batch = (x[0], x[1]) if attr_int(n, "layout", 0) == 0 else (x[1], x[0])
    dirs, gates_h, inputs = w
    hidden = r[2]
    return (seq or 1) * (batch or 1) * (dirs or 1) * (gates_h or 1) * ((inputs or 1) + (hidden or 1))


def attention_macs(g: GraphIndex, n: onnx.NodeProto) -> int:
    q = g.shape(inp(n, 0))
    if not q:
        return 0
    if n.op_type == "Attention" and n.domain == "com.microsoft":
        w = g.shape(inp(n, 1))
        if not w or len(q) != 3:
            return 0
        b, s, hin = (d or 1 for d in q)
        hq, _hk, hv = attr_ints(n, "qkv_hidden_sizes") or [(w[1] or 3) // 3] * 3
        return b * s * hin * (w[1] or 1) + b * s * s * hq + b * s * s * hv
    if n.op_type == "Attention":
        return _onnx_attention_macs(g, n, q)
    # MultiHeadAttention / GroupQueryAttention / Packed*: no projections inside
    b, s, d = (x or 1 for x in q[:3]) if len(q) >= 3 else (1, q[0] or 1, q[-1] or 1)
    k = g.shape(inp(n, 1))
    length = (k[1] or s) if k and len(k) == 3 else s
    return 2 * b * s * length * d


def _onnx_attention_macs(g: GraphIndex, n: onnx.NodeProto, q: list[int | None]) -> int:
    """ai.onnx Attention (opset 23): Q, K and V come in already projected."""
    k, v = g.shape(inp(n, 1)), g.shape(inp(n, 2))
    if len(q) == 4 and k and v and len(k) == 4 and len(v) == 4:
        b, hq, s, d = (x or 1 for x in q)
        return b * hq * s * (k[2] or 1) * (d + (v[3] or 1))
    if len(q) == 3 and k and v:
        b, s, dq = (x or 1 for x in q)
        length = k[1] or 1
        hq = attr_int(n, "q_num_heads", 1) or 1
        hkv = attr_int(n, "kv_num_heads", 1) or 1
        dv = (v[-1] or 1) // hkv * hq
        return b * s * length * (dq + dv)
    return 0
