"""Gradient descent against the exact gradient flow and GD's modified flow.

GD with step dt (learning rate dt * eta) is explicit Euler on the flow, so at equal times
t = k dt it is O(dt) away from the flow and O(dt^2) away from the modified flow
d theta/dt = -eta grad(L + (dt/4) |grad L|_eta^2) (backward error analysis). The script
measures both gaps at dt and dt/2 and draws GD against the flow.

    python examples/gd_vs_flow.py [--tiny] [--out DIR]
"""

import argparse
from pathlib import Path

import jax
import numpy as np

import gflow


def gaps(model, data, dt: float, t1: float) -> tuple[float, float, object, object]:
    """max_t |L_GD - L_flow| / L_flow and the same for the modified flow, at t = k dt."""
    loss_fn, _ = gflow.mse_problem(model, data)
    n_steps = round(t1 / dt)
    gd = gflow.descend_mse(model, data, dt=dt, n_steps=n_steps, save_every=max(n_steps // 20, 1))
    kw = {"ts": gd.ts, "rtol": 1e-10, "atol": 1e-12}
    gf = gflow.simulate_mse(model, data, float(gd.ts[-1]), **kw)
    mod = gflow.simulate_modified(
        loss_fn, model, float(gd.ts[-1]), dt, eta=model.eta(), trainable=model.trainable(), **kw
    )
    gap_gf = np.max(np.abs(gd.loss - gf.loss) / gf.loss)
    gap_mod = np.max(np.abs(gd.loss - mod.metrics["train_loss"]) / mod.metrics["train_loss"])
    return float(gap_gf), float(gap_mod), gd, gf


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a few-second run")
    p.add_argument("--out", default="runs/examples/gd_vs_flow")
    args = p.parse_args()
    n, d, m, t1, dt = (8, 8, 16, 4.0, 0.1) if args.tiny else (32, 64, 256, 20.0, 0.05)
    out = Path(args.out)
    data = gflow.make_synthetic(n=n, d=d, seed=0)
    model = gflow.TwoLayer(d, m, scaling="mf", key=jax.random.key(0))

    rows = []
    for h in (dt, dt / 2):
        g_gf, g_mod, gd, gf = gaps(model, data, h, t1)
        rows.append((h, g_gf, g_mod))
        print(f"dt = {h:.4g}: GD vs flow {g_gf:.3e}, GD vs modified flow {g_mod:.3e}")
        if h == dt:
            fig = gflow.plot_gd_vs_flow(gd, gf, model=model, seed=0, data=data)
            out.mkdir(parents=True, exist_ok=True)
            fig.savefig(out / "gd_vs_flow.png")
    (h1, a1, b1), (h2, a2, b2) = rows
    print(
        f"halving dt divides the gap to the flow by {a1 / a2:.2f} (order {np.log2(a1 / a2):.2f},"
        f" expected 1) and to the modified flow by {b1 / b2:.2f} (order "
        f"{np.log2(b1 / b2):.2f}, expected 2)"
    )
    print(f"wrote {out / 'gd_vs_flow.png'}")


if __name__ == "__main__":
    main()
