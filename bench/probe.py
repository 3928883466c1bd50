"""`python -m bench.probe DEVICE WORKLOAD IMPL [--quick]`: build one implementation and call it twice.
The runner starts it as a child process under a time limit before it builds an implementation
whose cold compile may take long (torch.compile)."""

from __future__ import annotations

import sys

from bench import registry


def main(argv: list[str]) -> int:
    device, workload, impl_name = argv[:3]
    if device == "cuda":
        from bench.gpu import GpuSuite as Suite
    else:
        from bench.cpu import CpuSuite as Suite
    suite, w = Suite(), registry.lookup(device, workload)
    impl = w.impl(impl_name)
    if suite.unavailable(impl.requires):  # also sets the peer's threads
        raise SystemExit(suite.unavailable(impl.requires))
    fn = impl.make(suite.convert(w.make_inputs("--quick" in argv), impl.requires))
    fn()
    fn()
    if suite.sync(impl.requires):
        suite.sync(impl.requires)()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
