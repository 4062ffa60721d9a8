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

Modules: ``ops`` (the op and element-type tables), ``graph`` (the inferred graph's index),
``macs`` and ``layers`` (the MAC and layer rules above), ``analysis`` (the counting),
``validation`` (what an upload must be).
"""

from services.common.features.analysis import GraphAnalysis, LayerInfo, analyze, extract_features
from services.common.features.graph import iter_graphs
from services.common.features.validation import (
    DEFAULT_MAX_BYTES,
    ModelTooLarge,
    ModelValidationError,
    io_specs,
    load_and_validate,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "GraphAnalysis",
    "LayerInfo",
    "ModelTooLarge",
    "ModelValidationError",
    "analyze",
    "extract_features",
    "io_specs",
    "iter_graphs",
    "load_and_validate",
]
