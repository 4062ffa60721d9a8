"""Tiny ONNX graph builder shared by the zoo architectures.

Weights are drawn from ``numpy.random.default_rng(seed)`` (He-scaled normals).  A deep
network with random weights and no normalisation maps every input to nearly the same output
(ReLU-family activations add an input-independent mean at every layer, which swamps the
signal after a few dozen layers).  Deployed graphs have batch-norm folded into each conv's
weight and bias, so the builder does the same with data: while the graph is built, a probe
batch of synthetic images (N(0, 1) pixels, a fixed seed) is pushed through it node by node
with ONNX Runtime, and every conv / dense layer gets a BN folded in with the probe's
statistics - each output channel scaled to unit variance (times ``gain``) and its mean set
to ``BN_BETA`` (0 for layers without activation).  Outputs are then finite, well-scaled,
input-dependent, and robust enough to quantisation noise for INT8 to track FP32.  (The
probe runs on CPU kernels, so weights are reproducible bit-for-bit on one machine; across
CPU types they may differ in the last float bits.)

In skeleton mode (``weights=False``) every weight becomes a shape-only initializer (dims,
no data): the graph is node-for-node identical to the real one, so
:func:`services.common.features.extract_features` gives the same counts and MACs without
generating or serialising tens of megabytes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# IR 8 is the oldest IR that can carry opset 17: the most portable choice for ORT and TVM.
IR_VERSION = 8

_NP_TO_ONNX = {
    np.dtype("float32"): TensorProto.FLOAT,
    np.dtype("int64"): TensorProto.INT64,
}

Dim = int | str

PROBE_BATCH = 4  # synthetic images pushed through the graph while it is built
# Folded-BN shift of pre-activations (in output std units) for layers followed by an
# activation.  With beta = 0 a deep random ReLU net is chaotic (1 % input noise changes the
# logits by ~15 %), so INT8 rounding noise would scramble its outputs; beta = 1 keeps ~84 %
# of units active, which makes the network well-conditioned while different inputs still
# give clearly different outputs (trained networks are similarly robust).
BN_BETA = 1.0
_SKIP_PROBE = {"Reshape", "Transpose", "Squeeze"}  # shape ops with batch-1 constants: not needed


def _run_node(node: onnx.NodeProto, feeds: dict[str, np.ndarray], consts: list[TensorProto]) -> list[np.ndarray]:
    """Execute one node with ONNX Runtime (used only at build time, on the probe batch)."""
    import onnxruntime as ort

    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output],
        consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


class GraphBuilder:
    """Accumulates nodes/initializers and hands back tensor names, one call per layer."""

    def __init__(self, name: str, seed: int, *, weights: bool = True) -> None:
        self.name = name
        self.weights = weights
        self.rng = np.random.default_rng(seed)
        self._probe_rng = np.random.default_rng(seed + 1)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._init_by_name: dict[str, TensorProto] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._counter: Counter[str] = Counter()
        self._consts: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self.probe: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ naming & basics
    def uid(self, prefix: str) -> str:
        self._counter[prefix] += 1
        return f"{prefix}_{self._counter[prefix]}"

    def add_input(self, name: str, dtype: str, shape: Sequence[Dim]) -> str:
        elem = _NP_TO_ONNX[np.dtype(dtype)]
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        if self.weights and dtype == "float32" and all(isinstance(d, int) for d in shape):
            probe_shape = [PROBE_BATCH, *[int(d) for d in shape[1:]]]
            self.probe[name] = self._probe_rng.standard_normal(probe_shape, dtype=np.float32)
        return name

    def add_output(self, tensor: str, name: str, dtype: str, shape: Sequence[Dim]) -> str:
        """Expose ``tensor`` as graph output ``name`` (through an Identity, so names are stable)."""
        self.node("Identity", [tensor], name=name, outputs=[name])
        self.outputs.append(helper.make_tensor_value_info(name, _NP_TO_ONNX[np.dtype(dtype)], list(shape)))
        return name

    def node(
        self,
        op: str,
        inputs: Sequence[str],
        *,
        name: str | None = None,
        outputs: Sequence[str] | None = None,
        n_out: int = 1,
        **attrs: object,
    ) -> str:
        """Append one node; returns its (first) output name."""
        return self._add(op, inputs, name, outputs, n_out, attrs)[0]

    def node_multi(self, op: str, inputs: Sequence[str], n_out: int, **attrs: object) -> list[str]:
        return self._add(op, inputs, None, None, n_out, attrs)

    def _add(
        self,
        op: str,
        inputs: Sequence[str],
        name: str | None,
        outputs: Sequence[str] | None,
        n_out: int,
        attrs: dict[str, Any],
        probe: bool = True,
    ) -> list[str]:
        node_name = name or self.uid(op.lower())
        outs = (
            list(outputs)
            if outputs is not None
            else [node_name if n_out == 1 else f"{node_name}:{i}" for i in range(n_out)]
        )
        node = helper.make_node(op, list(inputs), outs, name=node_name, **attrs)
        self.nodes.append(node)
        if probe:
            self._probe(node)
        return outs

    def _probe(self, node: onnx.NodeProto) -> None:
        """Run ``node`` on the probe batch when all its activation inputs have probe values."""
        if not self.probe or node.op_type in _SKIP_PROBE:
            return
        feeds: dict[str, np.ndarray] = {}
        consts: list[TensorProto] = []
        for i in node.input:
            if i in self.probe:
                feeds[i] = self.probe[i]
            elif i in self._init_by_name:
                consts.append(self._init_by_name[i])
            elif i:
                return
        if not feeds:
            return
        for o, v in zip(node.output, _run_node(node, feeds, consts), strict=True):
            self.probe[o] = v

    # ------------------------------------------------------------------ tensors
    def param(self, prefix: str, shape: Sequence[int], std: float, mean: float = 0.0) -> str:
        """A trainable tensor: N(mean, std²) in float32, or dims only in skeleton mode."""
        arr = None
        if self.weights:
            arr = self.rng.standard_normal([int(d) for d in shape], dtype=np.float32)
            arr *= np.float32(std)
            if mean:
                arr += np.float32(mean)
        return self._initializer(prefix, shape, arr)

    def _initializer(self, prefix: str, shape: Sequence[int], arr: np.ndarray | None) -> str:
        name = self.uid(prefix)
        if arr is not None:
            t = numpy_helper.from_array(arr.astype(np.float32, copy=False), name)
        else:
            # dims without data: a shape-only placeholder (never saved, never run)
            t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[int(d) for d in shape])
        self.initializers.append(t)
        self._init_by_name[name] = t
        return name

    def const(self, value: np.ndarray | Sequence[float] | Sequence[int] | float | int, dtype: str = "float32") -> str:
        """A small constant (shapes, clip bounds, scales): always materialised, de-duplicated."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.tobytes(), arr.shape)
        if key not in self._consts:
            name = self.uid("const")
            t = numpy_helper.from_array(arr, name)
            self.initializers.append(t)
            self._init_by_name[name] = t
            self._consts[key] = name
        return self._consts[key]

    def _layer(
        self,
        op: str,
        x: str,
        shape: list[int],
        attrs: dict[str, Any],
        gain: float,
        per_channel_std: bool,
        beta: float,
    ) -> str:
        """A conv / dense layer with a batch-norm folded in from the probe batch's statistics."""
        w_name, b_name = self.uid("w" if op == "Conv" else "fc_w"), self.uid("b" if op == "Conv" else "fc_b")
        cout = shape[0]
        if not self.weights:
            w_t = TensorProto(name=w_name, data_type=TensorProto.FLOAT, dims=shape)
            b_t = TensorProto(name=b_name, data_type=TensorProto.FLOAT, dims=[cout])
            self.initializers += [w_t, b_t]
            return self._add(op, [x, w_name, b_name], None, None, 1, attrs, probe=False)[0]
        fan_in = int(np.prod(shape[1:]))
        w = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_in))
        b = np.zeros(cout, np.float32)
        raw = None
        if x in self.probe:
            probe_node = helper.make_node(op, [x, "w", "b"], ["y"], **attrs)
            raw = _run_node(
                probe_node, {x: self.probe[x]}, [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
            )[0]
            axes = tuple(i for i in range(raw.ndim) if i != 1)
            mean = raw.mean(axis=axes, dtype=np.float64)
            centred = raw - mean.reshape(1, -1, *([1] * (raw.ndim - 2)))
            if per_channel_std:
                std = centred.std(axis=axes, dtype=np.float64)
            else:
                std = np.full(cout, centred.std(dtype=np.float64))
            scale = (gain / np.maximum(std, 1e-6)).astype(np.float32)
            w *= scale.reshape(-1, *([1] * (w.ndim - 1)))
            b = (-mean * scale + beta * gain).astype(np.float32)
            raw = (centred * scale.reshape(1, -1, *([1] * (raw.ndim - 2))) + beta * gain).astype(np.float32)
        for n, arr in ((w_name, w), (b_name, b)):
            t = numpy_helper.from_array(arr, n)
            self.initializers.append(t)
            self._init_by_name[n] = t
        y = self._add(op, [x, w_name, b_name], None, None, 1, attrs, probe=False)[0]
        if raw is not None:
            self.probe[y] = raw
        return y

    # ------------------------------------------------------------------ activations
    def act(self, x: str, kind: str | None) -> str:
        if kind is None:
            return x
        if kind == "relu":
            return self.node("Relu", [x])
        if kind == "relu6":
            return self.node("Clip", [x, self.const(0.0), self.const(6.0)])
        if kind == "hswish":
            return self.node("HardSwish", [x])
        if kind == "hsigmoid":
            # MobileNetV3's h-sigmoid = ReLU6(x + 3) / 6
            return self.node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
        if kind == "sigmoid":
            return self.node("Sigmoid", [x])
        raise ValueError(f"unknown activation {kind!r}")

    # ------------------------------------------------------------------ layers
    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int | tuple[int, int],
        *,
        stride: int = 1,
        pad: Literal["same", "valid"] | tuple[int, int, int, int] = "same",
        group: int = 1,
        act: str | None = "relu",
        gain: float = 1.0,
    ) -> str:
        """Conv + bias (batch-norm folded, as in deployed graphs) + activation."""
        kh, kw = (k, k) if isinstance(k, int) else k
        if pad == "same":
            pads = [kh // 2, kw // 2, kh // 2, kw // 2]
        elif pad == "valid":
            pads = [0, 0, 0, 0]
        else:
            pads = list(pad)
        attrs = {"kernel_shape": [kh, kw], "strides": [stride, stride], "pads": pads, "group": group}
        beta = BN_BETA if act else 0.0
        y = self._layer("Conv", x, [cout, cin // group, kh, kw], attrs, gain, per_channel_std=True, beta=beta)
        return self.act(y, act)

    def gemm(self, x: str, cin: int, cout: int, *, act: str | None = None, gain: float = 1.0) -> str:
        """Fully-connected layer on a [N, cin] tensor (Gemm, weight [cout, cin]).

        Few probe samples reach a dense layer, so its BN uses one layer-wide scale."""
        beta = BN_BETA if act else 0.0
        y = self._layer("Gemm", x, [cout, cin], {"transB": 1}, gain, per_channel_std=False, beta=beta)
        return self.act(y, act)

    def linear(self, x: str, cin: int, cout: int, *, std: float | None = None, act: str | None = None) -> str:
        """Per-token projection (MatMul + bias Add) on a [..., cin] tensor."""
        w = self.param("lin_w", [cin, cout], std if std is not None else math.sqrt(1.0 / cin))
        b = self.param("lin_b", [cout], 0.01)
        y = self.node("Add", [self.node("MatMul", [x, w]), b])
        return self.act(y, act)

    # ------------------------------------------------------------------ shape & pooling ops
    def maxpool(self, x: str, k: int, stride: int, pad: int = 0) -> str:
        return self.node("MaxPool", [x], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)

    def avgpool(self, x: str, k: int, stride: int, pad: int = 0) -> str:
        return self.node(
            "AveragePool",
            [x],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
            count_include_pad=0,
        )

    def gap_flat(self, x: str) -> str:
        """Global average pool + flatten to [N, C]."""
        return self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)

    def concat(self, xs: Sequence[str], axis: int) -> str:
        return self.node("Concat", list(xs), axis=axis)

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.node("Reshape", [x, self.const(list(shape), "int64")])

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self.node("Transpose", [x], perm=list(perm))

    def split(self, x: str, sizes: Sequence[int], axis: int) -> list[str]:
        return self.node_multi("Split", [x, self.const(list(sizes), "int64")], len(sizes), axis=axis)

    # ------------------------------------------------------------------ model
    def model(self, doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        m = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="autoscale-mesh-zoo",
            doc_string=doc,
        )
        m.ir_version = IR_VERSION
        return m
