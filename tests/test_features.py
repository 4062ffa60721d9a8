"""Feature extractor on graphs whose counts and MACs are known by construction."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from services.common.features import ModelValidationError, analyze, extract_features, io_specs, load_and_validate

F = TensorProto.FLOAT


def _w(name: str, *shape: int) -> TensorProto:
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(shape).astype(np.float32), name)


def _i64(name: str, values: list[int]) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _mm(a: str, w: str, o: str) -> onnx.NodeProto:
    return helper.make_node("MatMul", [a, w], [o])


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: list[TensorProto],
    opset: int = 17,
    domains: tuple[str, ...] = (),
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "t", inputs, outputs, inits)
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    m = helper.make_model(graph, opset_imports=ops)
    m.ir_version = 8
    return m


def small_cnn(batch: int | str = 1) -> onnx.ModelProto:
    """conv3x3 3->8, depthwise 3x3 + pointwise 8->16 (one separable layer), GAP, FC 16->10."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["cd"], ["rd"]),
        helper.make_node("Conv", ["rd", "wp", "bp"], ["cp"], kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["cp"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    inits = [
        _w("w1", 8, 3, 3, 3),
        _w("b1", 8),
        _w("wd", 8, 1, 3, 3),
        _w("bd", 8),
        _w("wp", 16, 8, 1, 1),
        _w("bp", 16),
        _w("wf", 10, 16),
        _w("bf", 10),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", F, [batch, 10])],
        inits,
    )


# conv1: 8x8x8 outputs x 3*3*3; depthwise: 8x8x8 x 9; pointwise: 16x8x8 x 8; FC: 10 x 16
SMALL_CNN_MACS = 8 * 64 * 27 + 8 * 64 * 9 + 16 * 64 * 8 + 10 * 16
SMALL_CNN_PARAMS = 216 + 8 + 72 + 8 + 128 + 16 + 160 + 10


def test_small_cnn_counts_and_exact_macs() -> None:
    f = extract_features(small_cnn())
    assert (f.conv, f.fc, f.rc) == (2, 1, 0)  # separable pair counts once
    assert f.macs == SMALL_CNN_MACS == 26784
    assert f.params == SMALL_CNN_PARAMS
    assert f.input_bytes == 3 * 8 * 8 * 4
    assert f.output_bytes == 10 * 4


def test_symbolic_batch_is_taken_as_one() -> None:
    assert extract_features(small_cnn("N")) == extract_features(small_cnn(1))


def test_depthwise_not_merged_when_it_feeds_two_layers() -> None:
    m = small_cnn()
    # a second pointwise conv reading the depthwise output: no longer a separable pair
    m.graph.node.append(helper.make_node("Conv", ["rd", "wp", "bp"], ["cp2"], kernel_shape=[1, 1]))
    m.graph.node.append(helper.make_node("Add", ["cp", "cp2"], ["s"]))
    gap = next(n for n in m.graph.node if n.op_type == "GlobalAveragePool")
    gap.input[0] = "s"
    f = extract_features(m)
    assert f.conv == 4  # conv1, depthwise, two pointwise
    assert f.macs == SMALL_CNN_MACS + 16 * 64 * 8


def test_fc_written_as_conv_over_whole_input() -> None:
    """TF-Slim heads: a 1x1 conv on a pooled 1x1 map (or a kxk VALID conv on a kxk map) is FC."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3]),  # 3x3 over 3x3 -> 1x1
        helper.make_node("Conv", ["c1", "w2", "b2"], ["y"], kernel_shape=[1, 1]),  # 1x1 over 1x1
    ]
    m = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [1, 4, 3, 3])],
        [helper.make_tensor_value_info("y", F, [1, 5, 1, 1])],
        [_w("w1", 6, 4, 3, 3), _w("b1", 6), _w("w2", 5, 6, 1, 1), _w("b2", 5)],
    )
    f = extract_features(m)
    assert (f.conv, f.fc, f.rc) == (0, 2, 0)
    assert f.macs == 6 * 36 + 5 * 6


def rnn_model() -> onnx.ModelProto:
    """LSTM(I=10, H=20) -> GRU(I=20, H=8, bidirectional) -> RNN(I=16, H=4) -> FC 4->3, seq 5."""
    nodes = [
        helper.make_node("LSTM", ["x", "lw", "lr", "lb"], ["ly"], hidden_size=20),
        helper.make_node("Squeeze", ["ly", "ax1"], ["ls"]),  # [5, 1, 20]
        helper.make_node("GRU", ["ls", "gw", "gr"], ["gy"], hidden_size=8, direction="bidirectional"),
        helper.make_node("Transpose", ["gy"], ["gt"], perm=[0, 2, 1, 3]),  # [5, 1, 2, 8]
        helper.make_node("Reshape", ["gt", "shape_rnn"], ["gs"]),  # [5, 1, 16]
        helper.make_node("RNN", ["gs", "rw", "rr"], ["ry", "rh"], hidden_size=4),
        helper.make_node("Reshape", ["rh", "shape_fc"], ["h2"]),  # [1, 4]
        helper.make_node("Gemm", ["h2", "fw", "fb"], ["y"], transB=1),
    ]
    inits = [
        _w("lw", 1, 80, 10),
        _w("lr", 1, 80, 20),
        _w("lb", 1, 160),
        _i64("ax1", [1]),
        _w("gw", 2, 24, 20),
        _w("gr", 2, 24, 8),
        _i64("shape_rnn", [5, 1, 16]),
        _w("rw", 1, 4, 16),
        _w("rr", 1, 4, 4),
        _i64("shape_fc", [1, 4]),
        _w("fw", 3, 4),
        _w("fb", 3),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [5, 1, 10])],
        [helper.make_tensor_value_info("y", F, [1, 3])],
        inits,
    )


def test_recurrent_layers_count_gate_macs_over_the_sequence() -> None:
    f = extract_features(rnn_model())
    assert (f.conv, f.fc, f.rc) == (0, 1, 3)
    lstm = 5 * 1 * 1 * (4 * 20) * (10 + 20)
    gru = 5 * 1 * 2 * (3 * 8) * (20 + 8)
    rnn = 5 * 1 * 1 * 4 * (16 + 4)
    assert f.macs == lstm + gru + rnn + 3 * 4 == 19132
    assert f.input_bytes == 5 * 10 * 4


def attention_model(pooled_head: bool = True, symbolic: bool = False) -> onnx.ModelProto:
    """One Transformer layer on [1, 6, 8]: Q/K/V/O projections, softmax(QKᵀ/√d)V, FFN 8-16-8."""
    s, d = 6, 8
    nodes = [
        _mm("x", "wq", "q"),
        _mm("x", "wk", "k"),
        _mm("x", "wv", "v"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        _mm("q", "kt", "scores"),
        helper.make_node("Div", ["scores", "sqrt_d"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["p"], axis=-1),
        _mm("p", "v", "ctx"),
        _mm("ctx", "wo", "o"),
        helper.make_node("Add", ["x", "o"], ["h"]),
        _mm("h", "w1", "f1"),
        helper.make_node("Relu", ["f1"], ["f1r"]),
        _mm("f1r", "w2", "f2"),
        helper.make_node("Add", ["h", "f2"], ["h2"]),
    ]
    inits = [_w(n, d, d) for n in ("wq", "wk", "wv", "wo")] + [_w("w1", d, 16), _w("w2", 16, d)]
    inits.append(numpy_helper.from_array(np.asarray(np.sqrt(d), np.float32), "sqrt_d"))
    if pooled_head:
        nodes += [
            helper.make_node("ReduceMean", ["h2", "ax"], ["pooled"], keepdims=0),
            helper.make_node("Gemm", ["pooled", "wh", "bh"], ["y"], transB=1),
        ]
        inits += [_i64("ax", [1]), _w("wh", 2, d), _w("bh", 2)]
        out = helper.make_tensor_value_info("y", F, [1, 2])
    else:  # SQuAD-style per-token span head
        nodes += [_mm("h2", "wh", "y")]
        inits += [_w("wh", d, 2)]
        out = helper.make_tensor_value_info("y", F, [1, s, 2])
    shape = ["batch" if symbolic else 1, s, d]
    return _model(nodes, [helper.make_tensor_value_info("x", F, shape)], [out], inits)


ATTN_MACS = 4 * 6 * 8 * 8 + 2 * 6 * 6 * 8 + 6 * 8 * 16 + 6 * 16 * 8  # projections, QKᵀ + PV, FFN


@pytest.mark.parametrize("pooled", [True, False])
def test_attention_block_is_one_rc_layer(pooled: bool) -> None:
    f = extract_features(attention_model(pooled_head=pooled))
    # projections and FFN belong to the Transformer layer; only the head is FC
    assert (f.conv, f.fc, f.rc) == (0, 1, 1)
    assert f.macs == ATTN_MACS + (2 * 8 if pooled else 6 * 8 * 2)
    kinds = sorted(layer.kind for layer in analyze(attention_model(pooled)).layers)
    assert kinds.count("mac") == 2 and kinds.count("rc-part") == 6


def test_attention_on_flattened_tokens() -> None:
    """TF exports Dense on [B, S, H] as Reshape to [B*S, H] + 2-D MatMul: still one block."""
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["x2"]),  # [6, 8]
        _mm("x2", "wq", "q"),
        _mm("x2", "wk", "k"),
        _mm("x2", "wv", "v"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[1, 0]),
        _mm("q", "kt", "scores"),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
        _mm("p", "v", "ctx"),
        _mm("ctx", "wo", "o"),
        helper.make_node("ReduceMean", ["o", "ax0"], ["pooled"], keepdims=1),  # [1, 8]
        helper.make_node("Gemm", ["pooled", "wh", "bh"], ["y"], transB=1),
    ]
    inits = [_i64("flat", [6, 8]), _i64("ax0", [0]), _w("wh", 2, 8), _w("bh", 2)]
    inits += [_w(n, 8, 8) for n in ("wq", "wk", "wv", "wo")]
    m = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [1, 6, 8])],
        [helper.make_tensor_value_info("y", F, [1, 2])],
        inits,
    )
    f = extract_features(m)
    assert (f.conv, f.fc, f.rc) == (0, 1, 1)
    assert f.macs == 4 * 6 * 8 * 8 + 2 * 6 * 6 * 8 + 2 * 8


def test_attention_with_symbolic_batch() -> None:
    assert extract_features(attention_model(symbolic=True)).macs == ATTN_MACS + 16


def test_fused_attention_op() -> None:
    """com.microsoft Attention: projections + scores + context, one RC layer."""
    nodes = [helper.make_node("Attention", ["x", "w", "b"], ["y"], domain="com.microsoft", num_heads=2)]
    m = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [1, 6, 8])],
        [helper.make_tensor_value_info("y", F, [1, 6, 8])],
        [_w("w", 8, 24), _w("b", 24)],
        domains=("com.microsoft",),
    )
    f = extract_features(m)
    assert (f.conv, f.fc, f.rc) == (0, 0, 1)
    assert f.macs == 6 * 8 * 24 + 6 * 6 * 8 + 6 * 6 * 8


def test_graph_outside_the_zoo() -> None:
    """ConvTranspose, a batched activation x activation MatMul and a per-timestep dense layer."""
    nodes = [
        helper.make_node("ConvTranspose", ["x", "wt"], ["up"], kernel_shape=[2, 2], strides=[2, 2]),  # [1,2,6,6]
        helper.make_node("Reshape", ["up", "s1"], ["a"]),  # [2, 6, 6]
        helper.make_node("MatMul", ["a", "a"], ["aa"]),  # batched: [2,6,6] x [2,6,6]
        helper.make_node("MatMul", ["aa", "wd"], ["y"]),  # dense on the last axis: 6 -> 4
    ]
    inits = [_w("wt", 4, 2, 2, 2), _i64("s1", [2, 6, 6]), _w("wd", 6, 4)]
    m = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [1, 4, 3, 3])],
        [helper.make_tensor_value_info("y", F, [2, 6, 4])],
        inits,
    )
    f = extract_features(m)
    assert (f.conv, f.fc, f.rc) == (1, 1, 0)  # no attention in the graph: the rank-3 dense is FC
    assert f.macs == (4 * 9) * (2 * 4) + 2 * 6 * 6 * 6 + 2 * 6 * 4 * 6
    assert f.output_bytes == 2 * 6 * 4 * 4


def test_int64_inputs_count_eight_bytes() -> None:
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"]),
        helper.make_node("ReduceMean", ["e", "ax"], ["y"], keepdims=0),
    ]
    m = _model(
        nodes,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 128])],
        [helper.make_tensor_value_info("y", F, [1, 16])],
        [_w("emb", 100, 16), _i64("ax", [1])],
    )
    f = extract_features(m)
    assert f.input_bytes == 128 * 8 and f.output_bytes == 16 * 4 and f.macs == 0
    assert f.params == 1600
    assert io_specs(m)[0][0].dtype == "int64"


# ----------------------------------------------------------------------------- validation


def test_load_and_validate_accepts_a_valid_model() -> None:
    m = load_and_validate(small_cnn().SerializeToString())
    assert extract_features(m).macs == SMALL_CNN_MACS


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not a protobuf \xff\xfe\x00\x01" * 10, onnx.ModelProto().SerializeToString()],
)
def test_load_and_validate_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ModelValidationError) as err:
        load_and_validate(data)
    assert err.value.field == "file" and err.value.message


def test_load_and_validate_rejects_oversized() -> None:
    data = small_cnn().SerializeToString()
    with pytest.raises(ModelValidationError, match="limit"):
        load_and_validate(data, max_bytes=len(data) - 1)


def test_load_and_validate_rejects_external_data() -> None:
    m = small_cnn()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../../etc/passwd")
    with pytest.raises(ModelValidationError, match="external"):
        load_and_validate(m.SerializeToString())


def test_load_and_validate_rejects_checker_failures() -> None:
    m = small_cnn()
    m.graph.node[1].input[0] = "does_not_exist"
    with pytest.raises(ModelValidationError, match="checker"):
        load_and_validate(m.SerializeToString())


def test_validation_error_detail() -> None:
    err = ModelValidationError("bad name", field="name")
    assert err.detail().model_dump() == {"code": "invalid_model", "message": "bad name", "field": "name"}
