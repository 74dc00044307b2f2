"""The disk store of compiled programs (gflow/_flow/_exe_store.py): keys that separate
every change that alters the traced program, no key for code outside gflow, and a
second process that loads the program without tracing and gets bitwise the same answer.
"""

import enum
import json
import os
import pickle
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow._flow import _exe_store as store
from gflow._flow._cache import structure_key
from gflow._flow._segments import segment_step


def _key(fn, spec):
    _, dyn, static = structure_key(fn, spec)
    return store.program_key(fn, dyn, static)


def _gflow_namespace(src):
    """Functions defined as if in a gflow module (whose code the key's source digest
    covers), so that `describe` accepts them."""
    ns = {"__name__": "gflow._fake_module"}
    exec(compile(src, store.__file__, "exec"), ns)  # noqa: S102
    return ns


_closure = _gflow_namespace("def closure(c):\n    return lambda x: x * c\n")["closure"]


def test_describe_separates_what_changes_the_program():
    d = store.describe
    # dynamic arrays: shape, dtype and sharding, not values
    assert d(jnp.zeros(3)) == d(jnp.ones(3))
    assert d(jnp.zeros(3)) != d(jnp.zeros(4))
    assert d(jnp.zeros(3)) != d(jnp.zeros(3, jnp.float32))
    # constants captured by a closure: their values
    assert d(_closure(np.ones(2))) == d(_closure(np.ones(2)))
    assert d(_closure(np.ones(2))) != d(_closure(np.full(2, 2.0)))
    assert d(_closure(2.0)) != d(_closure(3.0))
    # scalars by type and value
    assert d(1) != d(1.0) != d(True)
    # static fields of a module, and the module type
    m0 = gflow.TwoLayer(d=3, m=4, key=jax.random.key(0))
    m1 = gflow.TwoLayer(d=3, m=4, key=jax.random.key(1))
    assert d(m0) == d(m1)  # weights are arguments
    assert d(m0) != d(gflow.TwoLayer(d=3, m=4, key=jax.random.key(0), scaling="ntk"))
    assert d(m0) != d(gflow.TwoLayer(d=3, m=5, key=jax.random.key(0)))
    # tree structures by node types and their static data
    s0 = jax.tree_util.tree_structure(m0)
    assert d(s0) == d(jax.tree_util.tree_structure(m1))
    assert d(s0) != d(
        jax.tree_util.tree_structure(gflow.TwoLayer(d=3, m=4, key=jax.random.key(0), scaling="ntk"))
    )


def test_two_lambdas_of_one_scope_differ_by_code():
    # identical module, qualified name and closure: only the code tells them apart
    src = "def make():\n    return (lambda x: x + 1.0), (lambda x: x * 2.0)\n"
    f, g = _gflow_namespace(src)["make"]()
    assert f.__qualname__ == g.__qualname__ and f.__module__ == "gflow._fake_module"
    assert store.describe(f) != store.describe(g)


def test_code_outside_gflow_has_no_description():
    with pytest.raises(store.Unstable, match="module"):
        store.describe(lambda x: x)  # defined in this test module: not in the digest
    with pytest.raises(store.Unstable):
        store.describe(object())
    with pytest.raises(store.Unstable):
        store.describe(_closure(object()))

    class Local(eqx.Module):
        a: int = 1

    with pytest.raises(store.Unstable):
        store.describe(Local())

    class Choice(enum.IntEnum):  # an int, but its type's code is the user's
        A = 1

    with pytest.raises(store.Unstable):
        store.describe(Choice.A)


def test_program_key_of_a_gflow_solve(tmp_path, monkeypatch):
    data = gflow.make_synthetic(n=8, d=3, seed=0)
    problem = gflow.Problem.from_model(gflow.TwoLayer(d=3, m=8, key=jax.random.key(0)), data)
    prob2 = gflow.Problem.from_model(gflow.TwoLayer(d=3, m=8, key=jax.random.key(1)), data)
    prob3 = gflow.Problem.from_model(gflow.TwoLayer(d=3, m=9, key=jax.random.key(0)), data)
    flat = [p.flat() for p in (problem, prob2, prob3)]
    keys = [_key(segment_step, (f,)) for f in flat]
    assert keys[0] is not None and len(keys[0]) == 64
    assert keys[0] == keys[1]  # new initial weights: same program
    assert keys[0] != keys[2]  # another width: another program
    monkeypatch.setenv("GFLOW_FAST_EXIT", "0")  # how the command exits: same program
    assert _key(segment_step, (flat[0],)) == keys[0]
    monkeypatch.setenv("GFLOW_SEGMENT_DELAY", "0.1")  # other GFLOW_ settings: in the key
    assert _key(segment_step, (flat[0],)) != keys[0]

    # a loss written outside gflow: no key, so never stored
    user = gflow.Problem(loss=lambda p: jnp.sum(p["w"] ** 2), params={"w": jnp.ones(3)})
    assert _key(segment_step, (user.flat(),)) is None


