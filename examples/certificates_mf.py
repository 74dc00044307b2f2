"""Convergence certificates on a two-layer mean-field network.

Records the tangent kernel H(t) (eta-weighted Gram of the network's Jacobian) and the
Schur-product bound at the save times of the flow, fits the linear rate of the loss and
checks the bounds with `gflow.certify`: the local rate -(d/dt) log L >= (2/n)
lambda_min(H(t)), the Gronwall envelope L(t) <= L(0) exp(-(2/n) int lambda_min), the Schur
lower bound on lambda_min, and the fitted rate against the time-averaged bound.

    python examples/certificates_mf.py [--tiny] [--out DIR]
"""

import argparse
from pathlib import Path

import jax
import numpy as np

import gflow


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a few-second run")
    p.add_argument("--out", default="runs/examples/certificates_mf")
    args = p.parse_args()
    # d >= n: the input Gram is non-singular, so the Schur bound is positive.
    n, d, m, t1 = (8, 12, 32, 30.0) if args.tiny else (32, 64, 1024, 400.0)
    out = Path(args.out)
    data = gflow.make_synthetic(n=n, d=d, n_test=64, seed=0)
    model = gflow.TwoLayer(d, m, scaling="mf", key=jax.random.key(0))

    metrics = {
        **gflow.kernel_metrics(model, data.x_train, data.y_train),
        **gflow.schur_metrics(model, data.x_train),
    }
    ts = np.linspace(0.0, t1, 101)  # evenly spaced save times for the rate fit
    sol = gflow.simulate_mse(model, data, t1, ts=ts, metrics=metrics, rtol=1e-8, atol=1e-10)
    print(sol.summary())
    fit = gflow.fit_rate(sol.ts, sol.loss)
    print(fit)
    kernel = gflow.KernelTrace.from_metric(sol.metrics["kernel"])
    report = gflow.certify(
        sol.ts,
        sol.loss,
        kernel.lambda_min,
        n,
        fit=fit,
        lambda_max=kernel.lambda_max,
        rayleigh=kernel.rayleigh,
        schur=sol.metrics["schur"],
    )
    print(report)
    print("all certificates hold" if report.passed else "some certificate failed or is open")

    out.mkdir(parents=True, exist_ok=True)
    gflow.plot_loss(sol, fit, envelope=report.envelope, model=model, seed=0, data=data).savefig(
        out / "loss.png"
    )
    gflow.plot_kernel(sol, model=model, seed=0, data=data).savefig(out / "kernel.png")
    print(f"wrote {out / 'loss.png'} and {out / 'kernel.png'}")


if __name__ == "__main__":
    main()
