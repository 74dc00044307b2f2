"""A tiny run of the benchmarks: the JSON has its fields and the accuracy checks pass.
No timing is asserted (timings are benchmark output, not test conditions)."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from gflow_bench import _common as c  # noqa: E402  (the repository's benchmark code)
from gflow_bench import _orders, _work  # noqa: E402
from gflow_bench._machine import roofline_seconds, step_cost  # noqa: E402

from gflow._cli._main import main  # noqa: E402


def test_orders_tiny():
    spec = c.two_layer(8, n=8, d=3)
    o = _orders._orders_one("two_layer_mf", spec, 1.0, [20, 40, 80])
    # GD is first order to the flow and second order to the modified flow (fitted slopes
    # within 0.15; measured 1.00-1.05 and 2.00-2.03 on the benchmark sizes).
    assert o["check_order1"] and o["check_order2"], o
    eos = _orders._edge_of_stability(spec, 30, [0.5, 1.5])
    runs = eos["runs"]
    # below the threshold (h = 0.5 * 2/lambda0) GD tracks the flow; above (1.5x) it departs
    assert runs[0]["departure_time"] is None
    assert runs[1]["departure_time"] is not None
    assert np.isclose(runs[0]["lambda_max_flow"][0], eos["lambda_max_at_init"], rtol=0.05)


def test_cli_quick_json_and_figures(tmp_path):
    # `gflow bench --quick --only roofline work_precision`: JSON fields, accuracy checks
    assert main(["bench", "--quick", "--only", "roofline", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "roofline.json").read_text())
    assert set(data) >= {"limits", "rows", "machine", "target_within_2x_met", "wall_seconds"}
    row = data["rows"][0]
    assert row["measured_step_seconds"] > 0 and row["roofline_step_seconds"] > 0
    assert data["limits"]["matmul_flops_per_s"] > 1e8
    assert data["machine"]["jax"]


def test_interp_and_step_cost():
    # log-log interpolation is exact on a power law: work = 10 * err^-1/2
    errs = [1e-2, 1e-4, 1e-6]
    xs = [10 * e**-0.5 for e in errs]
    assert np.isclose(c.interp_at(xs, errs, 1e-5), 10 * 1e-5**-0.5)
    assert c.interp_at(xs, errs, 1e-8) is None
    cost = step_cost(64, 1024, 16)
    assert cost["n_params"] == 1024 * 17
    assert cost["grad_flops"] == 4 * 64 * 1024 * 16 + 12 * 64 * 1024
    # the roofline takes, per kind of kernel, whichever limit binds
    lim = {"matmul_flops_per_s": 1e10, "bandwidth_bytes_per_s": 1e10, "tanh_per_s": 1e8}
    roof = roofline_seconds(cost, lim)
    assert np.isclose(roof["grad_elementwise"], 64 * 1024 / 1e8)  # tanh-bound
    assert np.isclose(roof["grad_dots"], cost["grad_dot_flops"] / 1e10)  # FLOP-bound
    assert np.isclose(roof["step"], 6 * roof["grad"] + roof["vector"])


def test_work_precision_rows_consistent(tmp_path, monkeypatch):
    monkeypatch.setattr(_work, "REF_TOL", 1e-12)
    prob = c.flat(c.linear(n=16, d=4, cond=10.0))
    ts = np.linspace(0.25, 1.0, 4)
    ref = c.sweep_solve(prob, ts, solver=_work.diffrax.Dopri8(), tol=1e-12)["thetas"]
    rows = _work._curve(prob, ts, ref, _work.diffrax.Euler(), dts=[1 / 16, 1 / 64])
    # GD error is O(h): a 4x smaller step gives ~4x smaller error (3-5x allowed)
    assert 3 < rows[0]["error"] / rows[1]["error"] < 5
    assert rows[1]["grad_evals"] == 64
