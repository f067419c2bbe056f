"""Test session setup: the Triton kernels run on CPU tensors through Triton's interpreter, and every test
starts from the same global random state.

Triton chooses the interpreter when a kernel is defined, so the variable is set before any test module
imports mambamixer. The suite runs in parallel workers (pytest-xdist, `-n` in pyproject.toml), which hand
out tests in a different order each run; seeding before each test keeps what a test draws from torch's
global generator independent of the tests that ran before it in its worker.
"""

import os

import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _bfloat16_as_on_the_gpu() -> None:
    """Bfloat16 in Triton's interpreter (3.8), patched for the tests. It keeps bfloat16 tensors as raw uint16
    words and its `tl.dot` multiplies those words as integers; its float32 to bfloat16 conversion rounds
    towards zero (to nearest even on the GPU), and with the round-to-nearest-even mode a carry out of the
    mantissa halves the value (7.986 becomes 4.0). Here the dot takes bfloat16 operands as float32 (exact) and
    the conversion rounds to nearest even, so kernels with bfloat16 products are tested on CPU as they run on
    the GPU."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    create_dot, create_fp_trunc = builder.create_dot, builder.create_fp_trunc

    def as_float32(h):
        if h.dtype.scalar != tl.bfloat16:
            return h
        return interpreter.TensorHandle((h.data.astype(np.uint32) << 16).view(np.float32), tl.float32)

    def dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return create_dot(self, as_float32(a), as_float32(b), d, input_precision, max_num_imprecise_acc)

    def fp_trunc(self, src, dst_type):
        if src.dtype.scalar != tl.float32 or dst_type.scalar != tl.bfloat16:
            return create_fp_trunc(self, src, dst_type)
        bits = np.asarray(src.data, dtype=np.float32).view(np.uint32).astype(np.uint64)
        return interpreter.TensorHandle(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16), tl.bfloat16)

    builder.create_dot, builder.create_fp_trunc = dot, fp_trunc


_bfloat16_as_on_the_gpu()
