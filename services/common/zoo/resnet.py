"""ResNet-50 v1 (He et al. 2016, Table 1): 1 stem + 16 bottlenecks x 3 + 4 projections = 53 CONV.

Stride sits on the first 1x1 of a stage, as in the original paper (3.8 G multiply-adds).
"""

from __future__ import annotations

from services.common.zoo.layers import GraphBuilder
from services.common.zoo.mobilenet import Feat, conv_f, out_side

STAGES: tuple[tuple[int, int, int], ...] = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


def bottleneck(b: GraphBuilder, f: Feat, width: int, stride: int) -> Feat:
    cout = width * 4
    h = conv_f(b, f, width, 1, stride, act="relu")
    h = conv_f(b, h, width, 3, 1, act="relu")
    # the residual branch ends small (cf. zero-init of the last BN gamma) so that 16 stacked
    # Adds keep activations well-scaled with random weights
    h = conv_f(b, h, cout, 1, 1, act=None, gain=0.3)
    shortcut = conv_f(b, f, cout, 1, stride, act=None) if (stride != 1 or f.c != cout) else f
    return Feat(b.node("Relu", [b.node("Add", [shortcut.t, h.t])]), cout, h.h)


def resnet50(b: GraphBuilder) -> None:
    x = b.add_input("input", "float32", [1, 3, 224, 224])
    f = conv_f(b, Feat(x, 3, 224), 64, 7, 2, act="relu")
    f = Feat(b.maxpool(f.t, 3, 2, 1), 64, out_side(f.h, 3, 2, 1))
    for width, blocks, stride in STAGES:
        for i in range(blocks):
            f = bottleneck(b, f, width, stride if i == 0 else 1)
    logits = b.gemm(b.gap_flat(f.t), f.c, 1000)
    b.add_output(logits, "logits", "float32", [1, 1000])
