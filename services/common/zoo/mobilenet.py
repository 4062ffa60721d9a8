"""MobileNet v1 / v2 / v3-Small classifiers and the backbones the SSD detectors reuse.

Batch-norm is folded into the convolutions (Conv + bias), as in every deployed graph.

Why MobileNet v3 is the *Small* model: Table III lists 23 CONV / 20 FC for "MobileNet v3".
With the extractor's rules (separable pairs count once, dense layers on pooled features are
FC) v3-Small gives exactly that - 1 stem + 1 (first block, no expansion) + 10 x 2 (expand,
separable) + 1 final 1x1 = 23 CONV and 9 squeeze-excite blocks x 2 + 2 head layers = 20 FC -
whereas v3-Large gives 31 CONV / 18 FC.  (Howard et al. 2019, Table 2; TF-Slim V3_SMALL.)
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.zoo.layers import GraphBuilder


@dataclass(frozen=True)
class Feat:
    """A square feature map: tensor name, channels, side."""

    t: str
    c: int
    h: int


def out_side(h: int, k: int, stride: int, pad: int) -> int:
    return (h + 2 * pad - k) // stride + 1


def make_divisible(v: float, divisor: int = 8) -> int:
    """Channel rounding used by the MobileNet reference code."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def conv_f(
    b: GraphBuilder,
    f: Feat,
    cout: int,
    k: int,
    stride: int = 1,
    *,
    group: int = 1,
    act: str | None = "relu6",
    gain: float = 1.0,
) -> Feat:
    t = b.conv(f.t, f.c, cout, k, stride=stride, group=group, act=act, gain=gain)
    return Feat(t, cout, out_side(f.h, k, stride, k // 2))


# ----------------------------------------------------------------------------- v1

V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def v1_backbone(b: GraphBuilder, x: str, side: int) -> list[Feat]:
    """Stem + 13 depthwise-separable layers (Howard et al. 2017, Table 1); all outputs."""
    f = conv_f(b, Feat(x, 3, side), 32, 3, 2)
    feats = [f]
    for cout, stride in V1_BLOCKS:
        f = conv_f(b, f, f.c, 3, stride, group=f.c)  # depthwise 3x3
        f = conv_f(b, f, cout, 1)  # pointwise 1x1
        feats.append(f)
    return feats


def mobilenet_v1(b: GraphBuilder) -> None:
    x = b.add_input("input", "float32", [1, 3, 224, 224])
    f = v1_backbone(b, x, 224)[-1]
    logits = b.gemm(b.gap_flat(f.t), f.c, 1000)
    b.add_output(logits, "logits", "float32", [1, 1000])


# ----------------------------------------------------------------------------- v2

# (expansion t, output channels c, repeats n, first stride s) - Sandler et al. 2018, Table 2
V2_CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def inverted_residual(
    b: GraphBuilder, f: Feat, cout: int, expand: int, k: int, stride: int, *, act: str = "relu6", se: bool = False
) -> tuple[Feat, Feat | None]:
    """MobileNet v2/v3 block; returns (output, expansion output or None)."""
    hidden = expand if expand > 0 else f.c
    exp_out: Feat | None = None
    h = f
    if hidden != f.c:
        h = exp_out = conv_f(b, f, hidden, 1, act=act)
    h = conv_f(b, h, hidden, k, stride, group=hidden, act=act)
    if se:
        h = Feat(squeeze_excite(b, h.t, hidden), hidden, h.h)
    # residual branches end small so deep stacks of Adds stay well-scaled with random weights
    residual = stride == 1 and f.c == cout
    out = conv_f(b, h, cout, 1, act=None, gain=0.5 if residual else 1.0)
    if residual:
        out = Feat(b.node("Add", [f.t, out.t]), cout, out.h)
    return out, exp_out


def v2_backbone(b: GraphBuilder, x: str, side: int) -> tuple[Feat, Feat]:
    """Returns (expansion output of the first 160-channel block - stride 16, final 1280 conv)."""
    f = conv_f(b, Feat(x, 3, side), 32, 3, 2)
    tap: Feat | None = None
    for t, c, n, s in V2_CFG:
        for i in range(n):
            f, exp = inverted_residual(b, f, c, f.c * t, 3, s if i == 0 else 1)
            if c == 160 and i == 0:
                tap = exp
    f = conv_f(b, f, 1280, 1)
    assert tap is not None
    return tap, f


def mobilenet_v2(b: GraphBuilder) -> None:
    x = b.add_input("input", "float32", [1, 3, 224, 224])
    _, f = v2_backbone(b, x, 224)
    logits = b.gemm(b.gap_flat(f.t), f.c, 1000)
    b.add_output(logits, "logits", "float32", [1, 1000])


# ----------------------------------------------------------------------------- v3-Small


def squeeze_excite(b: GraphBuilder, x: str, c: int) -> str:
    """SE as two dense layers on the pooled map (Howard et al. 2019, Fig. 4): 2 FC layers."""
    squeeze = make_divisible(c / 4)
    s = b.gap_flat(x)
    s = b.gemm(s, c, squeeze, act="relu")
    s = b.gemm(s, squeeze, c, act="hsigmoid")
    s = b.node("Unsqueeze", [s, b.const([2, 3], "int64")])
    return b.node("Mul", [x, s])


# (kernel, expansion size, out, SE, activation, stride) - Howard et al. 2019, Table 2
V3_SMALL_CFG: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
)


def v3_small_backbone(b: GraphBuilder, x: str, side: int) -> tuple[Feat, Feat]:
    """Returns (expansion output of the stride-16 block, final 1x1 576 conv)."""
    f = conv_f(b, Feat(x, 3, side), 16, 3, 2, act="hswish")
    tap: Feat | None = None
    for k, exp, out, se, act, stride in V3_SMALL_CFG:
        f, e = inverted_residual(b, f, out, exp, k, stride, act=act, se=se)
        if exp == 288:
            tap = e
    f = conv_f(b, f, 576, 1, act="hswish")
    assert tap is not None
    return tap, f


def mobilenet_v3(b: GraphBuilder) -> None:
    x = b.add_input("input", "float32", [1, 3, 224, 224])
    _, f = v3_small_backbone(b, x, 224)
    h = b.gemm(b.gap_flat(f.t), f.c, 1024, act="hswish")
    logits = b.gemm(h, 1024, 1000)
    b.add_output(logits, "logits", "float32", [1, 1000])
