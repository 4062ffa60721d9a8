"""SSD detectors on MobileNet v1 / v2 / v3-Small backbones (300x300 input, 91 COCO classes).

Outputs are the raw per-anchor tensors a detector hands to its (CPU-side) box decoding and
NMS: ``boxes`` [1, N, 4] and ``scores`` [1, N, 91].

Table III's counts (19/1, 52/1, 28/20) are lower than a textbook SSD's 6-map heads, so the
heads here are compact but keep the SSD structure (stride-16 and stride-32 backbone maps,
stride-2 extra feature layers, one predictor per map, TF detection-zoo anchors: 3 per
location on the first map, 6 elsewhere).  The coarsest map is the global one: a global
average pool whose predictor is therefore a dense layer (the FC layer of Table III):

* v1 (TF ``ssd_mobilenet_v1``-style, plain convs): maps 19², 10², 5² + global; one 3x3-s2 extra
  layer (1x1 reduce + 3x3) and fused box+class 1x1 predictors -> 14 + 2 + 3 = 19 CONV, 1 FC.
* v2 (SSDLite, Sandler et al. 2018): maps 19², 10², 5², 3², 2² + global; three separable
  extra layers (1x1 reduce + separable 3x3-s2), a 1x1 reduce before the global pool, and
  separable box and class predictors per map -> 35 + 7 + 10 = 52 CONV, 1 FC.
* v3 (SSDLite on v3-Small): maps 19², 10², 5² + global; one separable extra layer and fused
  separable predictors; the global branch reuses MobileNetV3's 1024-wide dense layer before
  its predictor -> 23 + 2 + 3 = 28 CONV, 18 SE + 2 = 20 FC.
"""

from __future__ import annotations

from services.common.zoo.layers import GraphBuilder
from services.common.zoo.mobilenet import Feat, conv_f, v1_backbone, v2_backbone, v3_small_backbone

SIDE = 300
NUM_CLASSES = 91  # 90 COCO classes + background, as in the TF detection zoo
BOX = 4


class _Head:
    """Collects per-map box / score tensors and emits the two concatenated outputs."""

    def __init__(self, b: GraphBuilder) -> None:
        self.b = b
        self.boxes: list[str] = []
        self.scores: list[str] = []
        self.anchors = 0

    def _flat(self, t: str, per_anchor: int, n: int) -> str:
        # [1, A*k, h, w] -> [1, h, w, A*k] -> [1, h*w*A, k]
        return self.b.reshape(self.b.transpose(t, [0, 2, 3, 1]), [1, n, per_anchor])

    def fused(self, t: str, side: int, anchors: int) -> None:
        n = side * side * anchors
        flat = self._flat(t, BOX + NUM_CLASSES, n)
        box, score = self.b.split(flat, [BOX, NUM_CLASSES], axis=2)
        self.boxes.append(box)
        self.scores.append(score)
        self.anchors += n

    def separate(self, box: str, score: str, side: int, anchors: int) -> None:
        n = side * side * anchors
        self.boxes.append(self._flat(box, BOX, n))
        self.scores.append(self._flat(score, NUM_CLASSES, n))
        self.anchors += n

    def dense(self, t: str, anchors: int) -> None:
        """Predictor of the global (1x1) map: a dense layer output [1, A*(4+C)]."""
        flat = self.b.reshape(t, [1, anchors, BOX + NUM_CLASSES])
        box, score = self.b.split(flat, [BOX, NUM_CLASSES], axis=2)
        self.boxes.append(box)
        self.scores.append(score)
        self.anchors += anchors

    def finish(self) -> None:
        b = self.b
        b.add_output(b.concat(self.boxes, axis=1), "boxes", "float32", [1, self.anchors, BOX])
        b.add_output(b.concat(self.scores, axis=1), "scores", "float32", [1, self.anchors, NUM_CLASSES])


def _sep_predictor(b: GraphBuilder, f: Feat, cout: int) -> str:
    """SSDLite predictor: depthwise 3x3 + linear 1x1 (one separable layer)."""
    d = conv_f(b, f, f.c, 3, group=f.c, act="relu6")
    return conv_f(b, d, cout, 1, act=None, gain=0.5).t


def _sep_extra(b: GraphBuilder, f: Feat, reduce: int, cout: int) -> Feat:
    """SSDLite extra layer: 1x1 reduce + separable 3x3 stride 2."""
    r = conv_f(b, f, reduce, 1)
    d = conv_f(b, r, reduce, 3, 2, group=reduce)
    return conv_f(b, d, cout, 1)


def ssd_mobilenet_v1(b: GraphBuilder) -> None:
    x = b.add_input("input", "float32", [1, 3, SIDE, SIDE])
    feats = v1_backbone(b, x, SIDE)
    c11, c13 = feats[11], feats[13]  # 19x19x512, 10x10x1024 (TF: Conv2d_11/13_pointwise)
    e1 = conv_f(b, conv_f(b, c13, 256, 1), 512, 3, 2)  # 5x5x512
    head = _Head(b)
    for f, anchors in ((c11, 3), (c13, 6), (e1, 6)):
        head.fused(conv_f(b, f, anchors * (BOX + NUM_CLASSES), 1, act=None, gain=0.5).t, f.h, anchors)
    g = b.gap_flat(e1.t)
    head.dense(b.gemm(g, e1.c, 6 * (BOX + NUM_CLASSES), gain=0.5), 6)
    head.finish()


def ssd_mobilenet_v2(b: GraphBuilder) -> None:
    x = b.add_input("input", "float32", [1, 3, SIDE, SIDE])
    tap, last = v2_backbone(b, x, SIDE)  # 19x19x576, 10x10x1280
    maps = [tap, last]
    f = last
    for reduce, cout in ((256, 512), (128, 256), (128, 256)):
        f = _sep_extra(b, f, reduce, cout)  # 5x5, 3x3, 2x2
        maps.append(f)
    head = _Head(b)
    for i, m in enumerate(maps):
        anchors = 3 if i == 0 else 6
        box = _sep_predictor(b, m, anchors * BOX)
        score = _sep_predictor(b, m, anchors * NUM_CLASSES)
        head.separate(box, score, m.h, anchors)
    g = b.gap_flat(conv_f(b, f, 128, 1).t)  # global map: 1x1 reduce + global pool
    head.dense(b.gemm(g, 128, 6 * (BOX + NUM_CLASSES), gain=0.5), 6)
    head.finish()


def ssd_mobilenet_v3(b: GraphBuilder) -> None:
    x = b.add_input("input", "float32", [1, 3, SIDE, SIDE])
    tap, last = v3_small_backbone(b, x, SIDE)  # 19x19x288, 10x10x576
    e1 = _sep_extra(b, last, 128, 256)  # 5x5x256 (TF's SSDLite-v3 depths for the small maps)
    head = _Head(b)
    for f, anchors in ((tap, 3), (last, 6), (e1, 6)):
        head.fused(_sep_predictor(b, f, anchors * (BOX + NUM_CLASSES)), f.h, anchors)
    g = b.gemm(b.gap_flat(e1.t), e1.c, 1024, act="hswish")
    head.dense(b.gemm(g, 1024, 6 * (BOX + NUM_CLASSES), gain=0.5), 6)
    head.finish()
