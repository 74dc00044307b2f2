"""The compile cache: a later call of the same structure reuses the compiled program, gives
the very numbers a fresh compilation gives, and anything structural compiles anew."""

import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow

N, D, M = 24, 6, 32


def _data(seed):
    kx, kt = jax.random.split(jax.random.key(100 + seed))
    x = jax.random.normal(kx, (N, D))
    return x, jnp.tanh(x @ jax.random.normal(kt, (D,)))


def _params(seed, m=M):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"W": jax.random.normal(k1, (m, D)), "c": jax.random.normal(k2, (m,))}


def loss_args(p, a):
    x, y = a
    return 0.5 * jnp.mean((jnp.tanh(x @ p["W"].T) @ p["c"] / p["c"].shape[0] - y) ** 2)


def c_norm(p, a):
    return jnp.linalg.norm(p["c"])


def _same(a, b):
    """Bitwise-equal save-time records and final state."""
    np.testing.assert_array_equal(a.ts, b.ts)
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.grad_norm, b.grad_norm)
    np.testing.assert_array_equal(a.theta_final, b.theta_final)
    assert a.stats["num_steps"] == b.stats["num_steps"]


VARIANTS = {
    "params": dict(params=_params(1)),
    "t1": dict(t1=7.5),
    "tolerances": dict(rtol=1e-7, atol=1e-9),
    "save_times": dict(ts=np.linspace(0.0, 5.0, 20) ** 1.1),
    "eta": dict(eta=40.0),
    "data": dict(args=_data(1)),
    "loss_target": dict(loss_target=1e-3),
    "max_steps": dict(max_steps=50_000),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_new_values_reuse_the_program_and_give_fresh_numbers(name):
    base = dict(params=_params(0), t1=5.0, rtol=1e-8, atol=1e-10, eta=float(M), args=_data(0))
    base["ts"] = np.linspace(0.0, 5.0, 20)
    loss_target = dict(loss_target=1e-9) if name == "loss_target" else {}

    def call(**kw):
        kw = {**base, **loss_target, **kw}
        p, t1 = kw.pop("params"), kw.pop("t1")
        if "ts" in kw and kw["ts"][-1] > t1:
            kw["ts"] = kw["ts"] * (t1 / kw["ts"][-1])
        return gflow.simulate(loss_args, p, t1, metrics={"c": c_norm}, **kw)

    gflow.clear_cache()
    first = call()
    assert not first.stats["cache_hit"] and first.stats["compile_seconds"] > 0
    again = call(**VARIANTS[name])
    assert again.stats["cache_hit"], name
    assert again.stats["compile_seconds"] == 0.0
    gflow.clear_cache()
    fresh = call(**VARIANTS[name])
    assert not fresh.stats["cache_hit"]
    _same(again, fresh)
    np.testing.assert_array_equal(again.metrics["c"], fresh.metrics["c"])
    assert gflow.cache_info()["misses"] == 1


def test_structure_changes_compile_anew():
    gflow.clear_cache()
    a = gflow.simulate(loss_args, _params(0), 3.0, eta=float(M), args=_data(0))
    b = gflow.simulate(loss_args, _params(0, m=M + 1), 3.0, eta=float(M), args=_data(0))
    c = gflow.simulate(loss_args, _params(0), 3.0, eta=float(M), args=_data(0), solver="dopri5")
    d = gflow.simulate(
        loss_args, _params(0), 3.0, eta=float(M), args=_data(0), ts=np.linspace(0, 3.0, 7)
    )
    e = gflow.simulate(
        loss_args, _params(0), 3.0, eta=float(M), args=_data(0), metrics={"c": c_norm}
    )
    assert not any(s.stats["cache_hit"] for s in (a, b, c, d, e))
    assert gflow.cache_info()["misses"] == 5


def test_args_equals_closure_and_closure_loss_still_works():
    x, y = _data(0)
    p = _params(0)
    with_args = gflow.simulate(loss_args, p, 4.0, eta=float(M), args=(x, y))
    closure = gflow.simulate(lambda q: loss_args(q, (x, y)), p, 4.0, eta=float(M))
    np.testing.assert_allclose(with_args.loss, closure.loss, rtol=1e-12, atol=1e-15)


def test_cache_size_bounds_and_evicts_least_recent():
    old = gflow.cache_size()
    try:
        gflow.clear_cache()
        gflow.cache_size(1)
        gflow.simulate(loss_args, _params(0), 2.0, eta=float(M), args=_data(0))
        gflow.simulate(loss_args, _params(0), 2.0, eta=float(M), args=_data(0), solver="dopri5")
        assert gflow.cache_info()["size"] == 1
        again = gflow.simulate(loss_args, _params(0), 2.0, eta=float(M), args=_data(0))
        assert not again.stats["cache_hit"]  # evicted by the dopri5 program
        with pytest.raises(ValueError, match="size"):
            gflow.cache_size(-1)
    finally:
        gflow.cache_size(old)


def test_every_path_hits_on_its_second_call(tmp_path):
    data0, data1 = gflow.make_synthetic(n=16, d=4, seed=0), gflow.make_synthetic(n=16, d=4, seed=1)
    m0 = gflow.TwoLayer(d=4, m=16, key=jax.random.key(0))
    m1 = gflow.TwoLayer(d=4, m=16, key=jax.random.key(1))
    gflow.clear_cache()
    # MSE front ends: new data and a new model of the same shapes
    assert not gflow.simulate_mse(m0, data0, 3.0).stats["cache_hit"]
    assert gflow.simulate_mse(m1, data1, 4.0).stats["cache_hit"]
    # gradient descent: a new step size (same number of steps)
    assert not gflow.descend_mse(m0, data0, dt=0.1, n_steps=20).stats["cache_hit"]
    assert gflow.descend_mse(m1, data1, dt=0.05, n_steps=20).stats["cache_hit"]
    # ... and another number of steps recording as many (21) steps: the same program
    assert gflow.descend_mse(m1, data1, dt=0.025, n_steps=40, save_every=2).stats["cache_hit"]
    # modified flow: a new h
    loss, _ = gflow.mse_problem(m0, data0)
    tr = m0.trainable()
    assert not gflow.simulate_modified(loss, m0, 1.0, 0.1, trainable=tr).stats["cache_hit"]
    assert gflow.simulate_modified(loss, m1, 1.0, 0.05, trainable=tr).stats["cache_hit"]
    # checkpointed segments
    kw = dict(eta=16.0, args=_data(0), ts=np.linspace(0.0, 2.0, 9))
    ck = lambda name: gflow.Checkpoint(tmp_path / name, segments=3)  # noqa: E731
    first = gflow.simulate(loss_args, _params(0, 16), 2.0, checkpoint=ck("a.npz"), **kw)
    second = gflow.simulate(loss_args, _params(1, 16), 2.0, checkpoint=ck("b.npz"), **kw)
    assert not first.stats["cache_hit"] and second.stats["cache_hit"]
    # ensembles (seeds vmapped), shared data
    build = lambda k: gflow.TwoLayer(d=4, m=16, key=k)  # noqa: E731
    e0 = gflow.simulate_mse_ensemble(build, data0, 2.0, seeds=[0, 1])
    e1 = gflow.simulate_mse_ensemble(build, data1, 2.0, seeds=[2, 3], max_steps=5_000)
    assert not e0.stats["cache_hit"] and e1.stats["cache_hit"]  # max_steps too is a value


def test_gflow_run_analyses_reuse_the_program_with_the_new_data_and_init(tmp_path):
    """The analysis metrics of `gflow run` (kernel spectrum with H(0), Schur bound, layer
    movement from W(0), predictions on train and test inputs) pass their arrays as
    program arguments: a second run of the same shapes with another seed (new data, new
    initialization) reuses the program, in the checkpointed (segmented) path too, and its
    numbers are those of a fresh compile (no stale H(0), W(0) or inputs)."""
    from gflow._config import default_config, validate
    from gflow._run import run_config

    def cfg(seed):
        c = default_config()
        c["seed"] = seed
        c["data"].update(n=12, d=16, n_test=8)
        c["model"]["width"] = 24
        c["flow"].update(t1=5.0, n_save=6)
        c["output"]["segments"] = 2
        return validate(c)

    def arrays(out):
        with np.load(out / "trajectory.npz") as z:
            return {k: z[k] for k in z.files}

    gflow.clear_cache()
    first = run_config(cfg(0), tmp_path / "a", progress=False)
    second = run_config(cfg(1), tmp_path / "b", progress=False)
    assert not first["stats"]["cache_hit"] and second["stats"]["cache_hit"]
    gflow.clear_cache()
    fresh = run_config(cfg(1), tmp_path / "c", progress=False)
    assert not fresh["stats"]["cache_hit"]
    got, want, other = arrays(tmp_path / "b"), arrays(tmp_path / "c"), arrays(tmp_path / "a")
    names = [k for k in want if k.startswith(("kernel_", "metric_", "schur"))]
    assert {"kernel_eigvals", "kernel_change", "metric_movement_W", "metric_pred_test"} <= set(
        names
    ), names
    for k in names:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        assert not np.array_equal(got[k], other[k]), k  # the seed changed every record
    # at t = 0 the run's own H(0) and W(0): zero change up to round-off (another seed's
    # H(0) or W(0) would give a change of order one)
    assert got["kernel_change"][0] < 1e-12 and got["metric_movement_W"][0] == 0.0


def test_checkpointed_call_of_a_known_structure_does_not_trace_again(tmp_path, monkeypatch):
    # the zero carry that types the segment program comes from a shape-only trace of the
    # solver's start; a later call of the same structure reuses it (30-40 ms per call)
    traces = []
    real = eqx.filter_eval_shape
    monkeypatch.setattr(eqx, "filter_eval_shape", lambda *a, **k: traces.append(1) or real(*a, **k))
    kw = dict(eta=16.0, args=_data(0), ts=np.linspace(0.0, 2.0, 9))
    ck = lambda name: gflow.Checkpoint(tmp_path / name, segments=3)  # noqa: E731
    gflow.clear_cache()
    first = gflow.simulate(loss_args, _params(0, 16), 2.0, checkpoint=ck("a.npz"), **kw)
    n_first = len(traces)
    second = gflow.simulate(loss_args, _params(1, 16), 3.0, checkpoint=ck("b.npz"), **kw)
    assert n_first >= 1 and len(traces) == n_first
    assert second.stats["cache_hit"] and not first.stats["cache_hit"]
    assert not np.array_equal(first.loss, second.loss)  # new values, fresh numbers


def test_equinox_modules_with_function_fields():
    """eqx.nn.MLP holds its activation (a function) as a field: partitioned out as static."""
    mlp = eqx.nn.MLP(D, "scalar", 16, 2, activation=jnp.tanh, key=jax.random.key(0))
    x, y = _data(0)

    def mlp_loss(model, a):
        return 0.5 * jnp.mean((jax.vmap(model)(a[0]) - a[1]) ** 2)

    gflow.clear_cache()
    sol = gflow.simulate(mlp_loss, mlp, 2.0, args=(x, y))
    assert sol.success and sol.loss[-1] < sol.loss[0]
    assert isinstance(sol.final, eqx.nn.MLP) and sol.final.activation is jnp.tanh
    again = gflow.simulate(
        mlp_loss,
        eqx.nn.MLP(D, "scalar", 16, 2, activation=jnp.tanh, key=jax.random.key(1)),
        2.0,
        args=(x, y),
    )
    assert again.stats["cache_hit"]


def test_import_gflow_loads_neither_jax_nor_matplotlib():
    code = (
        "import sys, os; import gflow; "
        "print('jax' in sys.modules, 'matplotlib' in sys.modules, os.environ.get('JAX_ENABLE_X64'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "GFLOW_X64")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["False", "False", "1"], out.stderr
    # and the first use gives float64
    code = "import gflow, jax.numpy as jnp; print(jnp.zeros(1).dtype, gflow.simulate.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["float64", "simulate"], out.stderr
    # nor does the CLI's parser (`gflow --help`, every subcommand's --help)
    code = (
        "import sys, contextlib, io; from gflow._cli._main import main\n"
        "for cmd in ([], ['run'], ['reproduce'], ['sweep'], ['bench']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main([*cmd, '--help'])\n"
        "print('jax' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_persistent_cache_is_opt_out(tmp_path, monkeypatch):
    from gflow._flow import _cache

    monkeypatch.setenv("GFLOW_COMPILE_CACHE", "0")
    assert gflow.enable_persistent_cache(tmp_path) is None
    monkeypatch.setenv("GFLOW_CACHE_DIR", str(tmp_path / "c"))
    assert _cache.default_cache_dir() == str(tmp_path / "c")
    with pytest.raises(ValueError, match="GFLOW_CACHE_DIR"):
        monkeypatch.setenv("GFLOW_COMPILE_CACHE", "1")
        blocker = tmp_path / "file"
        blocker.write_text("x")
        gflow.enable_persistent_cache(blocker / "sub")


def _compiles(caplog, fn) -> int:
    """How many programs JAX compiles while `fn()` runs (from its compile log)."""
    import logging

    caplog.clear()
    with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
        fn()
    return sum(r.getMessage().startswith("Compiling") for r in caplog.records)


def test_host_data_reaches_the_device_without_compiling(caplog):
    """`device_array` (used for data, tolerances and analysis inputs) compiles nothing,
    where jnp.asarray of host data compiles a program per new shape (the check detects
    that, so it can fail)."""
    from gflow._flow._flatten import device_array

    x = np.arange(3 * 7 * 11, dtype=np.float64).reshape(3, 7, 11)
    got = device_array(x)
    assert isinstance(got, jax.Array) and got.dtype == jnp.asarray(x).dtype
    np.testing.assert_array_equal(np.asarray(got), x)
    assert device_array(got) is got
    assert device_array([1, 2]).dtype == jnp.asarray([1, 2]).dtype
    assert _compiles(caplog, lambda: device_array(np.ones((5, 13, 17)))) == 0
    assert _compiles(caplog, lambda: jnp.asarray(np.ones((5, 13, 19)))) >= 1


def test_flat_state_is_checked_and_raveled_by_one_program(caplog):
    """A new parameter structure costs one compiled program for the finite check and the
    ravel of a flat state (two before); the values are ravel_pytree's, and a non-finite
    entry is still refused."""
    from jax.flatten_util import ravel_pytree

    from gflow._flow._flatten import flatten_problem

    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.standard_normal((7, 23))),
        "b": jnp.asarray(rng.standard_normal(29)),
    }
    made = []
    assert (
        _compiles(caplog, lambda: made.append(flatten_problem(lambda p: jnp.sum(p["b"]), params)))
        == 1
    )
    np.testing.assert_array_equal(np.asarray(made[0].theta0), np.asarray(ravel_pytree(params)[0]))
    bad = {**params, "b": params["b"].at[3].set(jnp.nan)}
    with pytest.raises(ValueError, match="NaN or inf"):
        flatten_problem(lambda p: jnp.sum(p["b"]), bad)


def _clip_floor(t1):
    # diffrax's threshold in `_integrate.loop`: t1 less 100 ULPs, by 100 chained calls
    from diffrax import _integrate

    floor = t1
    for _ in range(100):
        floor = _integrate.eqxi.prevbefore(floor)
    return floor


def test_folded_clip_floor_gives_diffrax_threshold_bits_and_compiles_one_loop():
    """Under `folded_clip_floor`, diffrax's t1 - 100 ULP chain gives the same bits as
    the 100 plain calls (at ordinary, large, small, subnormal, zero, negative and
    infinite t1), compiles to one loop instead of ~1,200 operations (the check fails if
    the chain is not folded), nests, and restores diffrax's module on exit."""
    from diffrax import _integrate

    from gflow._flow._cache import folded_clip_floor

    module = _integrate.eqxi
    ts = np.array([400.0, 1.0, 1e308, 3e-300, 5e-324, 0.0, -2.5, -1e-310, np.inf, -np.inf])
    plain = jax.jit(jax.vmap(_clip_floor)).lower(jnp.asarray(ts)).compile()
    with folded_clip_floor():
        with folded_clip_floor():
            assert _integrate.eqxi is not module
        assert _integrate.eqxi is not module
        folded = jax.jit(jax.vmap(_clip_floor)).lower(jnp.asarray(ts)).compile()
        # eager code (another thread's) meanwhile gets the original calls
        eager = _clip_floor(jnp.asarray(ts))
    assert _integrate.eqxi is module
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(_clip_floor(jnp.asarray(ts))))
    np.testing.assert_array_equal(
        np.asarray(folded(jnp.asarray(ts))).view(np.int64),
        np.asarray(plain(jnp.asarray(ts))).view(np.int64),
    )
    # the reference is not trivial: the floor lies below t1
    assert np.asarray(plain(jnp.asarray(ts)))[0] < 400.0

    def ops(exe):
        return sum("nextafter" in line for line in exe.as_text().splitlines())

    assert ops(folded) < 50 < 500 < ops(plain), (ops(folded), ops(plain))


