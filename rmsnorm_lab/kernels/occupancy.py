"""How many programs of our kernel fit on one SM, and the register cap that lets one more fit.

Pure arithmetic (no GPU, no imports): a LaunchConfig's maxnreg caps registers where
the grid has more programs than fit at once (see ``python -m rmsnorm_lab tune --cap-twins``).
"""


def occupancy(regs: int, warps: int, smem: int = 0, *, regs_per_sm: int = 65536, max_warps: int = 64,
              max_blocks: int = 32, smem_per_sm: int = 228 * 1024, smem_reserved: int = 1024) -> int:
    """Programs (thread blocks) of ``warps`` warps that fit on one SM at ``regs`` registers a thread and
    ``smem`` bytes of shared memory each (defaults: an H100 / sm_90; registers are allocated per warp in
    units of 256, shared memory with 1 KB reserved per block)."""
    per_warp = -(-max(regs, 1) * 32 // 256) * 256
    fit = min(max_blocks, max_warps // warps, (regs_per_sm // per_warp) // warps)
    if smem:
        fit = min(fit, smem_per_sm // (smem + smem_reserved))
    return max(fit, 0)


def regs_cap_for(blocks: int, warps: int, regs_per_sm: int = 65536) -> int:
    """The largest register cap (a multiple of 8) at which ``blocks`` programs of ``warps`` warps fit."""
    return min(248, (regs_per_sm // (blocks * warps * 32)) // 8 * 8)


def grid_programs(tokens: int, rows: int, per_sm: int, sms: int) -> int:
    """Programs a launch of ``tokens`` rows runs: one per block of ``rows`` rows, at most ``per_sm`` x ``sms``
    when the config is persistent (per_sm > 0); launch() sizes its grid with it."""
    blocks = -(-tokens // rows)
    return min(blocks, per_sm * sms) if per_sm else blocks
