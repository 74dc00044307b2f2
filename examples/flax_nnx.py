"""A flax.nnx model under gflow's gradient flow, through nnx.split / nnx.merge.

    python examples/flax_nnx.py            # width 256, 64 digit images, t1 = 200
    python examples/flax_nnx.py --tiny     # seconds: width 8, 16 images, t1 = 5

nnx.split(model) gives (graphdef, state): the state is a pytree of arrays, which is all
gflow needs; the loss rebuilds the module with nnx.merge. The same apply_fn gives the
tangent kernel. Needs the optional extra: pip install -e ".[flax]".
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import gflow


class MLP(nnx.Module):
    """f(x) = l2(tanh(l1(x))), scalar output, float64 parameters."""

    def __init__(self, d: int, width: int, *, rngs: nnx.Rngs):
        f64 = {"param_dtype": jnp.float64, "dtype": jnp.float64}
        self.l1 = nnx.Linear(d, width, rngs=rngs, **f64)
        self.l2 = nnx.Linear(width, 1, rngs=rngs, **f64)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.l2(jnp.tanh(self.l1(x)))[..., 0]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a seconds-long run (CI)")
    args = parser.parse_args(argv)
    n, width, t1 = (16, 8, 5.0) if args.tiny else (64, 256, 200.0)

    data = gflow.load_digits(n, n_test=n, task="parity", seed=0)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    graphdef, state = nnx.split(MLP(data.d, width, rngs=nnx.Rngs(0)))

    def apply_fn(s, xs):
        return nnx.merge(graphdef, s)(xs)

    def loss(s):
        return 0.5 * jnp.mean((apply_fn(s, x) - y) ** 2)

    xt, yt = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    sol = gflow.simulate(
        loss,
        state,
        t1,
        metrics={"test_loss": lambda s: 0.5 * jnp.mean((apply_fn(s, xt) - yt) ** 2)},
    )
    print(sol.summary())
    h0 = np.asarray(gflow.tangent_kernel(state, x, apply_fn=apply_fn))
    h1 = np.asarray(gflow.tangent_kernel(sol.final, x, apply_fn=apply_fn))
    lam0, lam1 = np.linalg.eigvalsh(h0), np.linalg.eigvalsh(h1)
    change = np.linalg.norm(h1 - h0) / np.linalg.norm(h0)
    print(
        f"tangent kernel: lambda_min {lam0[0]:.3g} -> {lam1[0]:.3g}, "
        f"lambda_max {lam0[-1]:.3g} -> {lam1[-1]:.3g}, relative change {change:.3g}"
    )
    print(f"test loss {sol.metrics['test_loss'][0]:.3g} -> {sol.metrics['test_loss'][-1]:.3g}")
    model = nnx.merge(graphdef, sol.final)  # the trained nnx module
    assert np.allclose(model(x), apply_fn(sol.final, x))
    return {"loss": sol.loss, "kernel_change": change}


if __name__ == "__main__":
    main()
