"""`python -m bench.kernels_nn_gpu [bench options]`: `python -m bench --device cuda` on the engine's
GPU matmul and conv workloads."""

import sys

from bench.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["--device", "cuda", "--only", "matmul,matmul_bias_relu,conv_lenet,conv_lenet_bwd", *sys.argv[1:]]))
