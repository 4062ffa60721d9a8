"""In-graph output summaries (services.common.engines.summary_graph) equal numpy's summarize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from services.common.engines import get_engine
from services.common.engines.onnxruntime_engine import OrtLoadedModel
from services.common.engines.summary_graph import add_summaries
from services.common.tensors import summarize
from services.core.schemas import OutputSummary

ORT = get_engine("onnxruntime")


def _model(outputs: list[tuple[str, int, list[int | str]]], opset: int = 17) -> onnx.ModelProto:
    """One float32 input per output, cast to the output's type."""
    nodes, inputs, outs = [], [], []
    for name, elem, shape in outputs:
        inputs.append(helper.make_tensor_value_info(f"in_{name}", TensorProto.FLOAT, shape))
        outs.append(helper.make_tensor_value_info(name, elem, shape))
        nodes.append(helper.make_node("Cast", [f"in_{name}"], [name], to=elem))
    g = helper.make_graph(nodes, "g", inputs, outs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _load(tmp_path: Path, model: onnx.ModelProto) -> OrtLoadedModel:
    p = tmp_path / "m.onnx"
    onnx.save(model, p)
    loaded = ORT.load(p, threads=1)
    assert isinstance(loaded, OrtLoadedModel)
    return loaded


def _same(a: OutputSummary, b: OutputSummary) -> None:
    assert (a.name, a.shape, a.dtype, a.top_k) == (b.name, b.shape, b.dtype, b.top_k)
    for f in ("mean", "std", "checksum"):
        assert getattr(a, f) == pytest.approx(getattr(b, f), rel=1e-9, abs=1e-9), f


@pytest.mark.parametrize(
    ("elem", "shape", "feed_shape"),
    [
        (TensorProto.FLOAT, [1, 1000], (1, 1000)),  # a classifier row
        (TensorProto.FLOAT, ["n", 10], (1, 10)),  # dynamic batch of one: still a classifier row
        (TensorProto.FLOAT, ["n", 10], (3, 10)),  # a batch of three: no top-k (as summarize)
        (TensorProto.FLOAT16, [1, 7], (1, 7)),
        (TensorProto.DOUBLE, [2, 3, 4], (2, 3, 4)),
        (TensorProto.INT64, [1, 5], (1, 5)),
        (TensorProto.FLOAT, [1, 0], (1, 0)),  # empty
        (TensorProto.FLOAT, [1, 1], (1, 1)),  # one class: not a classifier
    ],
)
@pytest.mark.parametrize("top_k", [0, 1, 5, 2000])
def test_in_graph_summary_equals_numpy(
    tmp_path: Path, elem: int, shape: list[int | str], feed_shape: tuple[int, ...], top_k: int
) -> None:
    loaded = _load(tmp_path, _model([("y", elem, shape)]))
    assert loaded.specs, "the rewrite applies"
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(feed_shape) * 4).astype(np.float32)
    if feed_shape == (1, 1000):
        x[0, 10] = x[0, 20] = x.max() + 1  # a tie for first place: the lower index comes first
    got = loaded.summarize({"in_y": x}, top_k)
    y = loaded.run({"in_y": x})[0]
    assert y.dtype == helper.tensor_dtype_to_np_dtype(elem)
    want = [summarize("y", y, top_k)]
    assert len(got) == 1
    _same(got[0], want[0])
    if feed_shape == (1, 1000) and top_k:
        assert got[0].top_k is not None and got[0].top_k[0][0] == 10


def test_several_outputs_keep_their_order_and_run_still_returns_tensors(tmp_path: Path) -> None:
    loaded = _load(tmp_path, _model([("boxes", TensorProto.FLOAT, [1, 20, 4]), ("scores", TensorProto.FLOAT, [1, 91])]))
    feeds = {"in_boxes": np.ones((1, 20, 4), np.float32), "in_scores": np.arange(91, dtype=np.float32)[None]}
    assert [s.name for s in loaded.inputs] == ["in_boxes", "in_scores"]  # the K inputs are not model inputs
    outs = loaded.run(feeds)
    assert [o.shape for o in outs] == [(1, 20, 4), (1, 91)]
    got = loaded.summarize(feeds, 3)
    for g, (name, o) in zip(got, zip(loaded.output_names, outs, strict=True), strict=True):
        _same(g, summarize(name, o, 3))
    assert got[1].top_k is not None and got[1].top_k[0][0] == 90


def test_models_the_rewrite_does_not_suit_fall_back_to_numpy(tmp_path: Path) -> None:
    old = _model([("y", TensorProto.FLOAT, [1, 4])], opset=10)  # TopK's K input and tie rule need opset 11
    assert add_summaries(old) is None
    loaded = _load(tmp_path, old)
    assert loaded.specs is None
    x = np.array([[1.0, 3.0, 2.0, 0.0]], np.float32)
    _same(loaded.summarize({"in_y": x}, 2)[0], summarize("y", x, 2))
    text = _model([("s", TensorProto.STRING, [1])])
    assert add_summaries(text) is None
