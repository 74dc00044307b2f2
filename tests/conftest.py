"""Test setup: float64 everywhere, and the size knob for slow scientific tests.

GFLOW_TEST_SIZE=small (what CI sets) runs tests marked `slow` at a reduced size;
GFLOW_TEST_SIZE=full runs them at the size the docs quote.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

# XLA options for the test session only (docs/performance.md, "Test suite"): the suite
# compiles several hundred solve programs and runs each for milliseconds, so it asks XLA's
# CPU backend for cheaper code generation (no fusion emitters, LLVM optimisation level 0):
# less compile time, and results that may differ from XLA's default code generation at
# rounding level only (no test asserts more). gflow itself never sets XLA_FLAGS.
# GFLOW_TEST_FAST_XLA=0 turns this off (tests then run with XLA's defaults, as users do).
# The flags are tried in a subprocess first, so an XLA that no longer knows them runs the
# suite with its defaults instead of aborting.
_FAST_XLA = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"
_WANT_FAST = os.environ.get("GFLOW_TEST_FAST_XLA", "1") != "0"
if _WANT_FAST and "GFLOW_TEST_XLA_FLAGS_SET" not in os.environ:
    _flags = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_XLA}".strip()
    try:
        _ok = (
            subprocess.run(
                [sys.executable, "-c", "import jax; jax.numpy.zeros(2).block_until_ready()"],
                env={**os.environ, "XLA_FLAGS": _flags, "JAX_PLATFORMS": "cpu"},
                capture_output=True,
                timeout=300,
            ).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        _ok = False
    if _ok:
        os.environ["XLA_FLAGS"] = _flags
    else:
        print(f"conftest: XLA refused {_FAST_XLA!r}; tests use XLA's defaults", file=sys.stderr)
    os.environ["GFLOW_TEST_XLA_FLAGS_SET"] = "1"  # xdist workers inherit the decision

import jax  # noqa: E402  (XLA_FLAGS above must be set before JAX starts)

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402

# JAX's persistent compilation cache in a folder of this test session only (removed at
# exit), shared with the CLI subprocesses the tests start: tests that build the same
# program (same HLO) compile it once. Nothing carries over between sessions, so no test
# depends on an earlier run; GFLOW_TEST_COMPILE_CACHE=0 turns it off.
if os.environ.get("GFLOW_TEST_COMPILE_CACHE", "1") != "0":
    # pytest-xdist workers inherit the folder of the controller (which removes it)
    _inherited = os.environ.get("GFLOW_TEST_XLA_DIR")
    if os.environ.get("PYTEST_XDIST_WORKER") and _inherited and os.path.isdir(_inherited):
        _cache_dir = _inherited
    else:
        _cache_dir = tempfile.mkdtemp(prefix="gflow-test-xla-")
        atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
        os.environ["GFLOW_TEST_XLA_DIR"] = _cache_dir
    os.environ["GFLOW_CACHE_DIR"] = _cache_dir
    from gflow._flow._cache import enable_persistent_cache  # noqa: E402

    enable_persistent_cache(_cache_dir)

TEST_SIZE = os.environ.get("GFLOW_TEST_SIZE", "small")


@pytest.fixture
def size() -> str:
    return TEST_SIZE
