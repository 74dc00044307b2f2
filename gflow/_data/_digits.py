"""scikit-learn's handwritten digits (shipped with the package: no download) as a
+-1 regression / binary task or a multi-class classification task."""

from __future__ import annotations

import numpy as np

from ._dataset import Dataset

TASKS = ("parity", "small-large", "classes")
# images per digit 0..9 in scikit-learn's copy (1797 in all); tests check it
DIGIT_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def digit_images(classes: int = 10) -> int:
    """How many images show a digit < classes (all 1797 for 10)."""
    return int(sum(DIGIT_COUNTS[:classes]))


def load_digits(
    n: int, *, n_test: int = 0, task: str = "parity", classes: int = 10, seed: int = 0
) -> Dataset:
    """The 8x8 digits (1797 images, d = 64) as +-1 targets or class labels.

    Arguments:
        n, n_test: numbers of train and (disjoint) test points, a seeded random subset.
        task: "parity": y = +1 for even digits, -1 for odd; "small-large": +1 for 0-4,
            -1 for 5-9 (both usable for MSE regression and the logistic loss);
            "classes": multi-class, y = the digit in {0..classes-1} as a float label,
            only images of the digits 0..classes-1 (for cross-entropy with `classes`
            outputs; `one_hot(y, classes)` gives one-hot rows).
        classes: number of classes for task "classes", 2..10.
        seed: the subset's seed.

    Inputs are centred by the mean over all images and scaled so |x| = 1 per image.

    Returns:
        A `Dataset`; `data.classes` is `classes` for task "classes", else None.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: must be an integer >= 1, got {n!r}.")
    if isinstance(n_test, bool) or not isinstance(n_test, int | np.integer) or n_test < 0:
        raise ValueError(f"n_test: must be an integer >= 0, got {n_test!r}.")
    if task not in TASKS:
        raise ValueError(f"task: must be one of {list(TASKS)}, got {task!r}.")
    if isinstance(classes, bool) or not isinstance(classes, int | np.integer):
        raise ValueError(f"classes: must be an integer in 2..10, got {classes!r}.")
    if not 2 <= classes <= 10:
        raise ValueError(f"classes: must be in 2..10 (the digits 0..classes-1), got {classes}.")
    images, labels = _sk_load_digits(return_X_y=True)
    x = images.astype(np.float64)
    x = x - x.mean(axis=0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if task == "classes":
        keep = labels < classes
        x, labels = x[keep], labels[keep]
        y = labels.astype(np.float64)
    elif task == "parity":
        y = np.where(labels % 2 == 0, 1.0, -1.0)
    else:
        y = np.where(labels < 5, 1.0, -1.0)
    total = x.shape[0]
    if n + n_test > total:
        what = f"images of the digits 0..{classes - 1}" if task == "classes" else "digit images"
        raise ValueError(
            f"n: n + n_test = {n + n_test} exceeds the {total} {what}; lower n or n_test."
        )
    idx = np.random.default_rng(seed).permutation(total)
    tr, te = idx[:n], idx[n : n + n_test]
    info = {"kind": "digits", "n": int(n), "n_test": int(n_test), "task": task, "seed": seed}
    if task == "classes":
        info["classes"] = int(classes)
    return Dataset(x[tr], y[tr], x[te], y[te], name=f"digits-{task}", info=info)
