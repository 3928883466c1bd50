"""`python -m bench.matmul_cpu [--sweep | --route | --peak] [bench options]`: `python -m bench` on the
CPU matmul kernel groups of bench/matmul_kernels.py (the sizes by default)."""

import sys

from bench.__main__ import main

GROUPS = {"--sweep": "matmul_tiles", "--route": "matmul_route", "--peak": "fma_peak"}

if __name__ == "__main__":
    picked = [GROUPS[a] for a in sys.argv[1:] if a in GROUPS] or ["matmul_sizes"]
    sys.exit(main(["--only", ",".join(picked), *[a for a in sys.argv[1:] if a not in GROUPS]]))
