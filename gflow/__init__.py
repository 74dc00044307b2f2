"""gflow: precise continuous-time gradient flow of neural networks.

The whole public API is re-exported here. Importing gflow turns on JAX's float64
(`jax_enable_x64`): gradient-flow trajectories are computed in double precision by
default. Set the environment variable GFLOW_X64=0 before importing to opt out.
"""

import os as _os

import jax as _jax

if _os.environ.get("GFLOW_X64", "1") != "0":
    _jax.config.update("jax_enable_x64", True)

from ._analysis._hessian import hessian_lambda_max as hessian_lambda_max
from ._analysis._hessian import lambda_max_along as lambda_max_along
from ._data._dataset import Dataset as Dataset
from ._data._dataset import from_arrays as from_arrays
from ._data._digits import load_digits as load_digits
from ._data._synthetic import make_synthetic as make_synthetic
from ._flow._flatten import FlatProblem as FlatProblem
from ._flow._flatten import flatten_problem as flatten_problem
from ._flow._implicit import matfree_implicit as matfree_implicit
from ._flow._modified import modified_loss as modified_loss
from ._flow._modified import simulate_modified as simulate_modified
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
