"""jitnet's benchmark suite: `python -m bench` (the method is in bench/__main__.py's docstring).

bench.registry holds the workloads (bench.elementwise, bench.kernels_nn, bench.train_steps,
bench.matmul_kernels; their types in bench.workload); bench.runner runs them on a device's suite
(bench.cpu, bench.gpu) with bench.timing and bench.report; bench.validate_cuda checks the CUDA
backend before the GPU timings.
"""
