"""The lab's own kernels (Triton). Imported only when used."""
