"""What the CPU kernels can do, as the fuser needs to know it."""

from jitnet.ir.fusion import FusionRules

RULES = FusionRules(
    epilogue_ops=frozenset({"matmul", "conv2d"}),  # their stores run a fused consumer (bias, activation)
    transposed_operands=frozenset({"matmul"}),  # reads a transposed buffer in place (a_trans, b_trans)
    split_reductions=frozenset({"sum", "max", "min"}),  # whole-array reductions split across threads...
    few_outputs=16,  # ...when they have fewer outputs than this (kernels.py)
)
