"""Multi-class classification of the 8x8 digits by the gradient flow of the softmax
cross-entropy, with a k-output two-layer network and its multi-output tangent kernel.

    python examples/classification_digits.py          # 10 classes, 200 images, width 256
    python examples/classification_digits.py --tiny   # seconds: 3 classes, 30 images

On separable data the cross-entropy has no minimizer: the loss keeps decreasing while the
logits grow, more slowly than exponentially late in the flow (like 1/t for a linear model).
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

import gflow


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a seconds-long run (CI)")
    args = parser.parse_args(argv)
    classes, n, width, t1 = (3, 30, 16, 10.0) if args.tiny else (10, 200, 256, 100.0)

    data = gflow.load_digits(n, n_test=n, task="classes", classes=classes, seed=0)
    model = gflow.TwoLayer(data.d, width, outputs=classes, key=jax.random.key(0))
    sol = gflow.simulate_loss(model, data, t1, loss="cross-entropy")
    print(sol.summary())
    acc, test_acc = sol.metrics["train_accuracy"], sol.metrics["test_accuracy"]
    print(f"accuracy: train {acc[0]:.3f} -> {acc[-1]:.3f}", end=", ")
    print(f"test {test_acc[0]:.3f} -> {test_acc[-1]:.3f}")
    assert np.all(np.diff(sol.loss) <= 1e-12 * sol.loss[0]), "gradient flow: L never increases"

    # The multi-output tangent kernel: full (n k, n k) and per-class blocks (k, n, n).
    x = data.x_train
    full = np.asarray(gflow.tangent_kernel(model, x))
    blocks = np.asarray(gflow.tangent_kernel(model, x, outputs="blocks"))
    lam = np.linalg.eigvalsh(full)
    print(
        f"tangent kernel at init: {full.shape} full, lambda_min {lam[0]:.3g}, "
        f"lambda_max {lam[-1]:.3g}; per-class blocks {blocks.shape}, "
        f"lambda_min per class {np.round([np.linalg.eigvalsh(b)[0] for b in blocks], 4)}"
    )
    return {"loss": sol.loss, "train_accuracy": acc, "test_accuracy": test_acc}


if __name__ == "__main__":
    main()
