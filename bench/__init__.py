"""jitnet's benchmark suite: `python -m bench` (see bench/__main__.py for the method).

bench.workloads holds the registry of workloads, bench.peers the comparison libraries, and
bench.harness the timing, copy-bandwidth floor, error checks and machine facts.
"""
