"""``digits``: a small image classifier with real, trained weights (not part of Table III).

The Table III networks carry random weights, so their top-k says nothing about the input. This
one is trained, deterministically, on scikit-learn's handwritten digits (``load_digits``: 1,797
8x8 grey images of the digits 0-9, shipped inside the scikit-learn wheel, no download), so a
request with a real held-out digit gets its class back, and its accuracy per precision is
*measured* on a held-out split (``services.common.model_store``), not quoted.

* Split: 80 / 20, stratified by class, ``random_state=SPLIT_SEED`` (1,437 training images, 360
  held out). Only the training part is used to train and to calibrate INT8.
* Network: scikit-learn's ``MLPClassifier`` (one hidden layer of ``HIDDEN`` ReLU units, Adam,
  ``random_state=TRAIN_SEED``), trained in ~0.7 s of CPU (measured); its weights are written into an ONNX
  graph built like every zoo graph: ``input`` [1, 1, 8, 8] float32 holding the raw
  ``load_digits`` pixel values (0-16) -> Flatten -> x / 16 -> Gemm -> Relu -> Gemm -> ``logits``
  [1, 10], class index = digit. Table I counts it as 0 CONV, 2 FC, 0 RC.
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np

from services.common.zoo.layers import GraphBuilder

SIDE = 8
CLASSES = 10
HIDDEN = 64
PIXEL_MAX = 16.0  # load_digits pixels are integers 0..16
SPLIT_SEED = 0
TRAIN_SEED = 0
TEST_FRACTION = 0.2
MAX_ITER = 300
INPUT_SHAPE = [1, 1, SIDE, SIDE]
HELD_OUT_NOTE = (
    f"held-out scikit-learn load_digits images ({TEST_FRACTION:.0%} stratified split, random_state={SPLIT_SEED})"
)

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@cache
def split() -> Split:
    """(x_train, y_train, x_test, y_test): images float32 [N, 1, 8, 8] (pixels 0-16), labels int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = data.images.astype(np.float32).reshape(-1, 1, SIDE, SIDE)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    for a in (x_tr, y_tr, x_te, y_te):
        a.setflags(write=False)  # memoised: shared by every caller
    return x_tr, y_tr, x_te, y_te


def held_out() -> tuple[np.ndarray, np.ndarray]:
    """The held-out split (x [360, 1, 8, 8], y [360]): what accuracy is measured on."""
    _, _, x, y = split()
    return x, y


def sample(index: int) -> tuple[np.ndarray, int]:
    """Held-out image ``index`` as a [1, 1, 8, 8] float32 batch, and its label."""
    x, y = held_out()
    if not 0 <= index < len(x):
        raise IndexError(f"held-out digit index must be in [0, {len(x)}), got {index}")
    return x[index : index + 1].copy(), int(y[index])


def calibration(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` training images, one feed each, for static INT8 calibration (a deterministic draw)."""
    x, _, _, _ = split()
    idx = np.random.default_rng(seed).choice(len(x), size=min(n, len(x)), replace=False)
    return [{"input": x[i : i + 1].copy()} for i in idx]


@cache
def train() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(w1 [HIDDEN, 64], b1, w2 [10, HIDDEN], b2), float32, as Gemm weights (transB=1)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    x, y, _, _ = split()
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), max_iter=MAX_ITER, random_state=TRAIN_SEED)
    # One BLAS thread: these matrices are tiny, and a threaded BLAS on a busy 2-core machine took
    # 14.5 s instead of 0.6 s (measured). A fixed iteration budget bounds the time; the held-out
    # accuracy is what counts, so the convergence warning is noise.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x.reshape(len(x), -1) / PIXEL_MAX, y)
    w1, w2 = (np.ascontiguousarray(w.T, dtype=np.float32) for w in clf.coefs_)
    b1, b2 = (b.astype(np.float32) for b in clf.intercepts_)
    return w1, b1, w2, b2


def digits(b: GraphBuilder) -> None:
    """The graph; in skeleton mode (``weights=False``) the same nodes with zero weights, nothing trained."""
    x = b.add_input("input", "float32", INPUT_SHAPE)
    flat = b.node("Mul", [b.node("Flatten", [x], axis=1), b.const(1.0 / PIXEL_MAX)])
    # Skeleton mode (Table I features) needs no training: zeros of the same shapes give the same graph.
    shapes = ([HIDDEN, SIDE * SIDE], [HIDDEN], [CLASSES, HIDDEN], [CLASSES])
    weights = train() if b.weights else tuple(np.zeros(shape, np.float32) for shape in shapes)
    w1, b1, w2, b2 = (b.const(w) for w in weights)
    hidden = b.node("Relu", [b.node("Gemm", [flat, w1, b1], transB=1)])
    logits = b.node("Gemm", [hidden, w2, b2], transB=1)
    b.add_output(logits, "logits", "float32", [1, CLASSES])
