"""Test session setup: the Triton kernels run on CPU tensors through Triton's interpreter.

Triton chooses the interpreter when a kernel is defined, so the variable is set before any test module
imports mambamixer.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"
