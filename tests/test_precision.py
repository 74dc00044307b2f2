"""float32 vs float64: the rtol-resolution warning and the GFLOW_X64 switch."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from gflow._flow._precision import PrecisionWarning, check_rtol_resolution
from gflow._flow._simulate import prepare_flow


@pytest.mark.parametrize(
    "rtol, dtype, ok",
    [
        (1e-8, np.float32, False),  # default rtol, float32: eps = 1.19e-7
        (1e-7, np.float32, False),
        (1.2e-7, np.float32, True),
        (1e-5, np.float32, True),
        (1e-8, np.float64, True),
        (1e-16, np.float64, False),  # eps = 2.2e-16
    ],
)
def test_check_rtol_resolution(rtol, dtype, ok):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert check_rtol_resolution(rtol, dtype) is ok
    assert len(w) == (0 if ok else 1)
    if not ok:
        assert issubclass(w[0].category, PrecisionWarning)
        msg = str(w[0].message)
        assert f"rtol = {rtol:g}" in msg and np.dtype(dtype).name in msg


def test_prepare_flow_warns_on_rtol_below_float64_resolution():
    """Tests run in float64 (conftest): rtol = 1e-17 is below its eps, 1e-8 is not."""
    kw = dict(
        t0=0.0,
        ts=None,
        atol=1e-10,
        dt0=None,
        max_steps=10,
        loss_target=None,
        metrics=None,
        solver=None,
        stepsize_controller=None,
    )
    with pytest.warns(PrecisionWarning, match="float64"):
        prepare_flow(1.0, rtol=1e-17, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        prepare_flow(1.0, rtol=1e-8, **kw)


def test_gflow_x64_0_runs_float32_and_warns_on_default_rtol():
    """GFLOW_X64=0 (README): the state is float32, and the default rtol = 1e-8 warns."""
    code = (
        "import warnings, jax, gflow\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    sol = gflow.simulate(lambda p: (p['x'] - 1.0) ** 2, {'x': jax.numpy.zeros(())}, 1.0)\n"
        "print(sol.theta_final.dtype, any('below the resolution of float32' in str(x.message)"
        " for x in w))\n"
    )
    env = {**os.environ, "GFLOW_X64": "0", "JAX_ENABLE_X64": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["float32", "True"], out.stdout
