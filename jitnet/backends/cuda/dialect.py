"""How the CUDA kernels spell scalar code: numba.cuda device code (libdevice math)."""

from __future__ import annotations

from jitnet.backends.cuda.device import simulator
from jitnet.codegen.expr import Dialect

# On a GPU, math.* compile to libdevice and return NaN/inf like numpy; the simulator runs kernels as
# Python, where math.* raise on a domain error, so it gets numpy's functions instead.
_MATH = {name: f"math.{name}" for name in ("exp", "expm1", "log", "log1p", "tanh", "sin", "cos", "acos", "sqrt")}
if simulator():
    _MATH = {name: f"np.{'arccos' if name == 'acos' else name}" for name in _MATH}


class CudaDialect(Dialect):
    """libdevice math through math.* (numpy's functions in the simulator) and the device sigmoid
    dm.sigmoid_{t}; everything else as the base Dialect spells it."""

    funcs = _MATH | {"sigmoid": "dm.sigmoid_{t}", "abs": "abs", "erf": "math.erf"}  # numpy has no erf


DIALECT = CudaDialect()
