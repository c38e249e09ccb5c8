"""How our kernel is launched: one frozen, validated LaunchConfig (no imports beyond the standard library)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

# the bit flags of the positional table entries (rows, warps, per_sm, flags, chunk[, maxnreg])
_LEGACY_FLAGS = (("evict_loads", 1), ("pdl_early", 2), ("evict_stores", 4), ("evict_last", 8),
                 ("reread", 16), ("sum_first", 32), ("late_ro", 64))


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << (max(int(n), 1) - 1).bit_length()


def _pow2(v: int) -> bool:
    return v >= 1 and not v & (v - 1)


@dataclass(frozen=True, order=True)
class LaunchConfig:
    """One launch of our kernel.

    rows: rows per program block (a power of two); warps: num_warps (a power of two);
    per_sm: persistent programs per SM (0: one program per row block); chunk: 0 = one pass over the
    row held in registers, else a power of two >= 16: two passes over chunk-wide slices;
    reread: two passes over the whole row (chunk 0 only, not with evict_last);
    hold: with chunk-wide slices (chunk < the row), 0: pass 2 reads each slice back just before storing it;
    1: pass 2 reads every slice of the row before its first store; 2: one pass, the slices held from the
    first read (no second read);
    sum_first: two passes with a residual, pass 1 stores x + r and pass 2 reads it back;
    late_ro: one pass with a residual, x + r stored after the sum of squares;
    evict_loads / evict_last: x and r loads marked evict-first / evict-last in L2 (not both);
    evict_stores: stores marked evict-first; pdl_early: the next kernel may launch at our start;
    maxnreg: register cap (0: the compiler's choice, else a multiple of 8 in 24..248);
    pdl: use programmatic dependent launch where the GPU has it; lean: no grid-stride loop where each block
    has a program, int32 offsets where they cannot overflow, rsqrt (False: a grid-stride loop, 64-bit offsets
    and a division by a square root in every launch).
    """
    rows: int = 1
    warps: int = 4
    per_sm: int = 0
    chunk: int = 0
    reread: bool = False
    hold: int = 0
    sum_first: bool = False
    late_ro: bool = False
    evict_loads: bool = False
    evict_last: bool = False
    evict_stores: bool = False
    pdl_early: bool = False
    maxnreg: int = 0
    pdl: bool = True
    lean: bool = True

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            want = bool if f.type in ("bool", bool) else int
            if want is int and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"LaunchConfig.{f.name}: expected an int, got {v!r}")
            if want is bool and not isinstance(v, bool):
                raise ValueError(f"LaunchConfig.{f.name}: expected a bool, got {v!r}")
        if not _pow2(self.rows):
            raise ValueError(f"LaunchConfig.rows: expected a power of two >= 1, got {self.rows}")
        if not _pow2(self.warps) or self.warps > 32:
            raise ValueError(f"LaunchConfig.warps: expected a power of two in 1..32, got {self.warps}")
        if self.per_sm < 0:
            raise ValueError(f"LaunchConfig.per_sm: expected >= 0, got {self.per_sm}")
        if self.chunk and (self.chunk < 16 or not _pow2(self.chunk)) or self.chunk < 0:
            raise ValueError(f"LaunchConfig.chunk: expected 0 or a power of two >= 16, got {self.chunk}")
        if self.maxnreg and not (24 <= self.maxnreg <= 248 and self.maxnreg % 8 == 0):
            raise ValueError(f"LaunchConfig.maxnreg: expected 0 or a multiple of 8 in 24..248, got {self.maxnreg}")
        if self.evict_loads and self.evict_last:
            raise ValueError("LaunchConfig.evict_last: not with evict_loads (one eviction policy per load)")
        if self.hold not in (0, 1, 2) or self.hold and not self.chunk:
            raise ValueError(f"LaunchConfig.hold: expected 0, or 1 / 2 with chunk > 0, got {self.hold}")
        if self.reread and (self.chunk or self.evict_last):
            raise ValueError("LaunchConfig.reread: only with chunk 0 and without evict_last")
        if self.sum_first and not self.two_pass:
            raise ValueError("LaunchConfig.sum_first: only with two passes (chunk > 0 or reread)")
        if self.late_ro and self.two_pass:
            raise ValueError("LaunchConfig.late_ro: only with one pass (chunk 0 without reread)")

    @property
    def two_pass(self) -> bool:
        return bool(self.chunk or self.reread)

    def replace(self, **changes) -> "LaunchConfig":
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)

    def to_dict(self, compact: bool = False) -> dict:
        """Every field by name; compact: only the fields that differ from the defaults (as tables store them)."""
        d = asdict(self)
        if compact:
            d = {k: v for k, v in d.items() if v != _DEFAULTS[k]}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LaunchConfig":
        """From named fields (missing ones take their defaults); an unknown name is a ValueError."""
        if isinstance(d, LaunchConfig):
            return d
        if not isinstance(d, dict):
            raise ValueError(f"LaunchConfig: expected a dict of named fields, got {d!r}")
        unknown = set(d) - set(_DEFAULTS)
        if unknown:
            raise ValueError(f"LaunchConfig: unknown field(s) {sorted(unknown)}; known: {sorted(_DEFAULTS)}")
        return cls(**d)

    @classmethod
    def from_legacy(cls, cfg) -> "LaunchConfig":
        """From a positional entry (rows, warps, per_sm[, flags[, chunk[, maxnreg]]]) with bit flags
        (1 evict_loads, 2 pdl_early, 4 evict_stores, 8 evict_last, 16 reread, 32 sum_first, 64 late_ro)."""
        try:
            vals = tuple(int(v) for v in cfg)
        except (TypeError, ValueError):
            raise ValueError(f"LaunchConfig: expected (rows, warps, per_sm[, flags[, chunk[, maxnreg]]]), "
                             f"got {cfg!r}") from None
        if not 3 <= len(vals) <= 6:
            raise ValueError(f"LaunchConfig: expected (rows, warps, per_sm[, flags[, chunk[, maxnreg]]]), got {vals}")
        rows, warps, per_sm, flags, chunk, maxnreg = vals + (0,) * (6 - len(vals))
        if not 0 <= flags < 128:
            raise ValueError(f"LaunchConfig: legacy flags must be in 0..127, got {flags}")
        return cls(rows=rows, warps=warps, per_sm=per_sm, chunk=chunk, maxnreg=maxnreg,
                   **{name: bool(flags & bit) for name, bit in _LEGACY_FLAGS})

    def legacy(self) -> tuple:
        """The positional form (rows, warps, per_sm, flags, chunk[, maxnreg]) (pdl, lean and hold are not in it)."""
        flags = sum(bit for name, bit in _LEGACY_FLAGS if getattr(self, name))
        t = (self.rows, self.warps, self.per_sm, flags, self.chunk)
        return t + (self.maxnreg,) if self.maxnreg else t

    def __str__(self) -> str:
        return "LaunchConfig(" + ", ".join(f"{k}={v}" for k, v in self.to_dict(compact=True).items()) + ")"


_DEFAULTS = {f.name: f.default for f in fields(LaunchConfig)}


def as_config(config) -> LaunchConfig:
    """A LaunchConfig from a LaunchConfig, a dict of named fields, or a positional tuple."""
    if isinstance(config, LaunchConfig):
        return config
    if isinstance(config, dict):
        return LaunchConfig.from_dict(config)
    return LaunchConfig.from_legacy(config)
