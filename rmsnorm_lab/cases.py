"""Shapes, presets and seeded inputs: one Case at a time."""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

from .validate import check_int_list, dtype_name

PRESET_DIR = Path(__file__).parent / "presets"

# The seed's grid (vLLM benchmark_rmsnorm.py): head_num 32/48 x head_dim 128,
# batch 1/4/16/64, seq 64..1024.
SEED_HIDDEN = [4096, 6144]
SEED_BATCH = [1, 4, 16, 64]
SEED_SEQ = [64, 128, 256, 512, 1024]


@dataclass(frozen=True)
class Case:
    """One measured point: tokens = batch * seq rows of ``hidden`` values."""
    batch: int
    seq: int
    hidden: int
    dtype: str = "bfloat16"
    residual: bool = False

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def itemsize(self) -> int:
        return {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}[self.dtype]

    @property
    def bytes_moved(self) -> int:
        return bytes_moved(self.tokens, self.hidden, self.itemsize, self.residual)

    def key(self) -> tuple:
        return (self.dtype, self.hidden, self.batch, self.seq, self.residual)

    def as_dict(self) -> dict:
        return {**asdict(self), "tokens": self.tokens}


def bytes_moved(tokens: int, hidden: int, itemsize: int, residual: bool) -> int:
    """Fewest bytes a kernel must move: read x (and r), write out (and new r), read weight."""
    per_row = (4 if residual else 2) * hidden * itemsize
    return tokens * per_row + hidden * itemsize


def make_cases(hidden, batch, seq, dtypes=("bfloat16",), residual=(False, True)) -> list[Case]:
    """The cartesian grid, in the order the sweep measures it."""
    hidden = check_int_list("hidden_size", hidden)
    batch = check_int_list("batch_size", batch)
    seq = check_int_list("seq_len", seq)
    if isinstance(dtypes, str):
        dtypes = [dtypes]
    dtypes = [dtype_name(d) for d in dtypes]
    if isinstance(residual, bool):
        residual = [residual]
    return [Case(b, s, h, d, bool(r)) for d, r, h, b, s in
            itertools.product(dtypes, residual, hidden, batch, seq)]


def tokens_to_batch_seq(tokens: int) -> tuple[int, int]:
    """Express a token count as (batch, seq) the way the seed's grid does."""
    for seq in (1024, 512, 256, 128, 64):
        if tokens % seq == 0 and tokens >= seq:
            return tokens // seq, seq
    return 1, tokens


def make_inputs(case: Case, device="cpu", seed: int = 0):
    """Random x (batch, seq, hidden), random weight (never ones), residual if the case has one."""
    import torch

    dt = getattr(torch, case.dtype)
    g = torch.Generator(device="cpu").manual_seed(seed)
    shape = (case.batch, case.seq, case.hidden)
    x = torch.randn(shape, generator=g, dtype=torch.float32).to(device=device, dtype=dt)
    w = (1.0 + 0.5 * torch.randn(case.hidden, generator=g, dtype=torch.float32)).to(device=device, dtype=dt)
    r = torch.randn(shape, generator=g, dtype=torch.float32).to(device=device, dtype=dt) if case.residual else None
    return x, w, r


def load_preset(name_or_path) -> dict:
    """Parameters of a named preset (presets/NAME.yaml) or of a YAML file."""
    import yaml

    p = Path(name_or_path)
    if not p.suffix:
        p = PRESET_DIR / f"{name_or_path}.yaml"
    if not p.exists():
        names = sorted(q.stem for q in PRESET_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"preset: {name_or_path!r} not found; known presets: {', '.join(names)}")
    return yaml.safe_load(p.read_text()) or {}
