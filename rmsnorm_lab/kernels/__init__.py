"""The lab's own kernels (Triton). Imported only when used.

Plain RMSNorm forward: config.py (LaunchConfig), tables.py (launch tables), occupancy.py (programs per SM),
launch.py (the launcher and its caches), rmsnorm.py (the checked triton_rmsnorm), _rmsnorm_fwd.py (the kernel).
Training: training.py (forward and backward as torch custom ops), _rmsnorm_bwd.py (their kernels).
Variants (Gemma, QK-norm, FP8): variants.py (checked launchers), _rmsnorm_variants.py (their kernels).
"""
