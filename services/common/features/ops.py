"""The op and element-type tables the counting rules read: which ONNX ops carry MACs, which
ones a path may cross, and how many bytes an element takes on the wire."""

from __future__ import annotations

from onnx import TensorProto

from services.core.schemas import Dtype

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
PASS_THROUGH = {
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
SCORE_PATH = PASS_THROUGH | {"Where", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Expand"}

NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}

# Keyed by plain int: a tensor's ``data_type`` / ``elem_type`` field is an int, not the DataType enum.
FLOAT_TYPES: set[int] = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
WIRE_BYTES: dict[int, int] = {
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
SPEC_DTYPES: dict[int, Dtype] = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.INT64: "int64",
    TensorProto.INT32: "int32",
    TensorProto.UINT8: "uint8",
    TensorProto.INT8: "int8",
}
