"""pytest configuration shared by the unit tests and ``pytest --nbval-lax --nbval-current-env notebooks/``.

nbval runs each notebook with its own folder as the working directory and the
notebook's parameter defaults, which are the tiny CPU-friendly ``ci`` preset;
the kernels it starts inherit this process's environment.
"""
import os

# unattended run: no progress bars in the notebooks' output (rmsnorm_lab.nb.batch_mode)
os.environ.setdefault("RMSNORM_LAB_BATCH", "1")
# headless plotting for the unit tests (kernels use the inline backend regardless)
os.environ.setdefault("MPLBACKEND", "Agg")
