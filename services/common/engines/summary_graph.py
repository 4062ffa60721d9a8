"""Output summaries computed inside the ONNX graph, so that the engine returns a few scalars.

A runner asked for summaries (``output_format: "summary"``, what load tests use) answers ``/run``
with a summary of each output (``services.common.tensors.summarize``: shape, mean, std, checksum,
top-k softmax probabilities of a classifier row) instead of the tensor.
Computed in numpy, right after the inference has evicted the CPU caches, that costs a quarter of a
millisecond; as extra nodes at the end of the graph it costs a few microseconds of C++ and the
engine no longer copies the full outputs out. ``add_summaries`` rewrites a model that way;
``read_summaries`` turns the engine's small outputs back into ``OutputSummary`` objects equal to
what ``summarize`` gives (to rounding: same float64 arithmetic, other summation order).

Per output ``y`` (any numeric dtype, any shape): ``Shape(y)``; ``ReduceSum`` and ``ReduceMean``
over every axis of ``Cast(y, double)``; the population std from ``ReduceMean((y - mean)^2)``; and
for a possible classifier row (``[1 or N, C]``, C static > 1) ``TopK(Softmax(y), K)``, K an input
with a default (an initializer of the same name), used when the row turns out to be ``[1, C]``. The
original outputs stay outputs: ``run`` still returns them. Every node form used exists from opset 11
on (reductions without ``axes`` reduce over all axes in every opset; ``TopK`` takes K as an input
and puts the lower index first on ties since opset 11).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from services.common.tensors import nonfinite_summary
from services.core.schemas import OutputSummary

TOP_K_FEED = "__autoscale_top_k"  # + "_<output index>"
MIN_OPSET = 11
_PREFIX = "__autoscale_summary"
_NUMERIC = {
    TensorProto.FLOAT,
    TensorProto.DOUBLE,
    TensorProto.FLOAT16,
    TensorProto.BFLOAT16,
    TensorProto.INT8,
    TensorProto.UINT8,
    TensorProto.INT16,
    TensorProto.UINT16,
    TensorProto.INT32,
    TensorProto.UINT32,
    TensorProto.INT64,
    TensorProto.UINT64,
    TensorProto.BOOL,
}


@dataclass(frozen=True, slots=True)
class SummarySpec:
    """Where one original output's summary lands among the rewritten graph's outputs."""

    name: str  # the original output
    dtype: str  # its numpy dtype name
    classes: int  # C of a [1, C] classifier row; 0 otherwise
    first: int  # index of its first value among ``summary_outputs`` (shape, sum, mean, std[, probs, indices])


def _dims(vi: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def add_summaries(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[SummarySpec]] | None:
    """A copy of ``model`` that also outputs the summaries of its outputs; None if some output
    cannot be summarised in the graph (then summarise in numpy)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET or not model.graph.output:
        return None
    for o in model.graph.output:
        if not o.type.HasField("tensor_type") or o.type.tensor_type.elem_type not in _NUMERIC:
            return None
        if not o.type.tensor_type.HasField("shape"):
            return None  # unknown rank
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    originals = list(g.output)
    specs: list[SummarySpec] = []
    for i, o in enumerate(originals):
        p = f"{_PREFIX}_{i}"
        elem = o.type.tensor_type.elem_type
        dims = _dims(o)
        classes = dims[1] if len(dims) == 2 and dims[0] in (1, None) and (dims[1] or 0) > 1 else 0
        first = 4 * i + 2 * sum(1 for s in specs if s.classes)  # index among the summary outputs
        specs.append(SummarySpec(o.name, np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name, classes or 0, first))
        g.node.extend(
            [
                helper.make_node("Shape", [o.name], [f"{p}_shape"], name=f"{p}_shape"),
                helper.make_node("Cast", [o.name], [f"{p}_d"], to=TensorProto.DOUBLE, name=f"{p}_cast"),
                helper.make_node("ReduceSum", [f"{p}_d"], [f"{p}_sum"], keepdims=0, name=f"{p}_sum"),
                helper.make_node("ReduceMean", [f"{p}_d"], [f"{p}_mean"], keepdims=0, name=f"{p}_mean"),
                helper.make_node("Sub", [f"{p}_d", f"{p}_mean"], [f"{p}_dev"], name=f"{p}_dev"),
                helper.make_node("Mul", [f"{p}_dev", f"{p}_dev"], [f"{p}_sq"], name=f"{p}_sq"),
                helper.make_node("ReduceMean", [f"{p}_sq"], [f"{p}_var"], keepdims=0, name=f"{p}_var"),
                helper.make_node("Sqrt", [f"{p}_var"], [f"{p}_std"], name=f"{p}_std"),
            ]
        )
        g.output.extend(
            [
                helper.make_tensor_value_info(f"{p}_shape", TensorProto.INT64, [len(dims)]),
                helper.make_tensor_value_info(f"{p}_sum", TensorProto.DOUBLE, []),
                helper.make_tensor_value_info(f"{p}_mean", TensorProto.DOUBLE, []),
                helper.make_tensor_value_info(f"{p}_std", TensorProto.DOUBLE, []),
            ]
        )
        if classes:
            k = f"{TOP_K_FEED}_{i}"
            g.input.append(helper.make_tensor_value_info(k, TensorProto.INT64, [1]))
            g.initializer.append(helper.make_tensor(k, TensorProto.INT64, [1], [1]))  # default K
            g.node.extend(
                [
                    # A [1, C] row: Softmax over the last axis reads the same in every opset.
                    helper.make_node("Softmax", [f"{p}_d"], [f"{p}_prob"], axis=1, name=f"{p}_softmax"),
                    helper.make_node(
                        "TopK",
                        [f"{p}_prob", k],
                        [f"{p}_topv", f"{p}_topi"],
                        axis=-1,
                        largest=1,
                        sorted=1,
                        name=f"{p}_topk",
                    ),
                ]
            )
            g.output.extend(
                [
                    helper.make_tensor_value_info(f"{p}_topv", TensorProto.DOUBLE, [dims[0] or "n", "k"]),
                    helper.make_tensor_value_info(f"{p}_topi", TensorProto.INT64, [dims[0] or "n", "k"]),
                ]
            )
    return out, specs


