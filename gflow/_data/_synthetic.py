"""Synthetic regression data: Gaussian or spherical inputs, targets from a random
teacher network, a single-index function, or pure noise."""

from __future__ import annotations

import numpy as np

from ._dataset import Dataset

INPUTS = ("gaussian", "sphere")
TARGETS = ("teacher", "single-index", "noise")


def _check_int(field: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{field}: must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _inputs(rng: np.random.Generator, n: int, d: int, kind: str) -> np.ndarray:
    x = rng.standard_normal((n, d))
    if kind == "sphere":
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.sqrt(d)  # N(0, I/d): |x| ~ 1


def make_synthetic(
    n: int,
    d: int,
    *,
    n_test: int = 0,
    inputs: str = "sphere",
    target: str = "teacher",
    teacher_width: int = 4,
    noise: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """A seeded synthetic dataset.

    Inputs: "gaussian" x ~ N(0, I_d / d) (so |x| ~ 1) or "sphere" x uniform on S^{d-1}.
    Targets:
        "teacher": y = k^-1/2 sum_{l=1..k} a_l tanh(sqrt(d) v_l . x), v_l uniform on the
            sphere, a_l ~ N(0, 1), k = teacher_width;
        "single-index": y = He_2(sqrt(d) v . x) / sqrt(2) + tanh(sqrt(d) v . x) (a
            function of one direction v; learned features help);
        "noise": y ~ N(0, 1), independent of x.
    Then y += noise * N(0, 1). Train and test points are drawn from the same law.

    Returns:
        A `Dataset` with n train and n_test test points.
    """
    n = _check_int("n", n, 1)
    d = _check_int("d", d, 1)
    n_test = _check_int("n_test", n_test, 0)
    teacher_width = _check_int("teacher_width", teacher_width, 1)
    if inputs not in INPUTS:
        raise ValueError(f"inputs: must be one of {list(INPUTS)}, got {inputs!r}.")
    if target not in TARGETS:
        raise ValueError(f"target: must be one of {list(TARGETS)}, got {target!r}.")
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise: must be a finite number >= 0, got {noise!r}.")
    rng = np.random.default_rng(seed)
    x = _inputs(rng, n + n_test, d, inputs)
    if target == "teacher":
        v = rng.standard_normal((teacher_width, d))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        a = rng.standard_normal(teacher_width)
        y = np.tanh(np.sqrt(d) * x @ v.T) @ a / np.sqrt(teacher_width)
    elif target == "single-index":
        v = rng.standard_normal(d)
        v /= np.linalg.norm(v)
        z = np.sqrt(d) * x @ v
        y = (z**2 - 1) / np.sqrt(2) + np.tanh(z)
    else:
        y = rng.standard_normal(n + n_test)
    y = y + noise * rng.standard_normal(n + n_test)
    info = {
        "kind": "synthetic",
        "n": n,
        "d": d,
        "n_test": n_test,
        "inputs": inputs,
        "target": target,
        "teacher_width": teacher_width,
        "noise": float(noise),
        "seed": seed,
    }
    return Dataset(x[:n], y[:n], x[n:], y[n:], name=f"synthetic-{target}", info=info)
