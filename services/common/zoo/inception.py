"""Inception v1 (GoogLeNet) and Inception v3, as in TF-Slim (no auxiliary heads, no LRN).

Inception v3 follows TF-Slim's ``inception_v3`` layer by layer and has exactly Table III's 94
convolutions (stem 5 + Mixed_5b-d 3 x 7 + Mixed_6a 4 + Mixed_6b-e 4 x 10 + Mixed_7a 6 +
Mixed_7b-c 2 x 9).

GoogLeNet has 57 convolutions (3 stem + 9 modules x 6) but Table III reports 49.  We keep
the exact GoogLeNet widths (Szegedy et al. 2015, Table 1), hence its MACs, and reach 49 by
*horizontal fusion*: in modules 3a, 3b, 4a and 4b the three 1x1 convolutions that read the
module input (#1x1, #3x3 reduce, #5x5 reduce) run as one 1x1 convolution whose output is
split - mathematically the same network (an optimisation TensorRT-style compilers apply),
with 2 fewer conv layers per fused module.
"""

from __future__ import annotations

from services.common.zoo.layers import GraphBuilder
from services.common.zoo.mobilenet import Feat, out_side


def _conv(b: GraphBuilder, f: Feat, cout: int, k: int | tuple[int, int], stride: int = 1, valid: bool = False) -> Feat:
    kh, kw = (k, k) if isinstance(k, int) else k
    t = b.conv(f.t, f.c, cout, (kh, kw), stride=stride, pad="valid" if valid else "same", act="relu")
    side = out_side(f.h, kh, stride, 0 if valid else kh // 2)
    return Feat(t, cout, side)


def _concat(b: GraphBuilder, feats: list[Feat]) -> Feat:
    return Feat(b.concat([f.t for f in feats], axis=1), sum(f.c for f in feats), feats[0].h)


def _pool(b: GraphBuilder, f: Feat, kind: str, k: int, stride: int, pad: int) -> Feat:
    t = b.maxpool(f.t, k, stride, pad) if kind == "max" else b.avgpool(f.t, k, stride, pad)
    return Feat(t, f.c, out_side(f.h, k, stride, pad))


# ----------------------------------------------------------------------------- v1

# name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj (Szegedy et al. 2015, Table 1)
V1_MODULES: tuple[tuple[str, int, int, int, int, int, int], ...] = (
    ("3a", 64, 96, 128, 16, 32, 32),
    ("3b", 128, 128, 192, 32, 96, 64),
    ("4a", 192, 96, 208, 16, 48, 64),
    ("4b", 160, 112, 224, 24, 64, 64),
    ("4c", 128, 128, 256, 24, 64, 64),
    ("4d", 112, 144, 288, 32, 64, 64),
    ("4e", 256, 160, 320, 32, 128, 128),
    ("5a", 256, 160, 320, 32, 128, 128),
    ("5b", 384, 192, 384, 48, 128, 128),
)
V1_FUSED = frozenset({"3a", "3b", "4a", "4b"})


def _v1_module(b: GraphBuilder, f: Feat, cfg: tuple[str, int, int, int, int, int, int]) -> Feat:
    name, c1, r3, c3, r5, c5, pp = cfg
    if name in V1_FUSED:
        fused = _conv(b, f, c1 + r3 + r5, 1)
        t1, t3, t5 = b.split(fused.t, [c1, r3, r5], axis=1)
        b1, red3, red5 = Feat(t1, c1, f.h), Feat(t3, r3, f.h), Feat(t5, r5, f.h)
    else:
        b1, red3, red5 = _conv(b, f, c1, 1), _conv(b, f, r3, 1), _conv(b, f, r5, 1)
    b3 = _conv(b, red3, c3, 3)
    b5 = _conv(b, red5, c5, 5)
    bp = _conv(b, _pool(b, f, "max", 3, 1, 1), pp, 1)
    return _concat(b, [b1, b3, b5, bp])


def inception_v1(b: GraphBuilder) -> None:
    x = b.add_input("input", "float32", [1, 3, 224, 224])
    f = _conv(b, Feat(x, 3, 224), 64, 7, 2)
    f = _pool(b, f, "max", 3, 2, 1)
    f = _conv(b, f, 64, 1)
    f = _conv(b, f, 192, 3)
    f = _pool(b, f, "max", 3, 2, 1)
    for cfg in V1_MODULES:
        if cfg[0] in ("4a", "5a"):
            f = _pool(b, f, "max", 3, 2, 1)
        f = _v1_module(b, f, cfg)
    logits = b.gemm(b.gap_flat(f.t), f.c, 1000)
    b.add_output(logits, "logits", "float32", [1, 1000])


# ----------------------------------------------------------------------------- v3


def _mixed_5(b: GraphBuilder, f: Feat, pool_proj: int) -> Feat:
    b0 = _conv(b, f, 64, 1)
    b1 = _conv(b, _conv(b, f, 48, 1), 64, 5)
    b2 = _conv(b, _conv(b, _conv(b, f, 64, 1), 96, 3), 96, 3)
    b3 = _conv(b, _pool(b, f, "avg", 3, 1, 1), pool_proj, 1)
    return _concat(b, [b0, b1, b2, b3])


def _mixed_6a(b: GraphBuilder, f: Feat) -> Feat:
    b0 = _conv(b, f, 384, 3, 2, valid=True)
    b1 = _conv(b, _conv(b, _conv(b, f, 64, 1), 96, 3), 96, 3, 2, valid=True)
    b2 = _pool(b, f, "max", 3, 2, 0)
    return _concat(b, [b0, b1, b2])


def _mixed_6(b: GraphBuilder, f: Feat, c7: int) -> Feat:
    b0 = _conv(b, f, 192, 1)
    b1 = _conv(b, _conv(b, _conv(b, f, c7, 1), c7, (1, 7)), 192, (7, 1))
    b2 = _conv(b, f, c7, 1)
    for cout, k in ((c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))):
        b2 = _conv(b, b2, cout, k)
    b3 = _conv(b, _pool(b, f, "avg", 3, 1, 1), 192, 1)
    return _concat(b, [b0, b1, b2, b3])


