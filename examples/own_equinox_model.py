"""Your own equinox model under the exact gradient flow.

A two-layer tanh network written as an equinox Module (mean-field scaling, so the time
scale is eta = m), its MSE loss, the flow with dense output, the fitted rate, theta(t)
between save times, and the Solution saved and loaded back (npz + json, no pickle).

    python examples/own_equinox_model.py [--tiny] [--out DIR]
"""

import argparse
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import gflow


class TanhNet(eqx.Module):
    """f(x) = (1/m) sum_i a_i tanh(w_i . x + b_i). W (m, d), b (m,), a (m,); x (n, d)."""

    W: jax.Array
    b: jax.Array
    a: jax.Array

    def __init__(self, d: int, m: int, *, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.W = jax.random.normal(k1, (m, d))
        self.b = jnp.zeros(m)
        self.a = jax.random.normal(k2, (m,))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(x @ self.W.T + self.b) @ self.a / self.a.size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a few-second run")
    p.add_argument("--out", default="runs/examples/own_equinox_model")
    args = p.parse_args()
    n, d, m, t1 = (8, 8, 16, 20.0) if args.tiny else (32, 64, 512, 200.0)
    out = Path(args.out)

    data = gflow.make_synthetic(n=n, d=d, n_test=64, seed=0)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    model = TanhNet(d, m, key=jax.random.key(0))

    def loss(net: TanhNet) -> jax.Array:
        return 0.5 * jnp.mean((net(x) - y) ** 2)

    # dense=True keeps the solver's interpolation; its buffers are reserved for max_steps.
    ts = np.linspace(0.0, t1, 101)  # evenly spaced save times for the rate fit
    sol = gflow.simulate(loss, model, t1, eta=float(m), ts=ts, dense=True, max_steps=4096)
    print(sol.summary())
    fit = gflow.fit_rate(sol.ts, sol.loss)
    print(fit)

    # theta(t) between two save times, from the dense output; the loss there lies
    # between the saved losses on either side (the flow decreases L monotonically).
    k = sol.ts.size // 2
    t_mid = 0.5 * (sol.ts[k] + sol.ts[k + 1])
    problem = gflow.flatten_problem(loss, model, eta=float(m))
    loss_mid = float(loss(problem.to_params(jnp.asarray(sol.evaluate(t_mid)))))
    print(f"L({t_mid:.4g}) = {loss_mid:.6e} between {sol.loss[k]:.6e} and {sol.loss[k + 1]:.6e}")
    assert sol.loss[k + 1] <= loss_mid <= sol.loss[k]

    sol.save(out / "solution")
    back = gflow.load_solution(out / "solution", like=model)
    assert isinstance(back.final, TanhNet)
    np.testing.assert_array_equal(back.final.W, sol.final.W)
    np.testing.assert_array_equal(back.evaluate(t_mid), sol.evaluate(t_mid))
    print(f"saved and reloaded {out / 'solution'}.json/.npz")

    fig = gflow.plot_loss(sol, fit, title=f"TanhNet m={m} (mean-field), seed 0, n={n}, d={d}")
    fig.savefig(out / "loss.png")
    print(f"wrote {out / 'loss.png'}")


if __name__ == "__main__":
    main()