_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import jax, numpy as np, gflow
    from gflow._flow._cache import enable_persistent_cache
    from gflow._flow import _exe_store
    enable_persistent_cache(sys.argv[1])
    if os.environ.get("TEST_STORE_UNGUARDED"):  # store even programs JAX loaded
        _exe_store.jax_cache_hits = lambda: 0
    if os.environ.get("TEST_SOURCE_DIGEST"):  # as if gflow's code had changed
        _exe_store._source_digest = lambda: os.environ["TEST_SOURCE_DIGEST"]
    m, t1 = int(sys.argv[2]), float(sys.argv[3])
    data = gflow.make_synthetic(n=16, d=4, seed=0)
    model = gflow.TwoLayer(d=4, m=m, key=jax.random.key(int(sys.argv[4])))
    metrics = None
    if os.environ.get("TEST_METRIC_SOURCE"):  # a metric as if in a gflow module
        ns = {"__name__": "gflow._test_metric"}
        exec(os.environ["TEST_METRIC_SOURCE"], ns)
        metrics = {"lam": ns["lam"]}
    sol = gflow.simulate_mse(model, data, t1, ts=np.linspace(0.0, t1, 9), metrics=metrics)
    h = hashlib.sha256(np.asarray(sol.loss).tobytes() + np.asarray(sol.ts).tobytes())
    if metrics:
        h.update(np.asarray(sol.metrics["lam"]).tobytes())
    h = h.hexdigest()
    print(json.dumps({"source": sol.stats["program_source"], "hash": h,
                      "loss": float(sol.loss[-1])}))
    """
)


def _run(folder, m=8, t1=2.0, seed=0, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "GFLOW_COMPILE_CACHE"}
    env.update(env_extra or {})
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(folder), str(m), str(t1), str(seed)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_program_and_gets_the_same_answer(tmp_path):
    folder = tmp_path / "xla"
    first = _run(folder)
    assert first["source"] == "compiled"
    entries = list((folder / store.SUBFOLDER).glob("*.pkl"))
    assert len(entries) == 1
    second = _run(folder)
    assert second == {**first, "source": "disk"}  # bitwise the same losses and times
    # gflow's code changed (an upgrade that leaves this program's HLO as it was): a new
    # key, a new program name for JAX's cache, so XLA compiles it and it is stored
    upgraded = {"TEST_SOURCE_DIGEST": "another version"}
    assert _run(folder, env_extra=upgraded) == {**first, "source": "compiled"}
    assert _run(folder, env_extra=upgraded) == {**first, "source": "disk"}
    assert len(list((folder / store.SUBFOLDER).glob("*.pkl"))) == 2
    # new values of the same structure: loaded; another width: compiled and added
    other_values = _run(folder, t1=3.0, seed=1)
    assert other_values["source"] == "disk" and other_values["hash"] != first["hash"]
    assert _run(folder, m=9)["source"] == "compiled"
    assert len(list((folder / store.SUBFOLDER).glob("*.pkl"))) == 3

    # a damaged entry is dropped and the solve compiles; XLA's program then comes from
    # JAX's persistent cache, which is never stored again (`jax_cache_hits`), ...
    entries[0].write_bytes(b"not a program")
    again = _run(folder)
    assert again == {**first, "source": "compiled"}
    assert not entries[0].exists()
    # ... until XLA compiles it in a process: then it is stored, and loads
    for path in folder.iterdir():
        if path.is_file():
            path.unlink()  # JAX's entries
    assert _run(folder)["source"] == "compiled"
    assert entries[0].exists()
    assert _run(folder) == {**first, "source": "disk"}


def test_store_off_with_the_persistent_cache(tmp_path):
    folder = tmp_path / "xla"
    off = {"GFLOW_COMPILE_CACHE": "0"}
    assert _run(folder, env_extra=off)["source"] == "compiled"
    assert not (folder / store.SUBFOLDER).exists()  # nothing a later process could load


def test_store_evicts_least_recently_used(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "MAX_ENTRIES", 2)
    monkeypatch.setattr(store, "folder", lambda: tmp_path)
    x = jnp.arange(3.0)
    for i, c in enumerate((1.0, 2.0, 3.0)):
        exe = jax.jit(lambda v, c=c: v * c).lower(x).compile()
        assert store.store(f"k{i}", exe, x)
        os.utime(tmp_path / f"k{i}.pkl", (i, i))  # distinct, ordered use times
    assert sorted(p.name for p in tmp_path.glob("*.pkl")) == ["k1.pkl", "k2.pkl"]
    loaded = store.load("k2", x)
    np.testing.assert_array_equal(loaded(x), x * 3.0)
    assert store.load("k0", x) is None


def test_programs_with_host_callbacks_are_not_stored(tmp_path, monkeypatch):
    # a callback is registered in the process that compiled the program: a copy loaded
    # elsewhere could not call it (JAX's persistent cache skips these programs too)
    monkeypatch.setattr(store, "folder", lambda: tmp_path)
    x = jnp.arange(3.0)
    shape = jax.ShapeDtypeStruct(x.shape, x.dtype)
    exe = jax.jit(lambda v: jax.pure_callback(np.sin, shape, v)).lower(x).compile()
    assert not store.store("cb", exe, x)
    exe = jax.jit(lambda v: jnp.sin(v)).lower(x).compile()
    assert store.store("plain", exe, x)
    assert [p.name for p in tmp_path.glob("*.pkl")] == ["plain.pkl"]


def test_an_entry_that_fails_to_run_costs_a_compile_not_a_result(tmp_path):
    # Without the guard of `jax_cache_hits`, a program XLA took from JAX's persistent
    # cache is stored; on CPU such an entry loads but fails when run. The loaded program's
    # first run is checked: the entry is removed, the program compiled and run instead.
    folder = tmp_path / "xla"
    first = _run(folder)  # compiled by XLA: JAX's cache and the store both get it
    (entry,) = (folder / store.SUBFOLDER).glob("*.pkl")
    entry.unlink()
    unguarded = _run(folder, env_extra={"TEST_STORE_UNGUARDED": "1"})
    assert unguarded == {**first, "source": "compiled"} and entry.exists()
    loaded = _run(folder)  # loads the bad entry, recovers
    assert loaded == {**first, "source": "disk"}
    assert not entry.exists()


_KEY_SCRIPT = textwrap.dedent(
    """
    import jax, gflow
    from gflow._flow import _exe_store
    from gflow._flow._cache import structure_key
    from gflow._flow._segments import segment_step
    data = gflow.make_synthetic(n=8, d=3, seed=0)
    problem = gflow.Problem.from_model(gflow.TwoLayer(d=3, m=8, key=jax.random.key(0)), data)
    _, dyn, static = structure_key(segment_step, (problem.flat(),))
    print(_exe_store.program_key(segment_step, dyn, static))
    """
)


def test_key_is_the_same_in_every_process(tmp_path):
    # other string hashing, and a profiler (which changes reference counts: a key from
    # marshal.dumps of the code differed under cProfile)
    script = tmp_path / "key.py"
    script.write_text(_KEY_SCRIPT)
    profiled = ["-m", "cProfile", "-o", os.devnull]
    keys = []
    for seed, prefix in (("1", []), ("2", []), ("3", profiled)):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, *prefix, str(script)], capture_output=True, text=True, env=env
        )
        assert out.returncode == 0, out.stderr[-2000:]
        keys.append(out.stdout.split()[-1])
    assert len(keys[0]) == 64 and keys[0] == keys[1] == keys[2]


def test_code_digest_ignores_reference_counts():
    # marshal.dumps(code) changes when a constant gains a reference (its FLAG_REF), so a
    # key built on it differed between processes; the digest must not
    src = "def f():\n    return ('a long constant string here', 1.5, (1, 2))\n"
    code = _gflow_namespace(src)["f"].__code__
    before = store._code_digest(code)
    refs = [*code.co_consts, *code.co_names, code.co_code, code.co_filename]
    assert store._code_digest(code) == before
    assert refs  # held until here
    other = _gflow_namespace(src.replace("1.5", "2.5"))["f"].__code__
    assert store._code_digest(other) != before


def test_a_loaded_program_calling_lapack_runs(tmp_path):
    # JAX registers the CPU's LAPACK handlers when it first lowers a linear-algebra call;
    # a process that loads the program instead never lowers one. Without initializing
    # them before loading, this second process died of a segfault (a null handler).
    folder = tmp_path / "xla"
    src = "import jax.numpy as jnp\ndef lam(m):\n    return jnp.linalg.eigvalsh(m.W @ m.W.T)[0]\n"
    eigh = {"TEST_METRIC_SOURCE": src}
    first = _run(folder, env_extra=eigh)
    assert first["source"] == "compiled"
    (entry,) = (folder / store.SUBFOLDER).glob("*.pkl")
    assert "lapack_dsyevd_ffi" in pickle.loads(entry.read_bytes())["custom_calls"]
    assert _run(folder, env_extra=eigh) == {**first, "source": "disk"}
