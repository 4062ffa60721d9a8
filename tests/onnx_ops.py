"""Small ONNX graphs for the engine tests: a graph helper and one graph per op family TVM must import.

``IMPORTABLE`` names the op-family cases of :func:`op_case` that both engines run (tests/test_engines.py).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def graph_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: list[onnx.TensorProto],
    opset: int = 17,
    domains: tuple[str, ...] = (),
) -> onnx.ModelProto:
    """A model of one graph, at IR 8 and the given opset (plus version 1 of each custom domain)."""
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=ops)
    model.ir_version = 8  # what onnxruntime 1.17+ and TVM's frontend both read
    return model


def f32(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Standard-normal float32 weights."""
    return rng.standard_normal(shape).astype(np.float32)


def op_case(name: str) -> onnx.ModelProto:
    """One small graph per op family the zoo (or a typical exporter) emits.

    Long because it is one table, an entry per op family; the weights come from one generator in table order.
    """
    rng = np.random.default_rng(7)
    vi, F, init = helper.make_tensor_value_info, TensorProto.FLOAT, numpy_helper.from_array
    x4, y4 = vi("x", F, [1, 4, 8, 8]), vi("y", F, None)
    x3, y3 = vi("x", F, [2, 5, 8]), vi("y", F, None)
    node = helper.make_node
    cases: dict[str, tuple[list, list, list, list, int]] = {
        "MatMul": ([node("MatMul", ["x", "w"], ["y"])], [x3], [y3], [init(f32(rng, 8, 6), "w")], 17),
        "Gemm": (
            [node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
            [vi("x", F, [2, 8])],
            [y3],
            [init(f32(rng, 6, 8), "w"), init(f32(rng, 6), "b")],
            17,
        ),
        "Softmax": ([node("Softmax", ["x"], ["y"], axis=-1)], [x3], [y3], [], 17),
        "LayerNormalization": (
            [node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1)],
            [x3],
            [y3],
            [init(f32(rng, 8), "s"), init(f32(rng, 8), "b")],
            17,
        ),
        "Gelu": ([node("Gelu", ["x"], ["y"])], [x3], [y3], [], 20),
        "Erf+Tanh+Sigmoid": (
            [node("Erf", ["x"], ["a"]), node("Tanh", ["a"], ["b"]), node("Sigmoid", ["b"], ["y"])],
            [x3],
            [y3],
            [],
            17,
        ),
        "HardSwish+HardSigmoid": (
            [node("HardSwish", ["x"], ["a"]), node("HardSigmoid", ["a"], ["y"])],
            [x4],
            [y4],
            [],
            17,
        ),
        "GlobalAveragePool": ([node("GlobalAveragePool", ["x"], ["y"])], [x4], [y4], [], 17),
        "MaxPool+AveragePool": (
            [
                node("MaxPool", ["x"], ["a"], kernel_shape=[2, 2], strides=[2, 2]),
                node("AveragePool", ["a"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
            ],
            [x4],
            [y4],
            [],
            17,
        ),
        "BatchNormalization": (
            [node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
            [x4],
            [y4],
            [
                init(f32(rng, 4), "s"),
                init(f32(rng, 4), "b"),
                init(f32(rng, 4), "m"),
                init(np.abs(f32(rng, 4)) + 0.5, "v"),
            ],
            17,
        ),
        "Clip(ReLU6)": (
            [node("Clip", ["x", "lo", "hi"], ["y"])],
            [x4],
            [y4],
            [init(np.array(0, np.float32), "lo"), init(np.array(6, np.float32), "hi")],
            17,
        ),
        "Concat+Split": (
            [node("Concat", ["x", "x"], ["c"], axis=1), node("Split", ["c"], ["y", "z"], axis=1, num_outputs=2)],
            [x4],
            [y4, vi("z", F, None)],
            [],
            18,
        ),
        "Resize(nearest)": (
            [node("Resize", ["x", "", "sc"], ["y"], mode="nearest")],
            [x4],
            [y4],
            [init(np.array([1, 1, 2, 2], np.float32), "sc")],
            17,
        ),
        "Resize(linear)": (
            [node("Resize", ["x", "", "sc"], ["y"], mode="linear")],
            [x4],
            [y4],
            [init(np.array([1, 1, 2, 2], np.float32), "sc")],
            17,
        ),
        "Reshape+Transpose+ReduceMean": (
            [
                node("Reshape", ["x", "sh"], ["r"]),
                node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
                node("ReduceMean", ["t", "ax"], ["y"], keepdims=1),
            ],
            [x3],
            [y3],
            [init(np.array([2, 8, 5], np.int64), "sh"), init(np.array([-1], np.int64), "ax")],
            18,
        ),
        "Gather(embedding)": (
            [node("Gather", ["e", "ids"], ["y"])],
            [vi("ids", TensorProto.INT64, [1, 6])],
            [y3],
            [init(f32(rng, 30, 8), "e")],
            17,
        ),
        "QuantizeLinear+DequantizeLinear": (
            [node("QuantizeLinear", ["x", "sc", "zp"], ["q"]), node("DequantizeLinear", ["q", "sc", "zp"], ["y"])],
            [x3],
            [y3],
            [init(np.array(0.05, np.float32), "sc"), init(np.array(128, np.uint8), "zp")],
            17,
        ),
        "fp16 Conv (fp32 I/O)": (
            [
                node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
                node("Conv", ["h", "w"], ["c"], pads=[1, 1, 1, 1]),
                node("Cast", ["c"], ["y"], to=F),
            ],
            [x4],
            [y4],
            [init((f32(rng, 4, 4, 3, 3) * 0.2).astype(np.float16), "w")],
            17,
        ),
    }
    nodes, inputs, outputs, inits, opset = cases[name]
    return graph_model(nodes, inputs, outputs, inits, opset)


IMPORTABLE = [
    "MatMul",
    "Gemm",
    "Softmax",
    "LayerNormalization",
    "Gelu",
    "Erf+Tanh+Sigmoid",
    "HardSwish+HardSigmoid",
    "GlobalAveragePool",
    "MaxPool+AveragePool",
    "BatchNormalization",
    "Clip(ReLU6)",
    "Concat+Split",
    "Resize(nearest)",
    "Resize(linear)",
    "Reshape+Transpose+ReduceMean",
    "Gather(embedding)",
    "QuantizeLinear+DequantizeLinear",
    "fp16 Conv (fp32 I/O)",
]


def with_output_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fill the output value-infos that op_case leaves untyped (the checker wants element types)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model
