"""The layer rules: which MAC nodes are FC layers, separable-conv halves, attention cores or
heads (the rules are in the package docstring)."""

from __future__ import annotations

from collections import deque

import onnx

from services.common.features.graph import GraphIndex, Shape, attr_int, attr_ints, attr_str, inp
from services.common.features.ops import GEMM_OPS, MAC_OPS, MATMUL_OPS, PASS_THROUGH, SCORE_PATH


def is_linear(g: GraphIndex, n: onnx.NodeProto) -> bool:
    """A Gemm, or a MatMul-family node with one constant operand: a dense layer."""
    if n.op_type in GEMM_OPS:
        return True
    if n.op_type == "MatMulNBits":
        return True
    if n.op_type in MATMUL_OPS:
        ia, ib = MATMUL_OPS[n.op_type]
        operands = [inp(n, ia), inp(n, ib)]
        return any(g.is_const(o) for o in operands if o)
    return False


def _conv_kernel(g: GraphIndex, n: onnx.NodeProto) -> Shape | None:
    w = g.shape(inp(n, 3 if n.op_type == "QLinearConv" else 1))
    return w[2:] if w and len(w) >= 3 else None


def is_fc_like_conv(g: GraphIndex, n: onnx.NodeProto) -> bool:
    """Kernel spans the whole unpadded input and the output is 1x1: a dense layer."""
    if attr_int(n, "group", 1) != 1:
        return False
    x, y, kernel = g.shape(inp(n, 0)), g.shape(n.output[0]), _conv_kernel(g, n)
    if not x or not y or kernel is None or len(x) < 3:
        return False
    padded = any(attr_ints(n, "pads"))
    if padded or attr_str(n, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return False
    spatial_in, spatial_out = x[2:], y[2:]
    return (
        len(spatial_in) == len(kernel)
        and all(a is not None and a == k for a, k in zip(spatial_in, kernel, strict=True))
        and all(o == 1 for o in spatial_out)
    )


def is_depthwise(g: GraphIndex, n: onnx.NodeProto) -> bool:
    w = g.shape(inp(n, 3 if n.op_type == "QLinearConv" else 1))
    return attr_int(n, "group", 1) > 1 and w is not None and len(w) >= 2 and w[1] == 1


def is_pointwise(g: GraphIndex, n: onnx.NodeProto) -> bool:
    kernel = _conv_kernel(g, n)
    return attr_int(n, "group", 1) == 1 and kernel is not None and all(k == 1 for k in kernel)


def reached_layers(g: GraphIndex, start: str) -> list[onnx.NodeProto]:
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
                found[c.name or str(id(c))] = c
            elif c.op_type in PASS_THROUGH:
                queue.extend(o for o in c.output if o)
    return list(found.values())


def is_attention_core(g: GraphIndex, softmax: onnx.NodeProto) -> bool:
    """Softmax over a MatMul of two activations, maybe through scaling / masking / reshapes."""
    queue = deque([(inp(softmax, 0), 0)])
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
            return not any(g.is_const(o) for o in (inp(p, ia), inp(p, ib)) if o)
        if p.op_type in SCORE_PATH:
            queue.extend((i, depth + 1) for i in p.input)
    return False


def head_nodes(g: GraphIndex) -> set[int]:
    """MAC nodes (by ``id``) from which a graph output is reachable without crossing another MAC node."""
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
