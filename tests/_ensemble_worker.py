"""Run one small ensemble on whatever devices this process sees and save the result.

Used by test_sharding.py in subprocesses, because XLA_FLAGS (forced host devices) and
jax.distributed must be set before JAX starts. Usage: python _ensemble_worker.py OUT.npz [MEMBERS]
(under jax.distributed set GFLOW_DISTRIBUTED=1 and GFLOW_COORDINATOR/NUM_PROCESSES/
PROCESS_ID; every process writes OUT.npz with its process index appended).
"""

import sys

import jax
import numpy as np

import gflow  # GFLOW_DISTRIBUTED=1 joins the multi-host job here, before any JAX work


def main(out: str, members: str = "auto") -> None:
    d, m, n = 5, 8, 4
    seeds = [0, 1, 2, 3, 4]  # 5 members: padded to 8 on 4 devices
    datasets = [gflow.make_synthetic(n, d, n_test=3, seed=10 + s) for s in seeds]
    ens = gflow.simulate_mse_ensemble(
        lambda key: gflow.TwoLayer(d, m, key=key),
        datasets,
        40.0,
        seeds=seeds,
        loss_target=1e-3,
        ts=np.linspace(0.0, 40.0, 21),
        members=members,
    )
    if jax.process_count() > 1:
        out = out.replace(".npz", f"_{jax.process_index()}.npz")
    np.savez(
        out,
        loss=ens.loss,
        test_loss=ens.metrics["test_loss"],
        theta_final=ens.theta_final,
        t_final=ens.t_final,
        num_steps=ens.stats["num_steps"],
        n_devices=ens.stats["n_devices"],
        n_padded=ens.stats["n_padded"],
        process_count=ens.stats["process_count"],
        results=np.array(ens.results),
        members=np.array(ens.settings["members"]),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
