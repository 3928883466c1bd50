"""jitnet's benchmark suite: `python -m bench` (see bench/__main__.py for the method).

bench.workloads holds the registry of workloads, bench.peers the comparison libraries,
bench.harness the timing, copy-bandwidth floor, error checks and machine facts, and bench.runner
the one workload runner, table and results files that the CPU suite (`__main__`) and the GPU
suite (bench/gpu.py) share.
"""
