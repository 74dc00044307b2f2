"""gflow: precise continuous-time gradient flow of neural networks.

The whole public API is listed here (`_API`: name -> private module) and loaded lazily:
`import gflow` imports neither JAX nor matplotlib; the first use of a name imports its
module. What importing gflow does to global state, explicitly:

- float64: unless GFLOW_X64=0, JAX's `jax_enable_x64` is turned on (gradient-flow
  trajectories are computed in double precision by default). If JAX is already imported
  this is `jax.config.update("jax_enable_x64", True)`; otherwise the environment variable
  JAX_ENABLE_X64=1 is set, which JAX reads when it is imported (child processes inherit
  it). Set GFLOW_X64=0 before importing gflow to keep JAX's default (float32).
- GFLOW_DISTRIBUTED=1: joins a multi-host jax.distributed job at import
  (`init_distributed`; see docs/scaling.md).

Nothing else (the compile caches included) is touched at import.
"""

import importlib as _importlib
import os as _os
import sys as _sys

__version__ = "0.1.0"

if _os.environ.get("GFLOW_X64", "1") != "0":
    if "jax" in _sys.modules:
        _sys.modules["jax"].config.update("jax_enable_x64", True)
    else:
        _os.environ["JAX_ENABLE_X64"] = "1"

_API = {
    "kernel_along": "._analysis._along",
    "CertificateReport": "._analysis._certificates",
    "Check": "._analysis._certificates",
    "certify": "._analysis._certificates",
    "DecayFit": "._analysis._decay",
    "fit_decay": "._analysis._decay",
    "kernel_change": "._analysis._features",
    "movement_metrics": "._analysis._features",
    "neuron_movement": "._analysis._features",
    "relative_movement": "._analysis._features",
    "hessian_lambda_max": "._analysis._hessian",
    "lambda_max_along": "._analysis._hessian",
    "KernelTrace": "._analysis._kernel",
    "jacobian_gram": "._analysis._kernel",
    "kernel_alignment": "._analysis._kernel",
    "kernel_metrics": "._analysis._kernel",
    "tangent_kernel": "._analysis._kernel",
    "LinearizedFlow": "._analysis._linearized",
    "linearized_flow": "._analysis._linearized",
    "prediction_gap": "._analysis._linearized",
    "prediction_metrics": "._analysis._linearized",
    "RateFit": "._analysis._rate",
    "find_floor": "._analysis._rate",
    "fit_rate": "._analysis._rate",
    "local_rate": "._analysis._rate",
    "first_layer_kernel": "._analysis._schur",
    "schur_metrics": "._analysis._schur",
    "structured_kernel": "._analysis._structured",
    "Dataset": "._data._dataset",
    "from_arrays": "._data._dataset",
    "load_digits": "._data._digits",
    "make_synthetic": "._data._synthetic",
    "ensemble_models": "._ensemble_mse",
    "simulate_mse_ensemble": "._ensemble_mse",
    "reproduce": "._experiments._reproduce",
    "reproduce_all": "._experiments._reproduce",
    "EXPERIMENTS": "._experiments._spec",
    "load_spec": "._experiments._spec",
    "cache_info": "._flow._cache",
    "cache_size": "._flow._cache",
    "clear_cache": "._flow._cache",
    "enable_persistent_cache": "._flow._cache",
    "Checkpoint": "._flow._checkpoint",
    "PIDController": "._flow._controller",
    "EnsembleSolution": "._flow._ensemble",
    "simulate_ensemble": "._flow._ensemble",
    "stack_params": "._flow._ensemble",
    "FlatProblem": "._flow._flatten",
    "NO_ARGS": "._flow._flatten",
    "flatten_problem": "._flow._flatten",
    "FusedTsit5": "._flow._fused",
    "matfree_implicit": "._flow._implicit",
    "LimitPoint": "._flow._limit",
    "follow_to_limit": "._flow._limit",
    "LowStorageRK4": "._flow._lowstorage",
    "modified_loss": "._flow._modified",
    "simulate_modified": "._flow._modified",
    "load_solution": "._flow._persist",
    "Problem": "._flow._problem",
    "RosenbrockW": "._flow._rosenbrock",
    "ExpRosenbrock": "._flow._rosenbrock",
    "ensemble_mesh": "._flow._sharding",
    "init_distributed": "._flow._sharding",
    "gradient_descent": "._flow._simulate",
    "simulate": "._flow._simulate",
    "Solution": "._flow._solution",
    "AbstractMethod": "._flow._solve",
    "Flow": "._flow._solve",
    "GradientDescent": "._flow._solve",
    "ModifiedFlow": "._flow._solve",
    "solve": "._flow._solve",
    "SOLVERS": "._flow._solvers",
    "make_solver": "._flow._solvers",
    "default_ts": "._flow._times",
    "ACTIVATIONS": "._models._activations",
    "AbstractModel": "._models._base",
    "KernelFactors": "._models._base",
    "mse_loss": "._models._base",
    "Linear": "._models._linear",
    "LOSSES": "._models._losses",
    "accuracy": "._models._losses",
    "cross_entropy": "._models._losses",
    "logistic": "._models._losses",
    "one_hot": "._models._losses",
    "MultiLayer": "._models._multilayer",
    "TwoLayer": "._models._two_layer",
    "figure_title": "._plots",
    "plot_gd_vs_flow": "._plots",
    "plot_kernel": "._plots",
    "plot_loss": "._plots",
    "descend_mse": "._problem",
    "loss_problem": "._problem",
    "mse_problem": "._problem",
    "mse_residual": "._problem",
    "simulate_loss": "._problem",
    "simulate_mse": "._problem",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'gflow' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


if _os.environ.get("GFLOW_DISTRIBUTED", "0") == "1":
    # Multi-host: join the jax.distributed job before any JAX work (docs/scaling.md).
    from ._flow._sharding import init_distributed as _init_distributed

    _init_distributed()
