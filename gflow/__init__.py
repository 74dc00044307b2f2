"""gflow: precise continuous-time gradient flow of neural networks.

The whole public API is re-exported here. Importing gflow turns on JAX's float64
(`jax_enable_x64`): gradient-flow trajectories are computed in double precision by
default. Set the environment variable GFLOW_X64=0 before importing to opt out.
With GFLOW_DISTRIBUTED=1 it also joins a multi-host jax.distributed job
(`init_distributed`; see docs/scaling.md).
"""

import os as _os

import jax as _jax

if _os.environ.get("GFLOW_X64", "1") != "0":
    _jax.config.update("jax_enable_x64", True)

if _os.environ.get("GFLOW_DISTRIBUTED", "0") == "1":
    # Multi-host: join the jax.distributed job before any JAX work (docs/scaling.md).
    from ._flow._sharding import init_distributed as _init_distributed

    _init_distributed()

from ._analysis._certificates import CertificateReport as CertificateReport
from ._analysis._certificates import Check as Check
from ._analysis._certificates import certify as certify
from ._analysis._decay import DecayFit as DecayFit
from ._analysis._decay import fit_decay as fit_decay
from ._analysis._features import kernel_change as kernel_change
from ._analysis._features import movement_metrics as movement_metrics
from ._analysis._features import neuron_movement as neuron_movement
from ._analysis._features import relative_movement as relative_movement
from ._analysis._hessian import hessian_lambda_max as hessian_lambda_max
from ._analysis._hessian import lambda_max_along as lambda_max_along
from ._analysis._kernel import KernelTrace as KernelTrace
from ._analysis._kernel import jacobian_gram as jacobian_gram
from ._analysis._kernel import kernel_alignment as kernel_alignment
from ._analysis._kernel import kernel_metrics as kernel_metrics
from ._analysis._kernel import tangent_kernel as tangent_kernel
from ._analysis._linearized import LinearizedFlow as LinearizedFlow
from ._analysis._linearized import linearized_flow as linearized_flow
from ._analysis._linearized import prediction_gap as prediction_gap
from ._analysis._linearized import prediction_metrics as prediction_metrics
from ._analysis._rate import RateFit as RateFit
from ._analysis._rate import find_floor as find_floor
from ._analysis._rate import fit_rate as fit_rate
from ._analysis._rate import local_rate as local_rate
from ._analysis._schur import first_layer_kernel as first_layer_kernel
from ._analysis._schur import schur_metrics as schur_metrics
from ._analysis._structured import structured_kernel as structured_kernel
from ._data._dataset import Dataset as Dataset
from ._data._dataset import from_arrays as from_arrays
from ._data._digits import load_digits as load_digits
from ._data._synthetic import make_synthetic as make_synthetic
from ._ensemble_mse import ensemble_models as ensemble_models
from ._ensemble_mse import simulate_mse_ensemble as simulate_mse_ensemble
from ._experiments._reproduce import reproduce as reproduce
from ._experiments._reproduce import reproduce_all as reproduce_all
from ._experiments._spec import EXPERIMENTS as EXPERIMENTS
from ._experiments._spec import load_spec as load_spec
from ._flow._checkpoint import Checkpoint as Checkpoint
from ._flow._controller import PIDController as PIDController
from ._flow._ensemble import EnsembleSolution as EnsembleSolution
from ._flow._ensemble import simulate_ensemble as simulate_ensemble
from ._flow._ensemble import stack_params as stack_params
from ._flow._flatten import FlatProblem as FlatProblem
from ._flow._flatten import flatten_problem as flatten_problem
from ._flow._fused import FusedTsit5 as FusedTsit5
from ._flow._implicit import matfree_implicit as matfree_implicit
from ._flow._lowstorage import LowStorageRK4 as LowStorageRK4
from ._flow._modified import modified_loss as modified_loss
from ._flow._modified import simulate_modified as simulate_modified
from ._flow._sharding import ensemble_mesh as ensemble_mesh
from ._flow._sharding import init_distributed as init_distributed
from ._flow._simulate import SOLVERS as SOLVERS
from ._flow._simulate import gradient_descent as gradient_descent
from ._flow._simulate import make_solver as make_solver
from ._flow._simulate import simulate as simulate
from ._flow._solution import Solution as Solution
from ._flow._times import default_ts as default_ts
from ._models._activations import ACTIVATIONS as ACTIVATIONS
from ._models._base import AbstractModel as AbstractModel
from ._models._base import mse_loss as mse_loss
from ._models._linear import Linear as Linear
from ._models._multilayer import MultiLayer as MultiLayer
from ._models._two_layer import TwoLayer as TwoLayer
from ._problem import descend_mse as descend_mse
from ._problem import mse_problem as mse_problem
from ._problem import simulate_mse as simulate_mse

__version__ = "0.1.0"
