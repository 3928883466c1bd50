"""The interpreter backend: the traced graph, unfused, through each op's numpy reference on the CPU.

It is the oracle the compiled backends are tested against, so it shares nothing with them below
the graph: no fusion rules (the compiler runs the whole graph through `ir.interpret`), no kernels.
"""

from jitnet.backends import Backend
from jitnet.backends.cpu.device import cpu_device

BACKEND = Backend("interpret", "cpu", cpu_device, rules=None)
