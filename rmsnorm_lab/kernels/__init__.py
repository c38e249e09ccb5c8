"""The lab's own kernel (Triton): config.py (LaunchConfig), tables.py (launch tables), launch.py (the
launcher and its caches), rmsnorm.py (the checked triton_rmsnorm), _rmsnorm_fwd.py (the kernel). Imported
only when used."""
