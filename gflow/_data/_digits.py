"""scikit-learn's handwritten digits (shipped with the package: no download) as a
regression task."""

from __future__ import annotations

import numpy as np

from ._dataset import Dataset

TASKS = ("parity", "small-large")


def load_digits(n: int, *, n_test: int = 0, task: str = "parity", seed: int = 0) -> Dataset:
    """The 8x8 digits (1797 images, d = 64) as +-1 regression.

    task "parity": y = +1 for even digits, -1 for odd; "small-large": +1 for 0-4, -1 for 5-9.
    Inputs are centred by the mean over all images and scaled so |x| = 1 per image.
    A seeded random subset of n train and n_test disjoint test points is drawn.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: must be an integer >= 1, got {n!r}.")
    if isinstance(n_test, bool) or not isinstance(n_test, int | np.integer) or n_test < 0:
        raise ValueError(f"n_test: must be an integer >= 0, got {n_test!r}.")
    if task not in TASKS:
        raise ValueError(f"task: must be one of {list(TASKS)}, got {task!r}.")
    images, labels = _sk_load_digits(return_X_y=True)
    total = images.shape[0]
    if n + n_test > total:
        raise ValueError(
            f"n: n + n_test = {n + n_test} exceeds the {total} digit images; lower n or n_test."
        )
    x = images.astype(np.float64)
    x = x - x.mean(axis=0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = (
        np.where(labels % 2 == 0, 1.0, -1.0)
        if task == "parity"
        else np.where(labels < 5, 1.0, -1.0)
    )
    idx = np.random.default_rng(seed).permutation(total)
    tr, te = idx[:n], idx[n : n + n_test]
    info = {"kind": "digits", "n": int(n), "n_test": int(n_test), "task": task, "seed": seed}
    return Dataset(x[tr], y[tr], x[te], y[te], name=f"digits-{task}", info=info)
