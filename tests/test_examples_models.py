"""The model examples run at their tiny size (what CI runs)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classification_digits_tiny():
    out = _load("classification_digits").main(["--tiny"])
    assert np.all(np.diff(out["loss"]) < 0)
    assert out["train_accuracy"][-1] > out["train_accuracy"][0]


def test_flax_nnx_tiny():
    pytest.importorskip("flax", reason="flax is an optional extra; not installed")
    out = _load("flax_nnx").main(["--tiny"])
    assert out["loss"][-1] < out["loss"][0] and out["kernel_change"] > 0