def test_solve_program_with_folded_clip_floor_is_bitwise_the_unfolded_one():
    """The engine's solve, compiled under gflow's tracing settings and under equinox's
    checks alone, gives the same bits: records, final state, end time and step counts
    (an adaptive run whose last step is clipped onto t1, and gradient descent's grid)."""
    from gflow._flow import _engine
    from gflow._flow._cache import checks_without_callbacks, structure_key, tracing

    data = gflow.make_synthetic(12, 6, seed=2)
    model = gflow.TwoLayer(6, 16, scaling="mf", key=jax.random.key(3))
    problem = gflow.Problem.from_model(model, data).flat()
    import diffrax

    def spec(t1, n_ts, **kw):
        return _engine.make_spec(problem, 0.0, t1, np.linspace(0.0, t1, n_ts), **kw)

    specs = [
        spec(
            7.3,
            5,
            solver=diffrax.Tsit5(),
            stepsize_controller=diffrax.PIDController(rtol=1e-7, atol=1e-9),
            dt0=None,
            max_steps=10_000,
            limit_in_loop=True,
        ),
        spec(
            0.9,
            4,
            solver=diffrax.Euler(),
            stepsize_controller=diffrax.ConstantStepSize(),
            dt0=0.1,
            max_steps=9,
        ),
    ]
    for spec in specs:
        _, dyn, static = structure_key(_engine.solve, spec)

        def program(d, static=static):
            return _engine.solve(eqx.combine(d, static))

        outs = []
        for ctx in (checks_without_callbacks, tracing):
            with ctx():
                exe = jax.jit(program).lower(dyn).compile()
            outs.append(jax.device_get(exe(dyn)))
        assert int(outs[0]["stats"]["num_steps"]) > 3
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), *outs
        )
