"""The dataset container and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """A regression dataset with a train and a (possibly empty) test split.

    Fields:
        x_train: (n, d) inputs; y_train: (n,) targets (real values, +-1 labels, or class
            labels 0..k-1 stored as floats when `info["classes"] = k`).
        x_test: (n_test, d) inputs; y_test: (n_test,) targets (n_test may be 0).
        name: a short description; info: how it was made (kind, seed, options).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str = "dataset"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        check_xy(self.x_train, self.y_train, "x_train", "y_train")
        d = self.x_train.shape[1]
        if self.x_test.size or self.y_test.size:
            check_xy(self.x_test, self.y_test, "x_test", "y_test")
            if self.x_test.shape[1] != d:
                raise ValueError(
                    f"x_test: has {self.x_test.shape[1]} features but x_train has {d}; "
                    "use the same input dimension for both splits."
                )

    @property
    def n(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def d(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def classes(self) -> int | None:
        """Number of classes k when the targets are class labels 0..k-1, else None."""
        k = self.info.get("classes")
        return None if k is None else int(k)


def check_xy(x: Any, y: Any, xname: str = "x", yname: str = "y") -> None:
    """Raise ValueError naming the field when x, y are not a finite (n, d), (n,) pair."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"{xname}: expected a 2-D array (n, d), got shape {x.shape}.")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{xname}: needs n >= 1 rows and d >= 1 columns, got shape {x.shape}.")
    if y.ndim != 1:
        raise ValueError(
            f"{yname}: expected a 1-D array of n targets, got shape {y.shape}; "
            "flatten scalar targets with y.reshape(-1)."
        )
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{yname}: has {y.shape[0]} targets but {xname} has {x.shape[0]} rows; they must match."
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{xname}: contains NaN or inf; clean or drop those rows.")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{yname}: contains NaN or inf; clean or drop those rows.")


def from_arrays(x_train, y_train, x_test=None, y_test=None, *, name: str = "arrays") -> Dataset:
    """A `Dataset` from user arrays (validated; cast to float64)."""
    x_test = np.zeros((0, np.shape(x_train)[-1])) if x_test is None else x_test
    y_test = np.zeros((0,)) if y_test is None else y_test
    return Dataset(
        np.asarray(x_train, dtype=np.float64),
        np.asarray(y_train, dtype=np.float64),
        np.asarray(x_test, dtype=np.float64),
        np.asarray(y_test, dtype=np.float64),
        name=name,
        info={"kind": "arrays"},
    )
