"""The trained built-in ``digits``: real weights, accuracy measured per precision, cached like the zoo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from services.cli.models import app as models_app
from services.common import zoo
from services.common.model_store import ModelStore
from services.common.precision import calibration_feeds
from services.common.tensors import decode
from services.common.zoo import digits
from services.core.schemas import Precision, TensorPayload


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("digits-cache"), ["digits"])


def _top1(path: Path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.array([int(np.argmax(sess.run(None, {"input": x[i : i + 1]})[0])) for i in range(len(x))])


def test_features_come_from_the_graph_without_training() -> None:
    f = zoo.zoo_features("digits")
    assert (f.conv, f.fc, f.rc) == zoo.spec("digits").table3 == (0, 2, 0)
    assert f.macs == zoo.spec("digits").published_macs == 64 * 64 + 64 * 10
    assert f.input_bytes == 8 * 8 * 4 and f.output_bytes == 10 * 4


def test_split_is_stratified_and_held_out() -> None:
    x_tr, _, x_te, y_te = digits.split()
    assert x_tr.shape == (1437, 1, 8, 8) and x_te.shape == (360, 1, 8, 8)
    assert set(np.unique(y_te)) == set(range(10))
    assert x_te.min() >= 0.0 and x_te.max() <= 16.0
    train_rows = {r.tobytes() for r in x_tr.reshape(len(x_tr), -1)}
    overlap = sum(r.tobytes() in train_rows for r in x_te.reshape(len(x_te), -1))
    assert overlap <= 2  # load_digits holds a couple of identical images; the split itself is disjoint


def test_builtin_accuracy_is_measured_per_precision_and_cached(store: ModelStore) -> None:
    info = store.info("digits")
    assert set(info.precisions) == set(Precision)
    x, y = zoo.labelled_set("digits") or (np.zeros(0), np.zeros(0))
    for p, entry in info.precisions.items():
        assert entry.source == "measured"
        assert "360 held-out scikit-learn load_digits images" in entry.reference and str(p) in entry.reference
        # the recorded figure is what the variant really scores on the held-out split
        assert entry.top1 == pytest.approx(100.0 * float((_top1(store.path("digits", p), x) == y).mean()), abs=1e-3)
        assert entry.top1 > 90.0
    side = zoo.model_path("digits", store.cache_dir).with_suffix(".accuracy.json")
    mtime = side.stat().st_mtime_ns
    again = ModelStore(store.cache_dir, ["digits"]).info("digits")  # a fresh process's view: read, not re-measured
    assert again.precisions == info.precisions and side.stat().st_mtime_ns == mtime
    assert info.sha256 and info.builtin


def test_int8_is_calibrated_on_real_training_images() -> None:
    feeds = calibration_feeds(zoo.build_model("digits", weights=False), n=4, seed=3)
    x_tr, _, _, _ = digits.split()
    rows = {r.tobytes() for r in x_tr}
    assert len(feeds) == 4 and all(f["input"][0].tobytes() in rows for f in feeds)


def test_sample_command_prints_a_request_body_with_a_held_out_image() -> None:
    result = CliRunner().invoke(models_app, ["sample", "digits", "--index", "5", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["model"] == "digits" and body["top_k"] == 2
    image, label = digits.sample(5)
    assert np.array_equal(decode(TensorPayload.model_validate(body["input"])), image)
    assert f"label {label}" in result.stderr


def test_sample_command_refuses_a_model_without_real_samples() -> None:
    result = CliRunner().invoke(models_app, ["sample", "mobilenet_v1"])
    assert result.exit_code == 2 and "random weights" in result.output
    result = CliRunner().invoke(models_app, ["sample", "digits", "--index", "360"])
    assert result.exit_code == 2 and "360 samples" in result.output
