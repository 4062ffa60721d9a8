"""MobileBERT (Sun et al. 2020, Table 1, "MobileBERT" column), sequence length 128.

24 bottlenecked Transformer layers (inter-block width 512, intra-block 128, 4 heads,
4 stacked feed-forward networks of width 512, NoNorm = element-wise affine), a 128-wide
embedding widened to 512 by the trigram "embedding transformation", and a SQuAD-style span
head (start / end logits).  ~24.6 M parameters (the paper: 25.3 M).

Counted by the extractor as 0 CONV, 1 FC (the span head) and 24 RC (one attention core per
Transformer layer; the projections and feed-forward MatMuls are parts of those layers).

Input: ``input_ids`` int64 [1, 128], token ids < 30522 (the uncased BERT vocabulary).
"""

from __future__ import annotations

import math

import numpy as np

from services.common.zoo.layers import GraphBuilder

SEQ = 128
VOCAB = 30522
EMBED = 128
INTER = 512  # inter-block hidden size
INTRA = 128  # intra-block (bottleneck) size
HEADS = 4
HEAD_DIM = INTRA // HEADS
FFN = 512
N_FFN = 4
LAYERS = 24

# Random weights and 5 residual Adds per layer x 24 layers: NoNorm's scale is set so the
# residual stream keeps unit-order variance instead of growing geometrically.
_BRANCH_STD = 0.02
_RES_SCALE = 1.0 / math.sqrt(1.0 + 0.25)


def _nonorm(b: GraphBuilder, x: str, width: int, scale: float = 1.0) -> str:
    """MobileBERT's NoNorm: gamma * x + beta."""
    gamma = b.param("nonorm_g", [width], 0.01, mean=scale)
    beta = b.param("nonorm_b", [width], 0.01)
    return b.node("Add", [b.node("Mul", [x, gamma]), beta])


def _heads(b: GraphBuilder, x: str, transpose_k: bool = False) -> str:
    """[1, S, H*D] -> [1, H, S, D] (or [1, H, D, S] for keys)."""
    r = b.reshape(x, [1, SEQ, HEADS, HEAD_DIM])
    return b.transpose(r, [0, 2, 3, 1] if transpose_k else [0, 2, 1, 3])


def _layer(b: GraphBuilder, x: str) -> str:
    # bottlenecks: one for the residual / FFN path, one shared by queries and keys
    t = _nonorm(b, b.linear(x, INTER, INTRA), INTRA)
    s = _nonorm(b, b.linear(x, INTER, INTRA), INTRA)
    q = _heads(b, b.linear(s, INTRA, INTRA))
    k = _heads(b, b.linear(s, INTRA, INTRA), transpose_k=True)
    v = _heads(b, b.linear(x, INTER, INTRA))
    scores = b.node("Mul", [b.node("MatMul", [q, k]), b.const(1.0 / math.sqrt(HEAD_DIM))])
    ctx = b.node("MatMul", [b.node("Softmax", [scores], axis=-1), v])
    ctx = b.reshape(b.transpose(ctx, [0, 2, 1, 3]), [1, SEQ, INTRA])
    h = _nonorm(b, b.node("Add", [t, b.linear(ctx, INTRA, INTRA, std=_BRANCH_STD)]), INTRA, _RES_SCALE)
    for _ in range(N_FFN):
        f = b.linear(h, INTRA, FFN, act="relu")
        f = b.linear(f, FFN, INTRA, std=_BRANCH_STD)
        h = _nonorm(b, b.node("Add", [h, f]), INTRA, _RES_SCALE)
    out = b.linear(h, INTRA, INTER, std=_BRANCH_STD)
    return _nonorm(b, b.node("Add", [x, out]), INTER, _RES_SCALE)


def mobilebert(b: GraphBuilder) -> None:
    ids = b.add_input("input_ids", "int64", [1, SEQ])
    table = b.param("word_embeddings", [VOCAB, EMBED], 1.0)
    e = b.node("Gather", [table, ids], axis=0)  # [1, S, 128]
    # trigram embedding: [e(t+1), e(t), e(t-1)] concatenated -> 384, then dense to 512
    zero = b.const(np.zeros((1, 1, EMBED), np.float32))

    def tokens(start: int, end: int) -> str:
        return b.node("Slice", [e, b.const([start], "int64"), b.const([end], "int64"), b.const([1], "int64")])

    nxt = b.concat([tokens(1, SEQ), zero], 1)
    prv = b.concat([zero, tokens(0, SEQ - 1)], 1)
    tri = b.concat([nxt, e, prv], axis=2)
    h = b.linear(tri, 3 * EMBED, INTER)
    h = b.node("Add", [h, b.param("position_embeddings", [1, SEQ, INTER], 0.1)])
    h = _nonorm(b, h, INTER)
    for _ in range(LAYERS):
        h = _layer(b, h)
    logits = b.linear(h, INTER, 2, std=math.sqrt(1.0 / INTER))  # SQuAD span head
    start, end = b.split(logits, [1, 1], axis=2)
    b.add_output(b.node("Squeeze", [start, b.const([2], "int64")]), "start_logits", "float32", [1, SEQ])
    b.add_output(b.node("Squeeze", [end, b.const([2], "int64")]), "end_logits", "float32", [1, SEQ])
