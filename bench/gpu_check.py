"""`python -m bench.gpu_check [--quick] [--validate-only]` or `python bench/gpu_check.py ...`: the
same as `python -m bench --device cuda ...` (validate the CUDA backend, then time the GPU workloads)."""

import os
import sys

if __package__ in (None, ""):  # run as a script: the checkout, not bench/, first on the path
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from bench.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["--device", "cuda", *sys.argv[1:]]))