def _mixed_7a(b: GraphBuilder, f: Feat) -> Feat:
    b0 = _conv(b, _conv(b, f, 192, 1), 320, 3, 2, valid=True)
    b1 = _conv(b, f, 192, 1)
    for k in ((1, 7), (7, 1)):
        b1 = _conv(b, b1, 192, k)
    b1 = _conv(b, b1, 192, 3, 2, valid=True)
    b2 = _pool(b, f, "max", 3, 2, 0)
    return _concat(b, [b0, b1, b2])


def _mixed_7(b: GraphBuilder, f: Feat) -> Feat:
    b0 = _conv(b, f, 320, 1)
    r1 = _conv(b, f, 384, 1)
    b1 = _concat(b, [_conv(b, r1, 384, (1, 3)), _conv(b, r1, 384, (3, 1))])
    r2 = _conv(b, _conv(b, f, 448, 1), 384, 3)
    b2 = _concat(b, [_conv(b, r2, 384, (1, 3)), _conv(b, r2, 384, (3, 1))])
    b3 = _conv(b, _pool(b, f, "avg", 3, 1, 1), 192, 1)
    return _concat(b, [b0, b1, b2, b3])


def inception_v3(b: GraphBuilder) -> None:
    x = b.add_input("input", "float32", [1, 3, 299, 299])
    f = _conv(b, Feat(x, 3, 299), 32, 3, 2, valid=True)  # 149
    f = _conv(b, f, 32, 3, valid=True)  # 147
    f = _conv(b, f, 64, 3)  # 147
    f = _pool(b, f, "max", 3, 2, 0)  # 73
    f = _conv(b, f, 80, 1, valid=True)
    f = _conv(b, f, 192, 3, valid=True)  # 71
    f = _pool(b, f, "max", 3, 2, 0)  # 35
    f = _mixed_5(b, f, 32)
    f = _mixed_5(b, f, 64)
    f = _mixed_5(b, f, 64)
    f = _mixed_6a(b, f)  # 17
    for c7 in (128, 160, 160, 192):
        f = _mixed_6(b, f, c7)
    f = _mixed_7a(b, f)  # 8
    f = _mixed_7(b, f)
    f = _mixed_7(b, f)
    logits = b.gemm(b.gap_flat(f.t), f.c, 1000)
    b.add_output(logits, "logits", "float32", [1, 1000])