def summary_outputs(specs: list[SummarySpec]) -> list[str]:
    names = []
    for i, s in enumerate(specs):
        p = f"{_PREFIX}_{i}"
        names += [f"{p}_shape", f"{p}_sum", f"{p}_mean", f"{p}_std"] + ([f"{p}_topv", f"{p}_topi"] if s.classes else [])
    return names


def top_k_feeds(specs: list[SummarySpec], top_k: int) -> dict[str, np.ndarray]:
    """K for each classifier output: what was asked, within its class count (TopK needs K <= C)."""
    return {
        f"{TOP_K_FEED}_{i}": np.array([max(1, min(top_k, s.classes))], dtype=np.int64)
        for i, s in enumerate(specs)
        if s.classes
    }


def read_summaries(specs: list[SummarySpec], values: list[np.ndarray], top_k: int) -> list[OutputSummary]:
    """``OutputSummary`` objects from the rewritten graph's outputs (the values ``summarize`` gives)."""
    out = []
    for s in specs:
        shape = values[s.first].tolist()
        n = int(np.prod(shape)) if shape else 1
        total, mean, std = (float(values[s.first + j]) for j in (1, 2, 3))
        if n == 0:  # an empty tensor: what summarize reports (reductions over nothing give NaN)
            total = mean = std = 0.0
        if not math.isfinite(total):  # NaN or +-Infinity in the output: what summarize reports
            out.append(nonfinite_summary(s.name, shape, s.dtype))
            continue
        top = None
        if s.classes and top_k and shape[0] == 1:  # a classifier row, as summarize decides
            probs = values[s.first + 4][0].tolist()[:top_k]
            idx = values[s.first + 5][0].tolist()[:top_k]
            top = [(i, round(v, 6)) for i, v in zip(idx, probs, strict=True)]
        out.append(
            OutputSummary.model_construct(  # values made here: no validation pass
                name=s.name,
                shape=shape,
                dtype=s.dtype,
                top_k=top,
                mean=mean,
                std=std,
                checksum=total,
            )
        )
    return out
