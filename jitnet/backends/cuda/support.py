"""Whether the installed numpy, numba and numba-cuda can compile CUDA kernels together.

numba-cuda registers its numpy overloads when its CUDA target first loads, by looking names up on
numpy (`overload(np.row_stack)` in `numba.cuda.np.arrayobj`). A numpy that dropped one of those
names breaks every CUDA compile with an AttributeError from deep inside numba: numpy 2.5 removed
`np.row_stack` and numba-cuda 0.30.4 (the newest release) still looks it up. A numba-cuda older
than 0.30.4 fails the same way against numba 0.66 or newer. `check_cuda_packages` loads the target
up front and turns such a failure into an error that names the packages, their versions and the fix.
"""

from __future__ import annotations

import functools
from importlib import metadata

PACKAGES = ("numpy", "numba", "numba-cuda")
FIX = (
    "pip install 'jitnet[cuda]' (pip install -e '.[cuda]' in a checkout), which installs a working set "
    "(numba-cuda>=0.30.4 with numpy<2.5); or, with numba-cuda 0.30.4 and numpy 2.5 or newer, "
    "pip install 'numpy<2.5'"
)


def installed_versions() -> dict[str, str]:
    """The installed version of each of PACKAGES ('not installed' where missing), for error messages."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _load_cuda_target() -> None:
    """What the first CUDA compile does before anything else: load the CUDA target's typing and
    lowering registries, whose imports (numba.cuda.np.arrayobj, arraymath, ...) register the numpy
    overloads. Needs no GPU and no NVVM; works for numba's built-in target as well."""
    from numba.cuda.descriptor import cuda_target

    cuda_target.target_context.refresh()  # refreshes the typing context too


@functools.cache  # only success is cached: a failed check raises, and raises again next time
def check_cuda_packages() -> None:
    """Raise a RuntimeError naming numpy, numba and numba-cuda and their versions when numba's CUDA
    target cannot load with them, instead of an AttributeError at the first kernel compile. (The
    simulator never loads the target: `device("cuda")` skips this check there.)"""
    try:
        _load_cuda_target()
    except (AttributeError, ImportError) as e:
        found = ", ".join(f"{name} {version}" for name, version in installed_versions().items())
        raise RuntimeError(
            f"jitnet: numba's CUDA target does not load with the installed {found} "
            f"({type(e).__name__}: {e}). numba-cuda 0.30.4 needs numpy<2.5 (numpy 2.5 removed np.row_stack, "
            f"which it still registers) and numba-cuda before 0.30.4 does not load with numba 0.66 or newer. "
            f"Fix: {FIX}"
        ) from e
