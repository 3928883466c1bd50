"""What the CUDA kernels can do, as the fuser needs to know it."""

from jitnet.ir.fusion import FusionRules

RULES = FusionRules(
    epilogue_ops=frozenset({"matmul", "conv2d"}),  # their stores run a fused consumer (bias, activation)
    transposed_operands=frozenset({"matmul"}),  # reads a transposed buffer in place (a_trans, b_trans)
    split_reductions=frozenset({"sum", "max", "min"}),  # long reductions split across blocks (kernels.py)
    # The fuser's "few outputs" (siblings stay out of reductions it expects to split). The kernels
    # split long reductions with up to MAX_BLOCKS / 4 outputs: a wider rule the fuser does not use yet.
    few_outputs=16,
)
