"""Benchmarks 4 and 5: the machine's limits vs one RK step, and first-call latency.

Measured: f64 matmul FLOP/s (a large square product) and memory bandwidth (a streaming
a * x + b over a large array). Counted: the FLOPs and the minimum bytes of one gradient of
the mean-field two-layer MSE loss (n samples, width m, input dimension d) and of the
Runge-Kutta vector algebra of one Tsit5 step. The roofline estimate of a step adds the
kernels' times max(F_k / peak, B_k / bandwidth); the measured step time comes from a
constant-step Tsit5 solve through gflow's engine.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from gflow._flow._fused import FusedTsit5

from . import _common as c


def _time(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def limits(size: int = 2048, stream_mb: int = 256, n_tanh: int = 1 << 22) -> dict[str, float]:
    """Measured machine limits: f64 matmul FLOP/s (2 size^3 / t); memory bandwidth, a
    read-only reduction over a stream_mb MB array (bytes / t; no output buffer, so no
    page-fault cost of fresh allocations), and a read + write a * x + b for comparison;
    and f64 tanh throughput (evaluations / s of sum(tanh(x)), compute-bound: a tanh is a
    rational approximation of a few dozen operations, not one FLOP)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float64)
    t_mm = _time(jax.jit(lambda x: x @ x), a)
    x = jnp.ones((stream_mb * 2**20 // 8,), jnp.float64)
    t_read = _time(jax.jit(jnp.sum), x)
    t_rw = _time(jax.jit(lambda v: 2.0 * v + 1.0), x)
    z = jax.random.normal(jax.random.PRNGKey(1), (n_tanh,), jnp.float64)
    t_tanh = _time(jax.jit(lambda v: jnp.sum(jnp.tanh(v))), z)
    return {
        "matmul_size": size,
        "matmul_flops_per_s": 2.0 * size**3 / t_mm,
        "stream_bytes": x.nbytes,
        "bandwidth_bytes_per_s": x.nbytes / t_read,
        "read_write_bandwidth_bytes_per_s": 2.0 * x.nbytes / t_rw,
        "tanh_per_s": n_tanh / t_tanh,
    }


def step_cost(n: int, m: int, d: int) -> dict[str, float]:
    """FLOPs, minimum bytes (f64) and tanh evaluations of one gradient and of one Tsit5
    step (6 new evaluations, FSAL) on the two-layer loss with P = m (d + 1) parameters.

    Gradient, as two kinds of kernels:
      - the two matmuls Z = X W^T and grad W = dZ^T X (4nmd FLOPs; bytes: read X, W and
        dZ, write Z and grad W);
      - the elementwise passes A = tanh Z, f = A c / m, grad c = A^T r,
        dZ = (r c^T / m) * (1 - A^2) (12nm FLOPs besides nm tanh evaluations; bytes: read
        Z, write A, read A, write dZ, read c, write grad c).
    Tsit5 vector algebra: stage i forms y + h sum_{j<i} a_ij k_j (i + 1 reads, 1 write,
    2i FLOPs per entry) for i = 1..6, then the solution and error estimate (about 16
    reads/writes, 26 FLOPs per entry), and eta * grad per evaluation (2 reads, 1 write).
    """
    p = m * (d + 1)
    dot_flops = 4.0 * n * m * d
    dot_bytes = 8.0 * (n * d + 2 * m * d + 2 * n * m)
    elem_flops = 12.0 * n * m
    elem_bytes = 8.0 * (4 * n * m + 2 * m)
    evals = 6
    vec_flops = sum(2 * i for i in range(1, 7)) * p + 26 * p + evals * p
    vec_bytes = 8.0 * (sum(i + 2 for i in range(1, 7)) * p + 16 * p + evals * 3 * p)
    grad_flops = dot_flops + elem_flops
    grad_bytes = dot_bytes + elem_bytes
    return {
        "n_params": p,
        "grad_flops": grad_flops,
        "grad_bytes": grad_bytes,
        "grad_dot_flops": dot_flops,
        "grad_dot_bytes": dot_bytes,
        "grad_elementwise_bytes": elem_bytes,
        "grad_tanh": float(n * m),
        "evals_per_step": evals,
        "vector_flops": vec_flops,
        "vector_bytes": vec_bytes,
        "step_flops": evals * grad_flops + vec_flops,
        "step_bytes": evals * grad_bytes + vec_bytes,
    }


def roofline_seconds(cost: dict[str, float], lim: dict[str, float]) -> dict[str, float]:
    """Kernel-by-kernel roofline of one step: each kind of kernel takes the longest of
    its FLOPs at matmul peak, its bytes at the read bandwidth and (elementwise) its tanh
    evaluations at the measured tanh throughput; the kinds run one after another."""
    peak, bw = lim["matmul_flops_per_s"], lim["bandwidth_bytes_per_s"]
    dots = max(cost["grad_dot_flops"] / peak, cost["grad_dot_bytes"] / bw)
    elementwise = max(cost["grad_elementwise_bytes"] / bw, cost["grad_tanh"] / lim["tanh_per_s"])
    vector = max(cost["vector_flops"] / peak, cost["vector_bytes"] / bw)
    grad = dots + elementwise
    return {
        "grad_dots": dots,
        "grad_elementwise": elementwise,
        "grad": grad,
        "vector": vector,
        "step": cost["evals_per_step"] * grad + vector,
    }


def roofline(out: str, *, quick: bool = False) -> dict[str, Any]:
    start = time.perf_counter()
    lim = limits(1024 if quick else 2048, 64 if quick else 256)
    widths = [256] if quick else [8192, 16384]
    n, d = 64, 16
    rows = []
    configs = [("Tsit5", "flat", diffrax.Tsit5()), ("FusedTsit5", "tree", FusedTsit5())]
    for m in widths:
        spec = c.two_layer(m, n=n, d=d)
        prob = c.flat(spec)
        grad_only = jax.jit(lambda p, y: p.grad(y))
        t_grad = _time(grad_only, prob, prob.theta0, repeats=10)
        cost = step_cost(n, m, d)
        roof = roofline_seconds(cost, lim)
        estimate = roof["step"]
        for name, state, solver in configs:
            steps = 20 if quick else 50
            dt = 1e-3
            r = c.solve(
                c.flat(spec, state=state),
                np.array([steps * dt]),
                solver=solver,
                controller=diffrax.ConstantStepSize(),
                dt0=dt,
                repeats=3 if quick else 5,
            )
            per_step = r["run_seconds"] / r["num_steps"]
            rows.append(
                {
                    "width": m,
                    "n": n,
                    "d": d,
                    "solver": name,
                    "state": state,
                    **cost,
                    "measured_step_seconds": per_step,
                    "measured_grad_seconds": t_grad,
                    "roofline_step_seconds": estimate,
                    "roofline_grad_seconds": roof["grad"],
                    "roofline_parts_seconds": roof,
                    "step_over_roofline": per_step / estimate,
                    "achieved_flops_per_s": cost["step_flops"] / per_step,
                    "within_2x": per_step / estimate <= 2.0,
                }
            )
    best = {}
    for row in rows:
        best[row["width"]] = min(best.get(row["width"], np.inf), row["step_over_roofline"])
    result = {
        "benchmark": "roofline",
        "quick": quick,
        "limits": lim,
        "rows": rows,
        "solver": "constant step through gflow's engine: diffrax Tsit5 (flat state) and "
        "FusedTsit5 (tree state), the same method",
        "best_step_over_roofline": {str(k): v for k, v in best.items()},
        "target_within_2x_met": all(v <= 2.0 for v in best.values()),
        "wall_seconds": time.perf_counter() - start,
    }
    c.save(result, out, "roofline")
    return result


_LATENCY_SCRIPT = r"""
import json, time
t0 = time.perf_counter()
import gflow
from gflow._config import default_config, build_data, build_model
from gflow._flow._times import default_ts
t_import = time.perf_counter() - t0
cfg = default_config(); fc = cfg["flow"]
data, model = build_data(cfg), build_model(cfg)
k = fc["n_save"]
ts = default_ts(0.0, fc["t1"], n_linear=k // 2 + 1, n_log=k - k // 2)
t1 = time.perf_counter()
sol = gflow.simulate_mse(model, data, fc["t1"], ts=ts, solver=fc["solver"], rtol=fc["rtol"],
                         atol=fc["atol"], max_steps=fc["max_steps"], progress=False)
first_call = time.perf_counter() - t1
print(json.dumps({"import_seconds": t_import, "first_call_seconds": first_call,
                  "compile_seconds": sol.stats["compile_seconds"],
                  "run_seconds": sol.stats["run_seconds"], "n_params": sol.settings["n_params"],
                  "solver": sol.settings["solver"], "success": sol.success}))
"""


def latency(out: str, *, quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    """First-call latency of the default problem (`gflow run` without a config), each in a
    fresh Python process so nothing is cached."""
    start = time.perf_counter()
    runs = []
    for _ in range(repeats or (1 if quick else 5)):
        proc = subprocess.run(
            [sys.executable, "-c", _LATENCY_SCRIPT], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    comp = statistics.median(r["compile_seconds"] for r in runs)
    result = {
        "benchmark": "latency",
        "quick": quick,
        "runs": runs,
        "median_compile_seconds": comp,
        "median_first_call_seconds": statistics.median(r["first_call_seconds"] for r in runs),
        "target_compile_3s_met": comp <= 3.0,
        "wall_seconds": time.perf_counter() - start,
    }
    c.save(result, out, "latency")
    return result
