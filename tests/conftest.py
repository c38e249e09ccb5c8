# TRITON_INTERPRET must be set before anything imports triton: it lets our Triton
# kernel run on CPU tensors (a GPU CI can set TRITON_INTERPRET=0 to use real kernels).
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
